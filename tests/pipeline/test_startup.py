"""What a local run's process pays before its first component: no Vertex AI SDK, no
compiling of installed libraries.

`from tfx import v1` imports TFX's Google Cloud extensions and with them
google.cloud.aiplatform: about 10 s of every `make run` before the first component, in the
runner process, for nothing a local run uses.

`make setup` writes the installed libraries' bytecode (uv sync --compile-bytecode). Without
it, a shell with PYTHONDONTWRITEBYTECODE=1 compiles TF, Beam, TFX and TFMA from source at
every start (10.5-11.9 s to import them instead of 6.0-7.9 s).

Every module that a local run loads (the runner, the component modules, the TFX executors it
runs) is imported once, in a fresh interpreter that may not write bytecode.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline.configs import REPO_ROOT

LOCAL_RUN_MODULES = [
    "pipeline.local_runner",
    "models.preprocessing",
    "models.trainer",
    "models.tuner",
    "models.evaluator",
    "components.evaluation_report.component",
    "tfx.components.statistics_gen.executor",
    "tfx.components.example_validator.executor",
    "tfx.components.transform.executor",
    "tfx.components.tuner.executor",
    "tfx.components.trainer.executor",
    "tfx.components.evaluator.executor",
    "tfx.components.pusher.executor",
]


# Counts the installed modules that the import compiles from source, then imports.
IMPORT_LOCAL_RUN = f"""
import importlib, importlib.machinery, json, sys, sysconfig
installed = sysconfig.get_paths()["purelib"]
compiled = []
source_to_code = importlib.machinery.SourceFileLoader.source_to_code

def counting_source_to_code(self, data, path, *args, **kwargs):
    if str(path).startswith(installed):
        compiled.append(str(path))
    return source_to_code(self, data, path, *args, **kwargs)

importlib.machinery.SourceFileLoader.source_to_code = counting_source_to_code
for name in {LOCAL_RUN_MODULES!r}:
    importlib.import_module(name)
print(json.dumps({{
    "aiplatform": sorted(m for m in sys.modules if m.startswith("google.cloud.aiplatform")),
    "compiled": compiled,
}}))
"""


@pytest.fixture(scope="module")
def local_run_imports() -> dict:
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_LOCAL_RUN],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_local_run_does_not_import_the_vertex_ai_sdk(local_run_imports):
    assert local_run_imports["aiplatform"] == []


def test_a_local_run_compiles_no_installed_library(local_run_imports):
    compiled = local_run_imports["compiled"]
    assert compiled == [], (
        f"{len(compiled)} installed modules were compiled from source at import, e.g. "
        f"{compiled[:3]}: the venv lacks their bytecode (make setup runs uv sync "
        "--compile-bytecode)"
    )
