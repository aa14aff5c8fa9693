"""Crash injection for the crash-and-re-run tests: a named point that kills the process.

`crash_point("Trainer:feature_pass")` does nothing unless the environment variable CRASH_AT
names that point, in which case it kills the pipeline process with SIGKILL on the spot (no
cleanup, no exception handler, no atexit: what a power cut or the OOM killer does). The tests
in tests/pipeline/test_crash_rerun.py set it, one point per run, on one OUTPUT, and check that
each re-run finishes, reuses what was complete and never reads a torn file. Production code
calls crash_point at the moments where a kill would hurt most (a stage's output written but not
yet published); with CRASH_AT unset it is one dictionary lookup.

This module is the lowest layer (models/) so that every executor and module file can call it.
Standard TFX components (StatisticsGen, Transform, ...) get their point from the test's
launcher hook (tests/pipeline/crash_hook/sitecustomize.py), keyed on the component id.
"""

from __future__ import annotations

import os
import signal
import sys

CRASH_AT_ENV = "CRASH_AT"


def crash_point(name: str) -> None:
    """SIGKILL this process if CRASH_AT names this point; a no-op otherwise."""
    if os.environ.get(CRASH_AT_ENV) != name:
        return
    print(f"CRASH_AT={name}: killing process {os.getpid()} with SIGKILL", file=sys.stderr)
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
