"""Run the pipeline locally with TFX's BeamDagRunner and SQLite ML Metadata.

`make run` runs this file, and it is the pipeline file for the `tfx` CLI:
    tfx pipeline create --engine=beam --pipeline_path=pipeline/local_runner.py
    tfx run create --engine=beam --pipeline_name=image-transfer
Knobs come from environment variables (pipeline/configs.py).
"""

import os

# Keras 2 (tf_keras) must be chosen before anything imports TensorFlow.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import logging as std_logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from absl import logging  # noqa: E402
from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner  # noqa: E402

from components.ingest import IngestError  # noqa: E402
from components.modules.weights import WeightsError  # noqa: E402
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


def _not_an_ingest_error(record) -> bool:
    """Beam logs a failing step's exception with its traceback; an IngestError is the
    user's data, reported once as a message (exit code 2), not as a crash."""
    return not (record.exc_info and isinstance(record.exc_info[1], IngestError))


def main() -> int:
    logging.set_verbosity(logging.INFO)
    if os.environ.get("VERBOSE", "") in ("", "0"):
        # On the logger itself: Beam's import installs a root handler that prints
        # absl's records too, and more handlers may come later.
        logging.get_absl_logger().addFilter(_log_progress_only)
    std_logging.getLogger("apache_beam.runners.common").addFilter(_not_an_ingest_error)
    started_at = time.time()
    try:
        config = PipelineConfig.from_env()
        inputs = prepare_inputs(config)
    except (IngestError, WeightsError, ValueError) as exc:
        print(f"\nERROR: {exc}", file=sys.stderr)
        return 2
    try:
        BeamDagRunner().run(create_pipeline(config, inputs.images_dir, inputs.weights_record))
    except Exception as exc:
        # Unusable photos found by ImageExampleGen's workers. Beam re-raises a component's
        # error with " [while running ...]" appended (as its own type when it can).
        if not isinstance(exc, IngestError) and f"{IngestError.__name__}: " not in str(exc):
            raise
        message = str(exc).split(f"{IngestError.__name__}: ", 1)[-1].split(" [while running")[0]
        print(f"\nERROR: {message}", file=sys.stderr)
        return 2
    return report_run(config, inputs, started_at)


if __name__ == "__main__":
    sys.exit(main())
