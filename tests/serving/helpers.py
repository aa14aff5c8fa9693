"""Shared pieces of the serving tests: exported models, a live server process, the target.

The serving test modules load this file as a pytest plugin (`pytest_plugins`), so its session
fixtures exist once per run: one export per model variant, one server for the conformance
suite. With TF_SERVING_URL set, the suite targets that endpoint instead (e.g. a real TF
Serving started from serving/docker-compose.yml) and skips what needs this server's files or
options.

Test modules also import its helpers by name, which happens before pytest loads it as a
plugin; PYTEST_DONT_REWRITE tells pytest not to expect to rewrite its asserts (it has none).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import pytest

from serving import process

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL_NAME = os.environ.get("TF_SERVING_MODEL", "image_classifier")
CLASS_NAMES = ("hot_dog", "not_hot_dog")
V2_CLASS_NAMES = ("hot_dog_v2", "not_hot_dog_v2")  # version 2 tells itself apart by its answers
LABEL = "stable"  # the local server labels version 1 so
MAX_BODY_BYTES = 2_000_000
MAX_INSTANCES = 1024  # the floor: 1,000 small images in one request
MAX_DECOMPRESSED_BYTES = 3_000_000
POLL_SECONDS = 0.2


@dataclass
class Target:
    """Where the suite sends requests, and what it may assume about it."""

    url: str
    model: str
    local: bool  # our server: its files and options are known
    label: str | None  # a label that names an AVAILABLE version, if any
    version: int | None  # a version that is AVAILABLE, if known
    server: ServerProcess | None = None
    grpc: str | None = None  # host:port of its gRPC API, if known


def push_version(export_dir: str, model_dir: str, version: int) -> str:
    """Copy an export into <model_dir>/<version> the way TFX's Pusher does: straight into the
    final directory, saved_model.pb last. The server must cope with seeing it half-written."""
    destination = os.path.join(model_dir, str(version))
    shutil.copytree(export_dir, destination, ignore=shutil.ignore_patterns("saved_model.pb"))
    shutil.copy(os.path.join(export_dir, "saved_model.pb"), destination)
    return destination


class ServerProcess(process.ServerProcess):
    """The server as the tests run it: polling every POLL_SECONDS."""

    def __init__(self, base_path: str | None, log_path: str, *extra_args: str):
        super().__init__(base_path, log_path, *extra_args, poll=POLL_SECONDS)


def image(seed: int = 0, image_format: str = "jpeg", size: int = 40) -> bytes:
    from tools import samples

    return samples.image_bytes(size, size, image_format=image_format, seed=seed)


def export(tmp_path_factory: pytest.TempPathFactory, name: str, class_names: tuple) -> str:
    from tools import samples

    scratch = tmp_path_factory.mktemp(name)
    return samples.export_untrained_model(
        str(scratch / "export"), class_names=class_names, image_size=32, backbone="mobilenet_v2"
    )


@pytest.fixture(scope="session")
def serving_export_v1(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real export (the project's export code) answering with CLASS_NAMES."""
    return export(tmp_path_factory, "export_v1", CLASS_NAMES)


