"""InfraValidator's executor: the candidate is loaded and queried in a model server process.

TFX 1.16's executor starts TF Serving only on local Docker or Kubernetes
(`_create_model_server_runner` raises NotImplementedError for anything else), and neither runs
where this pipeline runs. Everything else of TFX's executor is kept: the model is copied into
TF Serving's `<model_name>/<version>` layout, requests are built from the examples by TFX's
request builder, the server is asked for the model's status and sent the requests by TFX's
gRPC client (`TensorFlowServingClient`), tries and deadlines are TFX's ValidationSpec, and the
blessing is TFX's InfraBlessing. Only the validation step (`_ValidateOnce`) is replaced: it
starts a model server as a child process on free loopback ports,
- TF Serving's `tensorflow_model_server` when it is on PATH (the container image installs it),
- else this project's server (`python -m serving.server`), which serves the same gRPC APIs.
Both get the same directory, model name and flags' meaning; the rest of the path is one.

Warm-up: the exported model carries the project's own `assets.extra/tf_serving_warmup_requests`
(models/warmup.py), which both servers replay before the version is AVAILABLE, so a model whose
warm-up fails is not blessed either. TFX's `make_warmup` would write a copy of the model with
the validation requests as its warm-up file instead; this executor refuses it (the Pusher
pushes the Trainer's model, with the project's records).

Why a model was refused is recorded on the blessing (custom property `failure`, verdict.py),
where the run summary and the evaluation report read it: TFX itself only logs it.

With the pipeline root in a bucket (Vertex), TFX's copy of the candidate is in the bucket too.
TF Serving's binary reads it there; the project's server reads local folders only, so the
candidate is copied (gfile) into a local temporary folder for it. The server's output is
always a local file: a child process writes to a file descriptor, never to a bucket.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import grpc
from tfx.components.infra_validator import error_types
from tfx.components.infra_validator import executor as tfx_executor
from tfx.components.infra_validator.model_server_runners import base_runner
from tfx.utils import path_utils

from components.infra_validator import verdict
from components.pusher.executor import copy_tree, is_remote

log = logging.getLogger(__name__)

MODEL_SERVER_KEY = "model_server"  # exec property: auto | tensorflow_model_server | project
AUTO = "auto"
TF_SERVING = "tensorflow_model_server"  # TF Serving's binary, as its images install it
PROJECT = "project"
MODEL_SERVERS = (AUTO, TF_SERVING, PROJECT)
LOG_FILE = "model_server.log"  # in a local temporary folder per attempt; its tail goes into the log
_LOG_TAIL_CHARS = 4000


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def resolve_model_server(choice: str) -> str:
    """`auto`: TF Serving's binary if it is on PATH, else the project's server."""
    if choice not in MODEL_SERVERS:
        raise ValueError(f"model_server must be one of {', '.join(MODEL_SERVERS)}; got {choice!r}")
    if choice == AUTO:
        return TF_SERVING if shutil.which(TF_SERVING) else PROJECT
    if choice == TF_SERVING and not shutil.which(TF_SERVING):
        raise ValueError(f"model_server={TF_SERVING} but {TF_SERVING} is not on PATH")
    return choice


def server_command(
    server: str, model_base_path: str, model_name: str, grpc_port: int, rest_port: int
) -> list[str]:
    """The command line of either server for one model's directory of versions."""
    if server == TF_SERVING:
        return [
            TF_SERVING,
            f"--port={grpc_port}",
            f"--rest_api_port={rest_port}",
            f"--model_name={model_name}",
            f"--model_base_path={model_base_path}",
            "--enable_model_warmup=true",
        ]
    return [
        sys.executable, "-m", "serving.server",
        "--host", "127.0.0.1",
        "--port", str(rest_port),
        "--grpc-port", str(grpc_port),
        "--model-base-path", model_base_path,
        "--model-name", model_name,
        "--enable-model-warmup",
    ]  # fmt: skip


class LocalProcessRunner(base_runner.BaseModelServerRunner):
    """A model server as a child process of the executor, on free loopback ports.

    Start() launches it; WaitUntilRunning() waits for its gRPC port to accept connections
    (both servers load the models found at start before they listen); Stop() ends it by its
    pid (SIGTERM, then SIGKILL).
    """

    def __init__(self, server: str, model_path: str, model_name: str, log_path: str):
        self.server = server
        self.model_base_path = os.path.dirname(model_path)  # <model_name>/<version> -> versions
        self.model_name = model_name
        self.log_path = log_path
        self.grpc_port = free_port()
        self.rest_port = free_port()
        self._process: subprocess.Popen | None = None

    def __repr__(self) -> str:
        return f"LocalProcessRunner({self.server}, {self.model_base_path}, grpc {self.grpc_port})"

    def GetEndpoint(self) -> str:  # noqa: N802 (TFX API)
        return f"127.0.0.1:{self.grpc_port}"

    def Start(self) -> None:  # noqa: N802
        command = server_command(
            self.server, self.model_base_path, self.model_name, self.grpc_port, self.rest_port
        )
        log.info("Starting model server: %s", " ".join(command))
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
        with open(self.log_path, "wb") as output:
            self._process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def WaitUntilRunning(self, deadline: float) -> None:  # noqa: N802
        while time.time() < deadline:
            code = self._process.poll()
            if code is not None:
                raise error_types.JobAborted(
                    f"the model server exited with code {code} before it listened"
                )
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.settimeout(1)
                if sock.connect_ex(("127.0.0.1", self.grpc_port)) == 0:
                    return
            time.sleep(0.2)
        raise error_types.DeadlineExceeded("the model server did not start listening in time")

    def Stop(self) -> None:  # noqa: N802
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)

    def GetLogs(self) -> str | None:  # noqa: N802
        if not os.path.isfile(self.log_path):
            return None
        with open(self.log_path, errors="replace") as f:
            return f.read()[-_LOG_TAIL_CHARS:]


