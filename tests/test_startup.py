"""A local run does not import Vertex AI's SDK.

`from tfx import v1` imports TFX's Google Cloud extensions and with them
google.cloud.aiplatform: about 10 s of every `make run` before the first component, in the
runner process, for nothing a local run uses. Every module that a local run loads (the runner,
the component modules, the TFX executors it runs) is imported in a fresh interpreter here.
"""

from __future__ import annotations

import os
import subprocess
import sys

from pipeline.configs import REPO_ROOT

LOCAL_RUN_MODULES = [
    "pipeline.local_runner",
    "components.modules.preprocessing",
    "components.modules.trainer",
    "components.modules.tuner",
    "components.modules.evaluator",
    "components.report.component",
    "tfx.components.statistics_gen.executor",
    "tfx.components.example_validator.executor",
    "tfx.components.transform.executor",
    "tfx.components.tuner.executor",
    "tfx.components.trainer.executor",
    "tfx.components.evaluator.executor",
    "tfx.components.pusher.executor",
]


def test_a_local_run_does_not_import_the_vertex_ai_sdk():
    code = (
        "import importlib, sys\n"
        f"for name in {LOCAL_RUN_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('google.cloud.aiplatform')))\n"
    )
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
