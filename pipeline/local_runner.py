"""Run the pipeline locally with TFX's BeamDagRunner and SQLite ML Metadata.

`make run` runs this file, and it is the pipeline file for the `tfx` CLI:
    tfx pipeline create --engine=beam --pipeline_path=pipeline/local_runner.py
    tfx run create --engine=beam --pipeline_name=image-transfer
Knobs come from environment variables (pipeline/configs.py).
"""

import os

# Keras 2 (tf_keras) must be chosen before anything imports TensorFlow.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import atexit  # noqa: E402
import logging as std_logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import NoReturn  # noqa: E402

from absl import logging  # noqa: E402
from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner  # noqa: E402

from components.anomaly_gate.executor import AnomaliesFound  # noqa: E402
from components.image_example_gen.ingest import IngestError  # noqa: E402
from components.pusher.executor import PushError  # noqa: E402
from models.weights import WeightsError  # noqa: E402
from pipeline.configs import PipelineConfig  # noqa: E402
from pipeline.image_pipeline import create_pipeline  # noqa: E402
from pipeline.inputs import prepare_inputs  # noqa: E402
from pipeline.summary import report_run  # noqa: E402


def _log_progress_only(record) -> bool:
    """Console shows warnings and "node X is running/finished"; TFX's INFO logs dump
    whole protos. VERBOSE=1 shows everything."""
    message = str(record.msg)
    return record.levelno >= std_logging.WARNING or (
        message.startswith("node ") and message.endswith(("is running.", "is finished."))
    )


# The user's data (or disk), not a crash: reported once as a message (exit code 2).
_DATA_ERRORS = (IngestError, AnomaliesFound, PushError)


def _not_a_data_error(record) -> bool:
    """Beam logs a failing step's exception with its traceback; unusable photos and
    anomalies the gate blocks on are reported by main() instead."""
    return not (record.exc_info and isinstance(record.exc_info[1], _DATA_ERRORS))


def _data_error_message(exc: Exception) -> str | None:
    """The message of an IngestError (ImageExampleGen), AnomaliesFound (AnomalyGate) or
    PushError (a full serving disk), or None. Beam re-raises a component's error with
    " [while running ...]" appended (as its own type when it can, else naming the type in
    the text)."""
    text = str(exc)
    prefixes = [f"{error.__name__}: " for error in _DATA_ERRORS if f"{error.__name__}: " in text]
    if not isinstance(exc, _DATA_ERRORS) and not prefixes:
        return None
    for prefix in prefixes:
        text = text.split(prefix, 1)[-1]
    return text.split(" [while running")[0]


def main() -> int:
    logging.set_verbosity(logging.INFO)
    if os.environ.get("VERBOSE", "") in ("", "0"):
        # On the logger itself: Beam's import installs a root handler that prints
        # absl's records too, and more handlers may come later.
        logging.get_absl_logger().addFilter(_log_progress_only)
    std_logging.getLogger("apache_beam.runners.common").addFilter(_not_a_data_error)
    started_at = time.time()
    try:
        config = PipelineConfig.from_env()
        inputs = prepare_inputs(config)
        config = inputs.config  # the backbone may be the demo's pretrained substitute
        pipeline = create_pipeline(config, inputs.images_dir, inputs.weights_record)
    except (IngestError, WeightsError, ValueError) as exc:
        print(f"\nERROR: {exc}", file=sys.stderr)
        return 2
    try:
        BeamDagRunner().run(pipeline)
    except Exception as exc:
        message = _data_error_message(exc)
        if message is None:
            raise
        print(f"\nERROR: {message}", file=sys.stderr)
        return 2
    return report_run(config, inputs, started_at)


def exit_without_teardown(code: int) -> NoReturn:
    """Exit once the run's output is written, skipping the interpreter's teardown.

    Finalising the modules of TensorFlow, Beam and TFMA took ~2.1 s per run, against
    0.07 s for os._exit, and does nothing for the run: ML Metadata commits each write,
    artifacts and the summary are written by now. The exit handlers still run (logging
    flushes, temporary directories of weakref finalizers are removed)."""
    atexit._run_exitfuncs()  # what CPython itself calls at shutdown (a private name)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_code = main()
    # `tfx pipeline create` executes this file inside the CLI's own process, which carries
    # on after it: only a process of its own may leave this way.
    if sys.modules["__main__"].__dict__ is globals():
        exit_without_teardown(exit_code)
    sys.exit(exit_code)
