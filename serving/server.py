"""`python -m serving.server`: serve every model under a directory with TF Serving's REST API.

The command line of `make serve`. It wires the parts together (model registry, runner,
metrics, ASGI app) and runs them on uvicorn. Models are loaded before the port opens, as TF
Serving does, so once the port answers the models found at startup are AVAILABLE (or
reported as failed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence

import uvicorn
from starlette.applications import Starlette

from serving import app, batching, metrics, models, runner

log = logging.getLogger("serving.server")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m serving.server",
        description="Serve SavedModels under a directory with TensorFlow Serving's REST API.",
    )
    parser.add_argument(
        "--model-base-path",
        required=True,
        help="directory of models (<dir>/<model>/<version>/saved_model.pb, e.g. OUTPUT/serving) "
        "or, as TF Serving's --model_base_path, one model's directory of versions",
    )
    parser.add_argument(
        "--model-name",
        action="append",
        default=[],
        help="serve only this model (repeatable); names the model when the base path is one "
        "model's directory (default: its basename)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument(
        "--poll-seconds",
        type=float,
        default=1.0,
        help="how often to look for new versions (TF Serving's --file_system_poll_wait_seconds)",
    )
    parser.add_argument(
        "--num-versions",
        type=int,
        default=1,
        help="keep the latest N versions of each model loaded (default 1: the latest)",
    )
    parser.add_argument(
        "--version-labels",
        action="append",
        default=[],
        metavar="MODEL:LABEL=VERSION",
        help="version label for /labels/<label> URLs (repeatable), e.g. "
        "image_classifier:stable=1700000000",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=app.Limits.max_body_bytes,
        help="larger request bodies are refused with 413 (default %(default)s)",
    )
    parser.add_argument(
        "--max-instances",
        type=int,
        default=app.Limits.max_instances,
        help="more instances/examples in one request are refused with 400 (default %(default)s)",
    )
    parser.add_argument(
        "--num-threads",
        type=int,
        default=os.cpu_count() or 2,
        help="model calls running at once (default: CPU count, %(default)s)",
    )
    parser.add_argument(
        "--enable-batching",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="merge concurrent requests into one model call (default on; see README)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=batching.BatchingOptions.max_batch_size,
        help="instances in one merged call (default %(default)s)",
    )
    parser.add_argument(
        "--batch-timeout-micros",
        type=int,
        default=0,
        help="how long a batch may wait to fill once a model thread is free (default 0: "
        "batches form only from requests that queued while the threads were busy)",
    )
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    try:
        args.labels = models.parse_version_labels(args.version_labels)
    except ValueError as exc:
        parser.error(f"--version-labels: {exc}")
    return args


def build_app(args: argparse.Namespace) -> Starlette:
    """The ASGI app for these arguments; loading starts in its lifespan."""
    from serving.savedmodel import Servable  # imports TensorFlow

    registry = models.ModelRegistry(
        args.model_base_path,
        loader=Servable,
        model_names=args.model_name,
        num_versions=args.num_versions,
        version_labels=args.labels,
    )
    server_metrics = metrics.Metrics(registry)
    batching_options = None
    if args.enable_batching:
        batching_options = batching.BatchingOptions(
            max_batch_size=args.max_batch_size,
            batch_timeout_seconds=args.batch_timeout_micros / 1e6,
        )
    model_runner = runner.Runner(
        args.num_threads, batching_options, server_metrics.batch_observer()
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette):
        if not os.path.isdir(registry.base_path):
            log.warning("%s does not exist yet; polling for models", registry.base_path)
        # Two scans: a version loads once its directory looks the same twice (see models.py).
        await asyncio.to_thread(registry.poll)
        await asyncio.to_thread(registry.poll)
        for name in registry.known_models():
            states = [f"{s.version}:{s.state.value}" for s in _statuses(registry, name)]
            log.info("Model %s versions %s", name, ", ".join(states) or "none")
        registry.start(args.poll_seconds)
        try:
            yield
        finally:
            registry.stop()
            model_runner.close()

    return app.create_app(
        registry,
        model_runner,
        server_metrics,
        app.Limits(args.max_body_bytes, args.max_instances),
        lifespan=lifespan,
    )


def _statuses(registry: models.ModelRegistry, name: str) -> list[models.VersionStatus]:
    try:
        return registry.status(name)
    except Exception:
        return []


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        build_app(args),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=args.access_log,
        lifespan="on",
    )


if __name__ == "__main__":
    sys.exit(main())
