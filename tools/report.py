"""`make report RUN=<pipeline run id>`: rebuild a past run's evaluation report into
OUTPUT/report from ML Metadata; no RUN = the latest run.

Every input of the EvaluationReport component is recorded in ML Metadata with the run (its
input artifacts and parameters, also for a cached execution), so any run that had the
component can be rebuilt as it was, with today's report code.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import argparse  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

from components.evaluation_report import build, component  # noqa: E402
from models import ingest_report  # noqa: E402
from pipeline.configs import PipelineConfig  # noqa: E402
from pipeline.metadata import RunNotFound, latest_run, node_inputs, open_store, run_context  # noqa: E402
from pipeline.summary import publish  # noqa: E402

REPORT_NODE = "EvaluationReport"


def rebuild(
    metadata_path: str, pipeline_name: str, run_id: str, output_dir: str, model_name: str
) -> dict:
    """Build run_id's report and model card into output_dir (published atomically)."""
    if not os.path.isfile(metadata_path):
        raise RunNotFound(f"no ML Metadata at {metadata_path}")
    store = open_store(metadata_path)
    execution, artifacts = node_inputs(
        store, run_context(store, pipeline_name, run_id), REPORT_NODE
    )
    properties = execution.custom_properties
    inputs = build.ReportInputs(
        pipeline_run=run_id,
        evaluation_uri=artifacts["evaluation"].uri,
        model_uri=artifacts["model"].uri,
        examples_uri=artifacts["examples"].uri,
        eval_split=properties["eval_split"].string_value or "eval",
        anomalies_uri=artifacts["anomalies"].uri if "anomalies" in artifacts else None,
        ingest_report=ingest_report.read_report(artifacts["examples"].uri) or {},
        # Inputs of the report when TFLITE_EXPORT / INFRA_VALIDATION had those steps run.
        tflite_evaluation_uri=(
            artifacts["tflite_evaluation"].uri if "tflite_evaluation" in artifacts else None
        ),
        infra_blessing=artifacts.get("infra_blessing"),
    )
    staging = tempfile.mkdtemp(prefix=".report-", dir=os.path.dirname(os.path.abspath(output_dir)))
    try:
        data = component.write_all(inputs, model_name, artifacts.get("statistics"), staging)
        publish(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", default="", help="pipeline run id (default: the latest run)")
    args = parser.parse_args(argv)
    config = PipelineConfig.from_env()
    run_id = args.run
    if not run_id:
        if not os.path.isfile(config.metadata_path):
            print(f"ERROR: no ML Metadata at {config.metadata_path}", file=sys.stderr)
            return 2
        latest = latest_run(open_store(config.metadata_path), config.pipeline_name)
        if latest is None:
            print(f"ERROR: no run of {config.pipeline_name} yet", file=sys.stderr)
            return 2
        run_id = latest.name
    try:
        data = rebuild(
            config.metadata_path, config.pipeline_name, run_id, config.report_dir, config.model_name
        )
    except RunNotFound as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    verdict = "blessed" if data["blessing"]["blessed"] else "NOT blessed"
    print(f"Run {run_id} ({verdict}): {os.path.join(config.report_dir, 'index.html')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
