"""`make report RUN=<pipeline run id>`: rebuild a past run's evaluation report into
OUTPUT/report from ML Metadata (components/report/rebuild.py); no RUN = the latest run."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402

from components.report.rebuild import RunNotFound, rebuild  # noqa: E402
from pipeline.configs import PipelineConfig  # noqa: E402
from pipeline.summary import _store, latest_run  # noqa: E402


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
        latest = latest_run(_store(config), config.pipeline_name)
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
