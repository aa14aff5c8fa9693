"""Version handling under load: a new version is pushed while clients keep sending requests.

TF Serving's default, which the server must match: serve the latest version, pick up a pushed
version without a restart, keep answering from the old one until the new one is loaded, never
serve a version that fails to load. Version 2 answers with other class names, so every answer
says which version gave it. Needs to write the model directory, so it runs only against this
project's server (not TF_SERVING_URL).
"""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest

from serving.client import ServingClient, b64
from tests.serving.helpers import (
    CLASS_NAMES,
    MODEL_NAME,
    POLL_SECONDS,
    V2_CLASS_NAMES,
    ServerProcess,
    image,
    push_version,
)

pytest_plugins = ["tests.serving.helpers"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    if os.environ.get("TF_SERVING_URL"):
        pytest.skip("pushes versions into the served directory")
    export_v1 = request.getfixturevalue("serving_export_v1")  # only when not skipped
    base = tmp_path_factory.mktemp("hot_swap")
    push_version(export_v1, str(base / MODEL_NAME), 1)
    process = ServerProcess(str(base), str(base.parent / "hot-swap-server.log"))
    try:
        process.wait_available(MODEL_NAME)
        yield process, str(base / MODEL_NAME)
    finally:
        process.stop()


def wait_for(condition, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(POLL_SECONDS / 2)
    raise TimeoutError(f"timed out waiting for {what}")


def states(client: ServingClient) -> dict[int, tuple[str, str]]:
    answer = client.status()["model_version_status"]
    return {int(v["version"]): (v["state"], v["status"]["error_code"]) for v in answer}


def slow_push(export_dir: str, model_dir: str, version: int, pause: float) -> None:
    """Like push_version, but slow enough for the poller to see every half-written stage:
    no saved_model.pb yet, then half of it, then all of it."""
    destination = os.path.join(model_dir, str(version))
    shutil.copytree(export_dir, destination, ignore=shutil.ignore_patterns("saved_model.pb"))
    time.sleep(pause)
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        graph = f.read()
    with open(os.path.join(destination, "saved_model.pb"), "wb") as f:
        f.write(graph[: len(graph) // 2])
        f.flush()
        time.sleep(pause)
        f.write(graph[len(graph) // 2 :])


class Load:
    """Client threads sending predictions until stopped; each keeps its answers in order."""

    def __init__(self, url: str, threads: int = 2, max_seconds: float = 120.0):
        self.answers: list[list[object]] = [[] for _ in range(threads)]
        self._stop = threading.Event()
        self._url = url
        self._max_seconds = max_seconds
        self._threads = [
            threading.Thread(target=self._send, args=(i,), daemon=True) for i in range(threads)
        ]

    def _send(self, index: int) -> None:
        data = [b64(image(seed=20 + index))]
        deadline = time.monotonic() + self._max_seconds
        with ServingClient(self._url, MODEL_NAME, timeout=30) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    answer = client.predict(instances=data)["predictions"][0]["class_name"]
                except Exception as exc:  # every failure is kept and fails the test
                    answer = exc
                self.answers[index].append(answer)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def count(self) -> int:
        return sum(len(answers) for answers in self.answers)

    def failures(self) -> list[Exception]:
        return [a for answers in self.answers for a in answers if isinstance(a, Exception)]


def test_push_under_load_switches_versions_without_a_failed_request(
    server, serving_export_v2
) -> None:
    process, model_dir = server
    client = ServingClient(process.url, MODEL_NAME)
    with Load(process.url) as load:
        wait_for(lambda: load.count() >= 10, what="first answers")
        slow_push(serving_export_v2, model_dir, 2, pause=5 * POLL_SECONDS)
        wait_for(lambda: states(client).get(2, ("",))[0] == "AVAILABLE", what="version 2")
        switched_at = load.count()
        wait_for(lambda: load.count() >= switched_at + 20, what="answers after the switch")
    assert load.failures() == []
    for answers in load.answers:
        assert answers[0] in CLASS_NAMES
        first_v2 = next(i for i, a in enumerate(answers) if a in V2_CLASS_NAMES)
        # Once version 2 answered, version 1 never answers again.
        assert all(a in CLASS_NAMES for a in answers[:first_v2])
        assert all(a in V2_CLASS_NAMES for a in answers[first_v2:])
    assert states(client) == {2: ("AVAILABLE", "OK"), 1: ("END", "OK")}
    body = {"instances": [b64(image())]}
    old = client.send("POST", f"/v1/models/{MODEL_NAME}/versions/1:predict", json=body)
    assert old.status_code == 404


def test_version_that_fails_to_load_is_reported_and_never_served(server, serving_export_v1) -> None:
    process, model_dir = server
    client = ServingClient(process.url, MODEL_NAME)
    broken = os.path.join(model_dir, "3")
    os.makedirs(os.path.join(broken, "variables"))
    with open(os.path.join(broken, "saved_model.pb"), "wb") as f:
        f.write(b"this is not a SavedModel")
    with Load(process.url) as load:
        wait_for(lambda: states(client).get(3, ("",))[0] == "END", what="version 3 to fail")
        time.sleep(5 * POLL_SECONDS)  # a failed version is not retried while unchanged
        wait_for(lambda: load.count() >= 10, what="answers")
    assert load.failures() == []
    assert {a for answers in load.answers for a in answers} <= set(V2_CLASS_NAMES)
    version_3 = client.status()["model_version_status"][0]
    assert version_3["version"] == "3" and version_3["state"] == "END"
    assert version_3["status"]["error_code"] != "OK" and version_3["status"]["error_message"]
    assert states(client)[2] == ("AVAILABLE", "OK")
    body = {"instances": [b64(image())]}
    pinned = client.send("POST", f"/v1/models/{MODEL_NAME}/versions/3:predict", json=body)
    assert pinned.status_code == 404

    # Fixing the directory (new files) makes the server try again, and then serve it.
    shutil.rmtree(broken)
    push_version(serving_export_v1, model_dir, 3)
    wait_for(lambda: states(client).get(3) == ("AVAILABLE", "OK"), what="version 3 fixed")
    assert client.classify_images([image()])[0].class_name in CLASS_NAMES
