"""Launcher-level crash points for the standard TFX components (test-only).

Put on PYTHONPATH by tests/pipeline/test_crash_rerun.py: every pipeline process it starts
imports this at start-up. It wraps TFX's Launcher._run_executor so that, after a component's
executor has written its outputs and before the launcher publishes the execution to ML
Metadata, crash_point(<component id>) runs: CRASH_AT=StatisticsGen kills the process with
StatisticsGen's statistics on disk but its execution unpublished, the moment where a re-run
could most easily mistake finished-looking files for finished work. Production code is not
touched: the project's own components call crash_point themselves, inside their work.
"""

from __future__ import annotations

import os

if os.environ.get("CRASH_AT"):
    from tfx.orchestration.portable import launcher

    from models.crash_points import crash_point

    _run_executor = launcher.Launcher._run_executor

    def _run_executor_then_crash_point(self, execution_info):
        output = _run_executor(self, execution_info)
        crash_point(self._pipeline_node.node_info.id)
        return output

    launcher.Launcher._run_executor = _run_executor_then_crash_point
