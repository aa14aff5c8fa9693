"""TF Serving's --model_config_file and --monitoring_config_file.

Unit cases check the parsing and the rules taken from TF Serving's source (version directory
names as absl::SimpleAtoi reads them, version policies, ServerCore's config checks). The
end-to-end case runs the server on a config with two models, one under a `specific` policy,
rewrites the file while it runs (picked up by polling, no restart: a version dropped and a
label added), drops a model through gRPC's HandleReloadConfigRequest, and checks the
monitoring config's path. (Warm-up is covered by test_serving_warmup.py and the conformance
suite's metrics; it is off here to keep the three loads short.)
"""

from __future__ import annotations

import os
import time

import grpc
import httpx
import pytest
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

from serving import config, errors
from serving.client import ServingClient, b64
from serving.models import VersionPolicy, version_number
from tests.serving.helpers import ServerProcess, image

pytest_plugins = ["tests.serving.helpers"]


# ---- unit ----


@pytest.mark.parametrize(
    ("name", "version"),
    [("1", 1), ("007", 7), (" 12 ", 12), ("+5", 5), ("-1", -1), (".push-17", None),
     ("12a", None), ("", None), ("1.0", None), ("99999999999999999999", None)],
)  # fmt: skip
def test_version_directory_names_as_tf_serving_reads_them(name, version) -> None:
    assert version_number(name) == version


def test_version_policies() -> None:
    found = [3, 1, 2, 10]
    assert VersionPolicy().aspired(found) == [10]
    assert VersionPolicy("latest", num_versions=2).aspired(found) == [3, 10]
    assert VersionPolicy("latest", num_versions=0).aspired(found) == [10]  # at least one
    assert VersionPolicy("all").aspired(found) == [1, 2, 3, 10]
    assert VersionPolicy("specific", versions=(2, 3, 7)).aspired(found) == [2, 3]


def model_config(*models: str) -> str:
    return "model_config_list {\n" + "".join(models) + "}\n"


def model_entry(name: str, base: str, policy: str = "", labels: dict | None = None) -> str:
    text = f'  config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow"\n'
    if policy:
        text += f"    model_version_policy {{ {policy} }}\n"
    for label, version in (labels or {}).items():
        text += f'    version_labels {{ key: "{label}" value: {version} }}\n'
    return text + "  }\n"


def test_model_config_file_parsing() -> None:
    text = model_config(
        model_entry("a", "/models/a"),
        model_entry("b", "/models/b", "specific { versions: 1 versions: 3 }", {"stable": 1}),
        model_entry("c", "/models/c", "all {}"),
        model_entry("d", "/models/d", "latest { num_versions: 2 }"),
    )
    sources = config.model_sources(config.parse_model_server_config(text))
    assert [s.name for s in sources] == ["a", "b", "c", "d"]
    assert sources[0].policy == VersionPolicy("latest", 1)
    assert sources[1].policy == VersionPolicy("specific", versions=(1, 3))
    assert sources[1].labels == (("stable", 1),)
    assert sources[2].policy.kind == "all"
    assert sources[3].policy == VersionPolicy("latest", 2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (model_config(model_entry("a", "/x"), model_entry("a", "/y")), "multiple times"),
        (model_config(model_entry("a", "relative/path")), "to have an absolute path"),
        ("custom_model_config {}", "Only ModelConfigList is currently supported"),
        ("model_config_list { nonsense: 1 }", "Invalid ModelServerConfig"),
    ],
)
def test_model_config_file_refusals(text: str, message: str) -> None:
    with pytest.raises(errors.ServingError) as raised:
        config.model_sources(config.parse_model_server_config(text))
    assert message in raised.value.message
    assert raised.value.code is errors.Code.INVALID_ARGUMENT


def test_monitoring_config(tmp_path) -> None:
    path = tmp_path / "monitoring.config"
    path.write_text('prometheus_config { enable: true path: "/metrics" }\n')
    assert config.read_monitoring_config_file(str(path)) == config.Monitoring(True, "/metrics")
    path.write_text("prometheus_config { enable: true }\n")
    assert config.read_monitoring_config_file(str(path)).path == config.DEFAULT_METRICS_PATH
    path.write_text("prometheus_config { enabled: true }\n")
    with pytest.raises(ValueError, match="Invalid MonitoringConfig"):
        config.read_monitoring_config_file(str(path))


