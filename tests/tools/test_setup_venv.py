"""`make setup` chooses its Python as documented (tools/setup_venv.sh), tried with fake
interpreters on PATH: pyenv's pinned version first, then a python3.10, and with neither,
uv's managed Python (uv from any python3, or uv's standalone installer without one).

The commands are printed (SETUP_DRY_RUN=1), not run: the managed-Python download needs the
internet, which the project's machines do not reach.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from pipeline.configs import REPO_ROOT

SCRIPT = os.path.join(REPO_ROOT, "tools", "setup_venv.sh")
with open(os.path.join(REPO_ROOT, ".python-version")) as _pin:
    VERSION = _pin.read().strip()


def _fake(bin_dir, name: str, body: str = "exit 0") -> str:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def _setup(tmp_path, fakes: dict[str, str]) -> list[str]:
    """Runs the script in a copy of the project's pin with only `fakes` (and the shell's
    basic tools) on PATH; returns the commands it would run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("cat", "sh", "env", "dirname"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    for name, body in fakes.items():
        _fake(bin_dir, name, body)
    work = tmp_path / "project"
    work.mkdir()
    shutil.copy(os.path.join(REPO_ROOT, ".python-version"), work)
    result = subprocess.run(
        [shutil.which("bash"), SCRIPT],
        cwd=work,
        env={"PATH": str(bin_dir), "SETUP_DRY_RUN": "1", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [line[2:] for line in result.stderr.splitlines() if line[:2] == "+ "]


def test_pyenvs_pinned_python_comes_first(tmp_path):
    prefix = tmp_path / "pyenv" / VERSION
    (prefix / "bin").mkdir(parents=True)
    python = _fake(prefix / "bin", "python3.10")
    commands = _setup(
        tmp_path, {"pyenv": f"echo {prefix}", "python3.10": "exit 0", "python3": "exit 0"}
    )
    assert commands == [f"{python} -m uv sync --frozen --compile-bytecode --python {python}"]


def test_a_python310_on_path_is_used_without_pyenv(tmp_path):
    # This fake python3.10 has no uv module: pip installs it first.
    commands = _setup(tmp_path, {"python3.10": 'case "$*" in *"uv --version"*) exit 1;; esac'})
    python = str(tmp_path / "bin" / "python3.10")
    assert commands == [
        f"{python} -m pip install -q uv==0.13.9",
        f"{python} -m uv sync --frozen --compile-bytecode --python {python}",
    ]


def test_without_python310_uv_from_python3_installs_its_own(tmp_path):
    commands = _setup(tmp_path, {"python3": "exit 0", "pyenv": "exit 1"})
    assert commands == [
        "python3 -m venv .uv",
        ".uv/bin/python -m pip install -q uv==0.13.9",
        f".uv/bin/uv python install {VERSION}",
        f".uv/bin/uv sync --frozen --compile-bytecode --python {VERSION} --managed-python",
    ]


def test_an_installed_uv_is_used_as_it_is(tmp_path):
    commands = _setup(tmp_path, {"uv": "exit 0", "python3": "exit 0"})
    uv = str(tmp_path / "bin" / "uv")
    assert commands == [
        f"{uv} python install {VERSION}",
        f"{uv} sync --frozen --compile-bytecode --python {VERSION} --managed-python",
    ]


def test_without_any_python_uvs_standalone_installer(tmp_path):
    commands = _setup(tmp_path, {"curl": "exit 0"})
    assert "astral.sh/uv/0.13.9/install.sh" in commands[0]
    assert commands[1:] == [
        f".uv/bin/uv python install {VERSION}",
        f".uv/bin/uv sync --frozen --compile-bytecode --python {VERSION} --managed-python",
    ]
