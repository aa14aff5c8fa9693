"""`python -m serving.server` as a child process on free loopback ports, and its readiness.

Used by the tests and the serving benchmark, so neither re-implements starting the server,
waiting until a model is AVAILABLE, and stopping it by its own pid.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """The server over `base_path` (or with `--model-config-file` in extra_args), REST and gRPC
    on free ports; its output goes to `log_path`."""

    def __init__(self, base_path: str | None, log_path: str, *extra_args: str, poll: float = 1.0):
        self.port = free_port()
        self.grpc_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self.log_path = log_path
        command = [
            sys.executable, "-m", "serving.server",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--grpc-port", str(self.grpc_port),
            "--poll-seconds", str(poll),
            *(["--model-base-path", base_path] if base_path else []),
            *extra_args,
        ]  # fmt: skip
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log_tail(self, chars: int = 4000) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-chars:]

    def states(self, model: str) -> dict[int, str]:
        """Version -> state from the REST status API ({} if the model is unknown)."""
        answer = httpx.get(f"{self.url}/v1/models/{model}", timeout=10).json()
        return {int(v["version"]): v["state"] for v in answer.get("model_version_status", [])}

    def wait_available(self, model: str, timeout: float = 180.0, version: int | None = None):
        """Until the model (or that version of it) is AVAILABLE; the server loads before it
        listens, so this mostly waits for the process to start."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                states = self.states(model)
                if (version is None and "AVAILABLE" in states.values()) or (
                    version is not None and states.get(version) == "AVAILABLE"
                ):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{model} not AVAILABLE after {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