# ---- end to end ----


def write_atomically(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def link_versions(export_dir: str, model_dir: str, versions) -> None:
    os.makedirs(model_dir, exist_ok=True)
    for version in versions:
        os.symlink(export_dir, os.path.join(model_dir, str(version)))


def wait_states(server: ServerProcess, model: str, want: dict, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    states = {}
    while time.monotonic() < deadline:
        try:
            states = server.states(model)
        except httpx.HTTPError:
            states = {}
        if {v: s for v, s in states.items() if s != "END"} == want:
            return
        time.sleep(0.3)
    raise AssertionError(f"{model}: {states}, wanted {want}\n{server.log_tail()}")


@pytest.mark.slow
def test_config_file_two_models_specific_policy_and_reloads(tmp_path, request) -> None:
    export_dir = request.getfixturevalue("serving_export_v1")
    link_versions(export_dir, str(tmp_path / "a"), [1])
    link_versions(export_dir, str(tmp_path / "b"), [1, 2, 3])
    config_path = str(tmp_path / "models.config")
    a = model_entry("a", str(tmp_path / "a"))
    b_specific = model_entry("b", str(tmp_path / "b"), "specific { versions: 1 versions: 3 }")
    write_atomically(config_path, model_config(a, b_specific))
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }\n')
    server = ServerProcess(
        None,
        str(tmp_path / "server.log"),
        "--model_config_file", config_path,
        "--model_config_file_poll_wait_seconds", "0.5",
        "--monitoring_config_file", str(monitoring),
        "--no-enable-model-warmup",
    )  # fmt: skip
    request.addfinalizer(server.stop)
    server.wait_available("b")
    # Exactly the configured versions: a's latest, b's 1 and 3 (not 2).
    assert server.states("a") == {1: "AVAILABLE"}
    assert server.states("b") == {3: "AVAILABLE", 1: "AVAILABLE"}
    body = {"instances": [b64(image(seed=31))]}
    for version, code in ((1, 200), (2, 404), (3, 200)):
        url = f"{server.url}/v1/models/b/versions/{version}:predict"
        assert httpx.post(url, json=body, timeout=60).status_code == code, version
    # Metrics at the monitoring config's path only.
    metrics = httpx.get(f"{server.url}/metrics", timeout=10)
    assert metrics.status_code == 200
    assert ':tensorflow:serving:request_count{model_name="b",status="NOT_FOUND"} 1' in metrics.text
    assert httpx.get(f"{server.url}/monitoring/prometheus/metrics").status_code == 404

    # A changed file is picked up without a restart: b keeps only version 1, labelled.
    b_one = model_entry("b", str(tmp_path / "b"), "specific { versions: 1 }", {"stable": 1})
    write_atomically(config_path, model_config(a, b_one))
    wait_states(server, "b", {1: "AVAILABLE"})
    labelled = ServingClient(server.url, "b", label="stable")
    deadline = time.monotonic() + 30
    while True:  # the label lands with the same reload; allow for the poll in between
        try:
            labelled.predict(instances=[b64(image(seed=32))])
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)

    # gRPC ReloadConfig: a label of a version that is not AVAILABLE is refused as TF Serving
    # refuses it; dropping model b unloads it.
    with grpc.insecure_channel(server.grpc_target) as channel:
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        reload = model_management_pb2.ReloadConfigRequest()
        reload.config.CopyFrom(config.parse_model_server_config(model_config(a, b_one)))
        reload.config.model_config_list.config[1].version_labels["canary"] = 3
        with pytest.raises(grpc.RpcError) as raised:
            models.HandleReloadConfigRequest(reload, timeout=60)
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "which is not currently available for inference" in raised.value.details()
        reload.config.CopyFrom(config.parse_model_server_config(model_config(a)))
        answer = models.HandleReloadConfigRequest(reload, timeout=120)
        assert answer.status.error_code == 0
    wait_states(server, "b", {})
    assert server.states("a") == {1: "AVAILABLE"}
    assert server.process.poll() is None
