"""`python -m serving.server`: serve SavedModels with TF Serving's REST and gRPC APIs.

The command line of `make serve`. It wires the parts together (model registry, runner,
metrics, ASGI app, gRPC services) and runs them on uvicorn's event loop, the gRPC server
beside the REST one. Models are loaded before the ports open, as TF Serving does, so once
they answer, the models found at startup are AVAILABLE (or reported as failed). The models
come from a directory (--model-base-path) or from TF Serving's --model_config_file.
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

from serving import app, batching, config, confine, errors, metrics, models, runner

log = logging.getLogger("serving.server")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m serving.server",
        description="Serve SavedModels under a directory with TensorFlow Serving's REST API.",
    )
    parser.add_argument(
        "--model-base-path",
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
    parser.add_argument(
        "--model-config-file",
        "--model_config_file",
        help="TF Serving's ModelServerConfig text file (models, version policies, labels); "
        "replaces --model-base-path",
    )
    parser.add_argument(
        "--model-config-file-poll-wait-seconds",
        "--model_config_file_poll_wait_seconds",
        type=float,
        default=0,
        help="re-read the model config file this often (default 0: never, as TF Serving)",
    )
    parser.add_argument(
        "--allow-version-labels-for-unavailable-models",
        "--allow_version_labels_for_unavailable_models",
        action="store_true",
        help="let a config's labels name versions that are not AVAILABLE yet",
    )
    parser.add_argument(
        "--monitoring-config-file",
        "--monitoring_config_file",
        help="TF Serving's MonitoringConfig text file (Prometheus on/off and its path)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default loopback: 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=8501, help="REST port (default 8501)")
    parser.add_argument(
        "--grpc-port", type=int, default=8500, help="gRPC port (default 8500; 0: no gRPC)"
    )
    parser.add_argument(
        "--enable-model-warmup",
        "--enable_model_warmup",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="replay assets.extra/tf_serving_warmup_requests before a version is AVAILABLE",
    )
    parser.add_argument(
        "--poll-seconds",
        type=float,
        default=1.0,
        help="how often to look for new versions (TF Serving's --file_system_poll_wait_seconds)",
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
        "--enable-batching",
        "--enable_batching",
        action=TfServingBool,
        help="merge concurrent requests (REST and gRPC, all clients) into one model call "
        "(default off, as TF Serving; `make serve` turns it on)",
    )
    parser.add_argument(
        "--batching-parameters-file",
        "--batching_parameters_file",
        help="TF Serving's BatchingParameters text file (max_batch_size, batch_timeout_micros, "
        "max_enqueued_batches, num_batch_threads, allowed_batch_sizes, ...); needs "
        "--enable_batching; replaces --max-batch-size and --batch-timeout-micros",
    )
    parser.add_argument(
        "--enable-serialization-as-tensor-content",
        "--enable_serialization_as_tensor_content",
        action=TfServingBool,
        help="gRPC Predict outputs packed in tensor_content instead of the typed fields "
        "(float_val, ...), as TF Serving's flag",
    )
    for flag, default, text in (  # the whole-number options
        ("--num-versions", 1, "keep the latest N versions of each model loaded (default 1)"),
        (
            "--max-body-bytes",
            app.Limits.max_body_bytes,
            "larger request bodies are refused with 400 (default %(default)s)",
        ),
        (
            "--max-decompressed-bytes",
            app.Limits.max_decompressed_bytes,
            "cap on a gzip body's decompressed size (default %(default)s, TF Serving's)",
        ),
        (
            "--max-instances",
            app.Limits.max_instances,
            "more instances/examples in one request are refused with 400 (default %(default)s)",
        ),
        (
            "--rest-api-timeout-in-ms",
            30000,
            "REST Predict/Classify/Regress calls answer DEADLINE_EXCEEDED after this long "
            "(default %(default)s, TF Serving's; 0: none)",
        ),
        (
            "--num-threads",
            os.cpu_count() or 2,
            "model calls running at once (default: CPU count, %(default)s)",
        ),
        (
            "--max-batch-size",
            batching.BatchingOptions.max_batch_size,
            "instances in one merged call (default %(default)s)",
        ),
        (
            "--batch-timeout-micros",
            0,
            "how long a batch may wait to fill once a model thread is free (default 0: "
            "batches form only from requests that queued while the threads were busy)",
        ),
    ):
        names = [flag]
        if flag == "--rest-api-timeout-in-ms":
            names.append("--rest_api_timeout_in_ms")
        parser.add_argument(*names, type=int, default=default, help=text)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    if not args.model_base_path and not args.model_config_file:
        parser.error("give --model-base-path or --model-config-file")
    try:
        args.labels = models.parse_version_labels(args.version_labels)
    except ValueError as exc:
        parser.error(f"--version-labels: {exc}")
    args.batching = None
    if args.enable_batching:
        args.batching = batching.BatchingOptions(
            max_batch_size=args.max_batch_size,
            batch_timeout_seconds=args.batch_timeout_micros / 1e6,
        )
        if args.batching_parameters_file:
            try:
                parameters = config.read_batching_parameters_file(args.batching_parameters_file)
                args.batching = batching.options_from_parameters(parameters, args.num_threads)
            except (OSError, errors.ServingError) as exc:
                parser.error(f"--batching_parameters_file: {exc}")
    elif args.batching_parameters_file:
        parser.error(  # server.cc's message
            "server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true."
        )
    return args


class TfServingBool(argparse.Action):
    """A boolean flag as TF Serving spells it (--flag, --flag=true, --flag=false), and as
    argparse's BooleanOptionalAction does (--no-flag)."""

    def __init__(self, option_strings, dest, default=False, help=None):  # noqa: A002
        negated = ["--no-" + option[2:] for option in option_strings]
        super().__init__(
            [*option_strings, *negated], dest, nargs="?", default=default, help=help,
            metavar="true|false",
        )  # fmt: skip

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string.startswith("--no-"):
            if values is not None:
                parser.error(f"{option_string} takes no value")
            setattr(namespace, self.dest, False)
        elif values is None or values.lower() in ("true", "1"):
            setattr(namespace, self.dest, True)
        elif values.lower() in ("false", "0"):
            setattr(namespace, self.dest, False)
        else:
            parser.error(f"{option_string}: expected true or false, got {values!r}")


