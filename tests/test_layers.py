"""The layer contracts of `make lint` (import-linter, pyproject.toml) hold on the tree and
fail on an import planted against the flow, so CI stops such an import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from pipeline.configs import REPO_ROOT

PACKAGES = ("pipeline", "components", "models", "serving", "tools", "bench", "tests")
LINT_IMPORTS = os.path.join(os.path.dirname(sys.executable), "lint-imports")


def _copy_tree(destination) -> None:
    for package in PACKAGES:
        shutil.copytree(
            os.path.join(REPO_ROOT, package),
            destination / package,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    shutil.copy(os.path.join(REPO_ROOT, "pyproject.toml"), destination)


def _lint(root) -> subprocess.CompletedProcess:
    # The copy first on the path: grimp analyses the packages that this path imports.
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [LINT_IMPORTS], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "planted, broken",
    [
        (("models", "planted.py", "import pipeline.configs\n"), "Layers"),
        (("components", "planted.py", "from tools import samples\n"), "Layers"),
        (("serving", "planted.py", "import models.features\n"), "The server imports none"),
        (("pipeline", "planted.py", "import tests.conftest\n"), "Production code never"),
    ],
)
def test_an_import_against_the_flow_breaks_a_contract(tmp_path, planted, broken):
    _copy_tree(tmp_path)
    clean = _lint(tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    package, name, code = planted
    (tmp_path / package / name).write_text(code)
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout
    assert f"{package}.planted" in result.stdout