def describe_failure(exc: BaseException, max_loading_seconds: float) -> str:
    """One line a person can act on, from what a validation attempt raised."""
    if isinstance(exc, error_types.DeadlineExceeded):
        return (
            f"the model was not loaded within max_loading_time_seconds={max_loading_seconds:g} "
            f"({exc})"
        )
    cause = exc.__cause__
    if isinstance(cause, grpc.RpcError):
        return f"the model loaded but failed its queries: {cause.code().name}: {cause.details()}"
    return str(exc)


class Executor(tfx_executor.Executor):
    """TFX's InfraValidator executor with a local model server process (see the module doc)."""

    def Do(self, input_dict, output_dict, exec_properties) -> None:  # noqa: N802 (TFX API)
        self._server = resolve_model_server(exec_properties.get(MODEL_SERVER_KEY) or AUTO)
        self._failures: list[str] = []
        super().Do(input_dict, output_dict, exec_properties)

    def _Do(self, model, examples, blessing, serving_spec, validation_spec, request_spec):  # noqa: N802
        if request_spec is not None and request_spec.make_warmup:
            raise ValueError(
                "make_warmup would replace the model's own warm-up records "
                "(assets.extra/tf_serving_warmup_requests); leave it off"
            )
        unreadable = _unreadable_model(model)
        if unreadable:  # TFX's request builder would fail the component; refuse the model
            self._failures.append(f"the model cannot be read as a SavedModel: {unreadable}")
            tfx_executor._mark_not_blessed(blessing)
        else:
            super()._Do(model, examples, blessing, serving_spec, validation_spec, request_spec)
        verdict.record(blessing, self._server, self._failures[-1] if self._failures else None)

    def _ValidateOnce(self, model_path, serving_binary, serving_spec, validation_spec, requests):  # noqa: N802
        """TFX's _ValidateOnce with a LocalProcessRunner instead of Docker or Kubernetes."""
        deadline = time.time() + validation_spec.max_loading_time_seconds
        with tempfile.TemporaryDirectory(prefix="infra-validator-") as local_dir:
            if self._server == PROJECT and is_remote(model_path):
                model_path = local_model_copy(model_path, local_dir)
            runner = LocalProcessRunner(
                self._server, model_path, serving_spec.model_name, os.path.join(local_dir, LOG_FILE)
            )
            try:
                runner.Start()
                runner.WaitUntilRunning(deadline)
                client = serving_binary.MakeClient(runner.GetEndpoint())
                try:
                    client.WaitUntilModelLoaded(
                        deadline, polling_interval_sec=tfx_executor._DEFAULT_POLLING_INTERVAL_SEC
                    )
                except error_types.ValidationFailed as exc:  # END: say what the server said
                    raise error_types.ValidationFailed(
                        f"the model server failed to load the model: {_load_error(client)}"
                    ) from exc
                if requests:
                    client.SendRequests(requests)
            except Exception as exc:
                failure = describe_failure(exc, validation_spec.max_loading_time_seconds)
                self._failures.append(failure)
                log.error(
                    "Infra validation failed: %s\nmodel server log (%s):\n%s",
                    failure, runner, runner.GetLogs() or "(none)",
                )  # fmt: skip
                raise
            finally:
                runner.Stop()


def local_model_copy(model_path: str, local_dir: str) -> str:
    """The candidate's `<model_name>/<version>` folder copied from a bucket under local_dir
    (the same two path components), for a server that reads local folders only."""
    version_dir = os.path.basename(model_path.rstrip("/"))
    model_name = os.path.basename(os.path.dirname(model_path.rstrip("/")))
    local_path = os.path.join(local_dir, "models", model_name, version_dir)
    files = copy_tree(model_path, local_path)
    log.info("Copied the candidate's %d files from %s to %s", len(files), model_path, local_path)
    return local_path


def _unreadable_model(model) -> str | None:
    """Why the Trainer's SavedModel cannot be parsed (TFX's request builder reads its
    signatures before any server starts), or None."""
    from tensorflow.python.saved_model import loader_impl

    path = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
    try:
        loader_impl.SavedModelLoader(path).get_meta_graph_def_from_tags({"serve"})
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _load_error(client) -> str:
    """The error of the version the server failed to load (GetModelStatus), if it says one."""
    try:
        status = client._GetModelStatus()  # TFX's client: the request it already builds
    except grpc.RpcError as exc:
        return f"{exc.code().name}: {exc.details()}"
    messages = [
        f"version {s.version}: {s.status.error_message}"
        for s in status.model_version_status
        if s.status.error_message
    ]
    return "; ".join(messages) or "state END"