def _registry(args: argparse.Namespace, loader: models.Loader, warmup_hook) -> models.ModelRegistry:
    return models.ModelRegistry(
        args.model_base_path,
        loader=loader,
        model_names=args.model_name,
        num_versions=args.num_versions,
        version_labels=args.labels,
        allow_labels_for_unavailable=args.allow_version_labels_for_unavailable_models,
        warmup=warmup_hook,
    )


def _runner(args: argparse.Namespace, server_metrics: metrics.Metrics) -> runner.Runner:
    return runner.Runner(args.num_threads, args.batching, server_metrics.batch_observer())


async def _first_load(registry: models.ModelRegistry) -> None:
    """Load what is there before serving, and log each model's versions."""
    if registry.sources is None and not os.path.isdir(registry.base_path):
        log.warning("%s does not exist yet; polling for models", registry.base_path)
    # Two scans: a version loads once its directory looks the same twice (see models.py).
    await asyncio.to_thread(registry.poll)
    await asyncio.to_thread(registry.poll)
    for name in registry.known_models():
        states = [f"{s.version}:{s.state.value}" for s in _statuses(registry, name)]
        log.info("Model %s versions %s", name, ", ".join(states) or "none")


def build_app(args: argparse.Namespace) -> Starlette:
    """The ASGI app for these arguments; loading starts in its lifespan, gRPC beside it."""
    from serving import grpc_api, prediction, warmup  # import TensorFlow
    from serving.savedmodel import Servable

    monitoring = config.Monitoring()
    if args.monitoring_config_file:
        monitoring = config.read_monitoring_config_file(args.monitoring_config_file)
    server_metrics_box: list[metrics.Metrics] = []
    hook = None
    if args.enable_model_warmup:
        hook = warmup.warmer(lambda *a: server_metrics_box[0].observe_warmup(*a))
    registry = _registry(args, Servable, hook)
    server_metrics = metrics.Metrics(registry, monitoring.path if monitoring.enable else "")
    server_metrics_box.append(server_metrics)
    config_watcher = None
    if args.model_config_file:
        config_watcher = ConfigWatcher(args.model_config_file, registry)
        config_watcher.load()  # loads the models; a bad file stops the server here
        registry.model_roots = confine.roots_for("", [s.base_path for s in registry.sources])
    model_runner = _runner(args, server_metrics)
    limits = app.Limits(
        args.max_body_bytes,
        args.max_instances,
        args.max_decompressed_bytes,
        args.rest_api_timeout_in_ms / 1000 if args.rest_api_timeout_in_ms > 0 else None,
    )
    implementation = prediction.Prediction(
        registry, model_runner, limits.max_instances, args.enable_serialization_as_tensor_content
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette):
        await _first_load(registry)
        grpc_server = None
        if args.grpc_port:
            grpc_server = grpc_api.create_server(implementation, server_metrics)
            grpc_server.add_insecure_port(f"{args.host}:{args.grpc_port}")
            await grpc_server.start()
            log.info("gRPC API on %s:%d", args.host, args.grpc_port)
        registry.start(args.poll_seconds)
        if config_watcher is not None and args.model_config_file_poll_wait_seconds > 0:
            config_watcher.start(args.model_config_file_poll_wait_seconds)
        try:
            yield
        finally:
            if config_watcher is not None:
                config_watcher.stop()
            if grpc_server is not None:
                await grpc_server.stop(grace=1)
            registry.stop()
            model_runner.close()

    return app.create_app(implementation, server_metrics, limits, lifespan=lifespan)


class ConfigWatcher:
    """Reads --model_config_file and, if asked, polls it (Server::PollFilesystemAndReloadConfig):
    a changed file is applied without a restart; a file that fails to parse or apply is logged
    and the models keep being served as before."""

    def __init__(self, path: str, registry: models.ModelRegistry):
        self.path = path
        self.registry = registry
        self._applied = None
        self._poller = models.Poller("config-poller", self._reload)

    def load(self) -> None:
        parsed = config.read_model_config_file(self.path)
        if parsed != self._applied:
            self.registry.reconfigure(config.model_sources(parsed))
            self._applied = parsed
            log.info("Model config %s applied", self.path)

    def _reload(self) -> None:
        try:
            self.load()
        except Exception as exc:  # keep serving the last good config
            log.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s", exc)

    def start(self, seconds: float) -> None:
        self._poller.start(seconds)

    def stop(self) -> None:
        self._poller.stop()


def _statuses(registry: models.ModelRegistry, name: str) -> list[models.VersionStatus]:
    try:
        return registry.status(name)
    except Exception:
        return []


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def exposure_warning(host: str) -> str | None:
    """The warning logged when the server listens beyond loopback (the default is 127.0.0.1)."""
    if host in LOOPBACK_HOSTS or host.startswith("127."):
        return None
    return (
        f"Listening on {host}, not loopback: any machine that reaches this host can query and "
        "reload the models (no authentication, as TF Serving). Use --host 127.0.0.1 unless "
        "this is intended."
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    warning = exposure_warning(args.host)
    if warning:
        log.warning(warning)
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