@pytest.fixture(scope="session")
def serving_export_v2(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The same model answering with V2_CLASS_NAMES, to see which version answered."""
    return export(tmp_path_factory, "export_v2", V2_CLASS_NAMES)


@pytest.fixture(scope="session")
def serving_target(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Target:
    """TF_SERVING_URL if set, else our server over a fresh copy of the export as version 1."""
    url = os.environ.get("TF_SERVING_URL")
    if url:
        label = os.environ.get("TF_SERVING_LABEL") or None
        grpc_target = os.environ.get("TF_SERVING_GRPC") or None
        return Target(
            url.rstrip("/"), MODEL_NAME, local=False, label=label, version=None, grpc=grpc_target
        )
    exported = request.getfixturevalue("serving_export_v1")
    base = tmp_path_factory.mktemp("serving")
    push_version(exported, str(base / MODEL_NAME), 1)
    server = ServerProcess(
        str(base),
        str(base.parent / "conformance-server.log"),
        "--version-labels", f"{MODEL_NAME}:{LABEL}=1",
        "--max-body-bytes", str(MAX_BODY_BYTES),
        "--max-instances", str(MAX_INSTANCES),
        "--max-decompressed-bytes", str(MAX_DECOMPRESSED_BYTES),
    )  # fmt: skip
    request.addfinalizer(server.stop)
    server.wait_available(MODEL_NAME)
    return Target(
        server.url, MODEL_NAME, local=True, label=LABEL, version=1, server=server,
        grpc=server.grpc_target,
    )  # fmt: skip


HALF_PLUS_TWO = "half_plus_two"
# TF Serving's BatchingParameters for the batching server: merges up to 8 instances, waits
# up to BATCH_TIMEOUT_S for a batch to fill, pads batches to 4 or 8, one batch at a time.
BATCH_TIMEOUT_S = 0.5
BATCHING_PARAMETERS = f"""
max_batch_size {{ value: 8 }}
batch_timeout_micros {{ value: {int(BATCH_TIMEOUT_S * 1e6)} }}
num_batch_threads {{ value: 1 }}
allowed_batch_sizes: 4
allowed_batch_sizes: 8
"""
REST_TIMEOUT_MS = 200  # below BATCH_TIMEOUT_S: a lone REST call times out in the queue


def export_half_plus_two(export_dir: str) -> str:
    """A SavedModel shaped like TF Serving's half_plus_two test model (the one its
    multi_inference_test.cc uses): tf.Examples with a float feature `x` in,
    `regress_x_to_y` (0.5x + 2), `regress_x_to_y2` (0.5x + 3), `classify_x_to_y` (scores
    0.5x + 2, no classes), and a Predict `serving_default` (x -> 0.5x + 2)."""
    import tensorflow as tf

    def parse(serialized):
        spec = {"x": tf.io.FixedLenFeature([1], tf.float32)}
        return tf.io.parse_example(serialized, spec)["x"]

    examples = tf.TensorSpec([None], tf.string)

    class HalfPlusTwo(tf.Module):
        @tf.function(input_signature=[examples])
        def regress_x_to_y(self, inputs):
            return {"outputs": tf.reshape(0.5 * parse(inputs) + 2.0, [-1])}

        @tf.function(input_signature=[examples])
        def regress_x_to_y2(self, inputs):
            return {"outputs": tf.reshape(0.5 * parse(inputs) + 3.0, [-1])}

        @tf.function(input_signature=[examples])
        def classify_x_to_y(self, inputs):
            return {"scores": 0.5 * parse(inputs) + 2.0}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def predict(self, x):
            return {"y": 0.5 * x + 2.0}

    module = HalfPlusTwo()
    signatures = {
        "regress_x_to_y": module.regress_x_to_y,
        "regress_x_to_y2": module.regress_x_to_y2,
        "classify_x_to_y": module.classify_x_to_y,
        "serving_default": module.predict,
    }
    tf.saved_model.save(module, export_dir, signatures=signatures)
    return export_dir


@pytest.fixture(scope="session")
def batching_server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    """Our server over half_plus_two with TF Serving's batching flags, a parameters file,
    Prometheus metrics on, and --rest_api_timeout_in_ms below the batch timeout."""
    if os.environ.get("TF_SERVING_URL"):
        pytest.skip("needs this server's batching flags and a fixture model")
    base = tmp_path_factory.mktemp("half_plus_two")
    export_half_plus_two(str(base / HALF_PLUS_TWO / "1"))
    parameters = base / "batching_parameters.txt"
    parameters.write_text(BATCHING_PARAMETERS)
    server = ServerProcess(
        str(base),
        str(base.parent / "batching-server.log"),
        "--enable_batching",
        f"--batching_parameters_file={parameters}",
        "--monitoring_config_file", os.path.join(ROOT, "serving", "monitoring.config"),
        "--rest_api_timeout_in_ms", str(REST_TIMEOUT_MS),
    )  # fmt: skip
    request.addfinalizer(server.stop)
    server.wait_available(HALF_PLUS_TWO)
    return server
