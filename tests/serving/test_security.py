"""What the server listens on and what a request can make it read.

- It binds loopback unless told otherwise, and logs a warning when bound elsewhere.
- Request-supplied model names and version labels (REST paths, gRPC model specs) never
  reach the file system: a valid model beside the served folder stays unreachable through
  `..`, encoded slashes and the like.
- A gRPC HandleReloadConfigRequest may only name model directories inside the server's model
  roots (after resolving `..` and symlinks); the operator's own config file is not limited.
"""

from __future__ import annotations

import http.client
import json
import logging
import os

import grpc
import httpx
import pytest
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving import confine, server
from serving.client import b64
from tests.serving.helpers import MODEL_NAME, Target, image, push_version

pytest_plugins = ["tests.serving.helpers"]

SECRET = "secret_model"  # a valid model in the folder above the served one


# ---- listening ----


def test_the_server_binds_loopback_by_default():
    args = server.parse_args(["--model-base-path", "/models"])
    assert args.host == "127.0.0.1"
    assert server.exposure_warning(args.host) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "myhost.example"])
def test_binding_beyond_loopback_is_logged(host, caplog, monkeypatch):
    started = {}
    monkeypatch.setattr(server, "build_app", lambda args: "app")
    monkeypatch.setattr(server.uvicorn, "run", lambda app, **kw: started.update(kw))
    with caplog.at_level(logging.WARNING, logger="serving.server"):
        server.main(["--model-base-path", "/models", "--host", host])
    assert started["host"] == host
    assert any(f"Listening on {host}, not loopback" in r.message for r in caplog.records)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_hosts_are_not_warned_about(host):
    assert server.exposure_warning(host) is None


# ---- names and labels ----


def base_path(target: Target) -> str:
    """The conformance server's --model-base-path, from its command line."""
    args = target.server.process.args
    return args[args.index("--model-base-path") + 1]


@pytest.fixture(scope="module")
def local_target(serving_target: Target, request) -> Target:
    if not serving_target.local:
        pytest.skip("needs this server's files")
    # A real model beside the served folder: what a traversal would reach.
    secret_dir = os.path.join(os.path.dirname(base_path(serving_target)), SECRET)
    if not os.path.isdir(secret_dir):
        push_version(request.getfixturevalue("serving_export_v1"), secret_dir, 1)
    return serving_target


def raw_request(target: Target, method: str, path: str, document=None) -> tuple[int, dict]:
    """The request line exactly as written (httpx would remove `..` segments first)."""
    connection = http.client.HTTPConnection(httpx.URL(target.url).host, httpx.URL(target.url).port)
    try:
        body = json.dumps(document).encode() if document is not None else None
        connection.request(method, path, body=body, headers={"content-type": "application/json"})
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        connection.close()


TRAVERSALS = [
    "..", "...", f"..%2F{SECRET}", f"%2e%2e%2f{SECRET}", f"..%5C{SECRET}", f"{MODEL_NAME}%2F..",
    f"%2E%2E%2F%2E%2E%2F{SECRET}", SECRET, f"{MODEL_NAME}%00", "%2Fetc%2Fpasswd",
]  # fmt: skip


@pytest.mark.parametrize("name", TRAVERSALS)
def test_model_names_cannot_leave_the_base_path(local_target: Target, name: str):
    body = {"instances": [b64(image())]}
    for method, path, kwargs in (
        ("POST", f"/v1/models/{name}:predict", {"json": body}),
        ("GET", f"/v1/models/{name}", {}),
        ("GET", f"/v1/models/{name}/metadata", {}),
        ("POST", f"/v1/models/{MODEL_NAME}/labels/{name}:predict", {"json": body}),
        ("GET", f"/v1/models/{MODEL_NAME}/labels/{name}/metadata", {}),
    ):
        status, document = raw_request(local_target, method, path, kwargs.get("json"))
        assert status in (400, 404), (path, status, document)
        assert "error" in document


@pytest.mark.parametrize("name", ["..", f"../{SECRET}", f"/{SECRET}", SECRET, "", "./."])
def test_grpc_model_specs_cannot_leave_the_base_path(local_target: Target, name: str):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs["image_bytes"].string_val.append(image())
    request.inputs["image_bytes"].dtype = 7  # DT_STRING
    request.inputs["image_bytes"].tensor_shape.dim.add(size=1)
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = name
    status.model_spec.version_label = f"../{SECRET}"
    with grpc.insecure_channel(local_target.grpc) as channel:
        for call, message in (
            (prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict, request),
            (model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus, status),
        ):
            with pytest.raises(grpc.RpcError) as raised:
                call(message, timeout=30)
            assert raised.value.code() in (
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.INVALID_ARGUMENT,
            ), raised.value.details()


# ---- reload requests ----


def _reload(target: Target, base_path: str) -> grpc.RpcError | None:
    request = model_management_pb2.ReloadConfigRequest()
    entry = request.config.model_config_list.config.add()
    entry.name, entry.base_path, entry.model_platform = MODEL_NAME, base_path, "tensorflow"
    with grpc.insecure_channel(target.grpc) as channel:
        try:
            model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
                request, timeout=60
            )
        except grpc.RpcError as exc:
            return exc
    return None


def test_a_reload_request_cannot_point_outside_the_model_roots(local_target: Target, tmp_path):
    base = base_path(local_target)
    outside = os.path.join(os.path.dirname(base), SECRET)
    link = tmp_path / "link_to_secret"
    os.symlink(outside, link)
    for path in (
        outside, f"{base}/{MODEL_NAME}/../../{SECRET}", str(link), "/etc", "gs://bucket/model",
    ):  # fmt: skip
        error = _reload(local_target, path)
        assert error is not None and error.code() is grpc.StatusCode.PERMISSION_DENIED, path
        assert "outside the server's model roots" in error.details()
    # Nothing changed: the served model still answers, the secret one is not served.
    answer = httpx.post(
        f"{local_target.url}/v1/models/{MODEL_NAME}:predict",
        json={"instances": [b64(image())]},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert httpx.get(f"{local_target.url}/v1/models/{SECRET}", timeout=30).status_code == 404


def test_confinement_resolves_dots_and_symlinks(tmp_path):
    root = tmp_path / "models"
    (root / "a").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "sneaky")
    roots = confine.roots_for(str(root), [])
    assert confine.within(str(root / "a"), roots)
    assert confine.within(str(root), roots)
    assert not confine.within(str(root / ".." / "elsewhere"), roots)
    assert not confine.within(str(root / "sneaky"), roots)
    assert not confine.within(str(tmp_path / "models_evil"), roots)  # a prefix is not inside
    assert confine.roots_for("", [str(root / "a"), str(root / "b")]) == (str(root.resolve()),)
