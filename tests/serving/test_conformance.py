"""Conformance of the model server with TF Serving's REST API, end to end over real HTTP.

The cases come from TF Serving's api_rest.md and its REST handler's behaviour
(http_rest_api_handler.cc, json_tensor.cc, http_server.cc's status -> HTTP map): the success
shapes of every API, and malformed requests each answered with the right HTTP status and a
JSON {"error": ...}, after which the server still answers.

Runs against `python -m serving.server` on a loopback port, or, with TF_SERVING_URL (and
TF_SERVING_MODEL) set, against any TF Serving serving the project's export; cases that depend
on this server's own options are skipped there.
"""

from __future__ import annotations

import base64
import gzip
import json
import math

import httpx
import pytest

from serving.client import ServingClient, b64
from tests.serving.helpers import (
    CLASS_NAMES,
    MAX_BODY_BYTES,
    MAX_DECOMPRESSED_BYTES,
    MAX_INSTANCES,
    Target,
    image,
)

pytest_plugins = ["tests.serving.helpers"]


@pytest.fixture(scope="module")
def target(serving_target: Target) -> Target:
    return serving_target


@pytest.fixture(scope="module")
def client(target: Target):
    with ServingClient(target.url, target.model, timeout=60) as api:
        yield api


def local_only(target: Target) -> None:
    if not target.local:
        pytest.skip("depends on this server's options or files")


def assert_json(response: httpx.Response) -> dict:
    assert response.headers["content-type"].startswith("application/json"), response.headers
    return response.json()


def assert_error(response: httpx.Response, status: int, fragment: str = "") -> str:
    body = assert_json(response)
    assert response.status_code == status, (response.status_code, body)
    assert isinstance(body.get("error"), str) and body["error"], body
    assert fragment in body["error"], body["error"]
    return body["error"]


def post(client: ServingClient, suffix: str, body: bytes | str | dict) -> httpx.Response:
    content = json.dumps(body) if isinstance(body, dict) else body
    return client.send("POST", f"/v1/models/{client.model}{suffix}", content=content)


def check_prediction(prediction: dict, local: bool) -> None:
    assert set(prediction) == {"probabilities", "class_index", "class_name"}
    probabilities = prediction["probabilities"]
    assert len(probabilities) >= 2
    assert math.isclose(sum(probabilities), 1.0, abs_tol=1e-4)
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    assert prediction["class_index"] == best
    if local:
        assert prediction["class_name"] == CLASS_NAMES[prediction["class_index"]]


# ---- status and metadata ----


def test_status_lists_an_available_version(client: ServingClient, target: Target) -> None:
    response = client.send("GET", f"/v1/models/{target.model}")
    body = assert_json(response)
    assert response.status_code == 200
    versions = body["model_version_status"]
    available = [v for v in versions if v["state"] == "AVAILABLE"]
    assert available, versions
    entry = available[0]
    assert set(entry) == {"version", "state", "status"}
    assert isinstance(entry["version"], str) and entry["version"].isdigit()  # int64 as a string
    assert entry["status"] == {"error_code": "OK", "error_message": ""}


def test_status_of_one_version(client: ServingClient, target: Target) -> None:
    version = target.version or int(client.status()["model_version_status"][0]["version"])
    response = client.send("GET", f"/v1/models/{target.model}/versions/{version}")
    body = assert_json(response)
    assert response.status_code == 200
    assert [v["version"] for v in body["model_version_status"]] == [str(version)]


def test_status_and_predict_by_label(client: ServingClient, target: Target) -> None:
    if target.label is None:
        pytest.skip("no version label configured (TF_SERVING_LABEL)")
    labelled = ServingClient(target.url, target.model, label=target.label)
    assert labelled.status()["model_version_status"][0]["state"] == "AVAILABLE"
    check_prediction(labelled.predict(instances=[b64(image())])["predictions"][0], target.local)


def test_metadata_describes_the_signatures(client: ServingClient, target: Target) -> None:
    response = client.send("GET", f"/v1/models/{target.model}/metadata")
    body = assert_json(response)
    assert response.status_code == 200
    assert body["model_spec"]["name"] == target.model
    assert body["model_spec"]["version"].isdigit()
    signatures = body["metadata"]["signature_def"]["signature_def"]
    default = signatures["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    assert default["inputs"]["image_bytes"]["tensor_shape"]["dim"][0]["size"] == "-1"
    assert default["outputs"]["probabilities"]["dtype"] == "DT_FLOAT"
    assert default["outputs"]["class_index"]["dtype"] == "DT_INT64"
    assert default["outputs"]["class_name"]["dtype"] == "DT_STRING"
    assert signatures["serving_tf_example"]["inputs"]["examples"]["dtype"] == "DT_STRING"
    classify = signatures["classify"]
    assert classify["method_name"] == "tensorflow/serving/classify"
    assert set(classify["outputs"]) == {"classes", "scores"}


def test_metadata_of_one_version(client: ServingClient, target: Target) -> None:
    version = target.version or int(client.metadata()["model_spec"]["version"])
    response = client.send("GET", f"/v1/models/{target.model}/versions/{version}/metadata")
    assert assert_json(response)["model_spec"]["version"] == str(version)


# ---- predict ----


def test_predict_row_format_b64(client: ServingClient, target: Target) -> None:
    answer = client.predict(instances=[b64(image(seed=1)), b64(image(seed=2))])
    assert set(answer) == {"predictions"}
    assert len(answer["predictions"]) == 2
    for prediction in answer["predictions"]:
        check_prediction(prediction, target.local)


def test_predict_row_format_named_input(client: ServingClient, target: Target) -> None:
    answer = client.predict(instances=[{"image_bytes": b64(image(seed=3))}])
    check_prediction(answer["predictions"][0], target.local)


def test_predict_columnar_format(client: ServingClient, target: Target) -> None:
    images = [b64(image(seed=4)), b64(image(seed=5))]
    named = client.predict(inputs={"image_bytes": images})
    plain = client.predict(inputs=images)
    assert named == plain
    outputs = named["outputs"]
    assert set(outputs) == {"probabilities", "class_index", "class_name"}
    assert len(outputs["probabilities"]) == len(outputs["class_index"]) == 2
    rows = client.predict(instances=images)["predictions"]
    for i, row in enumerate(rows):
        assert row["class_name"] == outputs["class_name"][i]
        assert row["probabilities"] == pytest.approx(outputs["probabilities"][i], abs=1e-6)


def test_predict_with_signature_and_version(client: ServingClient, target: Target) -> None:
    by_name = client.predict(instances=[b64(image(seed=6))], signature_name="serving_default")
    assert by_name == client.predict(instances=[b64(image(seed=6))])
    version = target.version or int(client.metadata()["model_spec"]["version"])
    pinned = ServingClient(target.url, target.model, version=version)
    assert pinned.predict(instances=[b64(image(seed=6))]) == by_name


@pytest.mark.parametrize("image_format", ["jpeg", "png", "gif", "bmp"])
def test_predict_every_supported_format(client: ServingClient, target: Target, image_format):
    answer = client.predict(instances=[b64(image(seed=7, image_format=image_format))])
    check_prediction(answer["predictions"][0], target.local)


def test_predict_tf_example_signature(client: ServingClient, target: Target) -> None:
    from models.examples import make_example

    encoded = image(seed=8)
    example = make_example({"image_raw": encoded}).SerializeToString()
    answer = client.predict(instances=[b64(example)], signature_name="serving_tf_example")
    assert answer == client.predict(instances=[b64(encoded)])


# ---- classify ----


def test_classify_results(client: ServingClient, target: Target) -> None:
    images = [image(seed=10), image(seed=11)]
    answer = client.classify(
        examples=[{"image_raw": b64(data)} for data in images], signature_name="classify"
    )
    assert set(answer) == {"results"}
    predictions = client.predict(instances=[b64(data) for data in images])["predictions"]
    assert len(answer["results"]) == 2
    for result, prediction in zip(answer["results"], predictions, strict=True):
        labels = [label for label, _ in result]
        scores = [score for _, score in result]
        if target.local:
            assert labels == list(CLASS_NAMES)
        assert scores == pytest.approx(prediction["probabilities"], abs=1e-6)
        assert labels[scores.index(max(scores))] == prediction["class_name"]


def test_classify_merges_context_into_examples(client: ServingClient, target: Target) -> None:
    data = image(seed=12)
    with_context = client.classify(
        examples=[{"source": "a"}, {"source": "b"}],
        context={"image_raw": b64(data)},
        signature_name="classify",
    )
    plain = client.classify(examples=[{"image_raw": b64(data)}], signature_name="classify")
    assert with_context["results"] == plain["results"] * 2


# ---- malformed requests ----


def test_empty_body(client: ServingClient) -> None:
    assert_error(post(client, ":predict", b""), 400, "JSON Parse error")


def test_invalid_json(client: ServingClient) -> None:
    assert_error(post(client, ":predict", "instances = [1, 2]"), 400, "JSON Parse error")


def test_json_that_is_not_an_object(client: ServingClient) -> None:
    assert_error(post(client, ":predict", "[1, 2]"), 400)


def test_both_instances_and_inputs(client: ServingClient) -> None:
    data = b64(image())
    body = {"instances": [data], "inputs": [data]}
    assert_error(post(client, ":predict", body), 400, "expecting only one of")


def test_neither_instances_nor_inputs(client: ServingClient) -> None:
    assert_error(post(client, ":predict", {"signature_name": ""}), 400, "Missing 'inputs'")


def test_instances_not_a_list(client: ServingClient) -> None:
    body = {"instances": {"image_bytes": b64(image())}}
    assert_error(post(client, ":predict", body), 400, "to be an list/array")


def test_empty_instances(client: ServingClient) -> None:
    assert_error(post(client, ":predict", {"instances": []}), 400, "No values in 'instances'")


def test_ragged_instances(client: ServingClient) -> None:
    data = b64(image())
    body = {"instances": [[data], [data, data]]}
    assert_error(post(client, ":predict", body), 400, "Expecting tensor size")


def test_ragged_columnar_inputs(client: ServingClient) -> None:
    data = b64(image())
    body = {"inputs": [[data], [data, data]]}
    assert_error(post(client, ":predict", body), 400, "unexpected size")


def test_instance_of_the_wrong_rank(client: ServingClient) -> None:
    assert_error(post(client, ":predict", {"instances": [[b64(image())]]}), 400)


def test_wrong_value_type(client: ServingClient) -> None:
    body = {"instances": [1, 2]}
    assert_error(post(client, ":predict", body), 400, "is not of expected type: string")


def test_unknown_named_input(client: ServingClient) -> None:
    body = {"instances": [{"pixels": b64(image())}]}
    assert_error(post(client, ":predict", body), 400, "does not have named input")


def test_bad_base64(client: ServingClient) -> None:
    body = {"instances": [{"b64": "%%% not base64 %%%"}]}
    assert_error(post(client, ":predict", body), 400, "Unable to base64 decode")


def test_bytes_that_are_not_an_image(client: ServingClient) -> None:
    body = {"instances": [b64(b"these bytes are not an image")]}
    assert_error(post(client, ":predict", body), 400, "image")


def test_non_string_signature_name(client: ServingClient) -> None:
    body = {"signature_name": 100, "instances": [b64(image())]}
    assert_error(post(client, ":predict", body), 400, "'signature_name' key must be a string")


def test_unknown_signature_name(client: ServingClient) -> None:
    body = {"signature_name": "nope", "instances": [b64(image())]}
    assert_error(post(client, ":predict", body), 400, 'Serving signature name: "nope" not found')


def test_unknown_model(client: ServingClient) -> None:
    response = client.send("POST", "/v1/models/no_such_model:predict", json={"instances": [1]})
    assert_error(response, 404, "Servable not found for request: Latest(no_such_model)")
    status = client.send("GET", "/v1/models/no_such_model")
    assert_error(status, 404, "Could not find any versions of model no_such_model")
    metadata = client.send("GET", "/v1/models/no_such_model/metadata")
    assert_error(metadata, 404, "Servable not found")


def test_unknown_version(client: ServingClient) -> None:
    body = {"instances": [b64(image())]}
    assert_error(post(client, "/versions/999:predict", body), 404, "Servable not found")
    status = client.send("GET", f"/v1/models/{client.model}/versions/999")
    assert_error(status, 404, "Could not find version 999")


def test_unknown_label(client: ServingClient, target: Target) -> None:
    body = {"instances": [b64(image())]}
    unrecognized = "Unrecognized servable version label"
    assert_error(post(client, "/labels/no_such_label:predict", body), 400, unrecognized)


def test_status_by_label_lists_every_version(client: ServingClient, target: Target) -> None:
    # get_model_status_impl.cc looks at the version only: a label, known or not, is ignored.
    everything = client.status()
    for label in ("no_such_label", target.label or "x"):
        response = client.send("GET", f"/v1/models/{client.model}/labels/{label}")
        assert response.status_code == 200, response.text
        assert assert_json(response) == everything


def test_version_that_is_not_a_number(client: ServingClient) -> None:
    assert_error(client.send("GET", f"/v1/models/{client.model}/versions/x"), 400, "Malformed")
    body = {"instances": [b64(image())]}
    assert_error(post(client, "/versions/x:predict", body), 400, "Malformed request")


def test_get_on_predict(client: ServingClient) -> None:
    response = client.send("GET", f"/v1/models/{client.model}:predict")
    assert_error(response, 400, "Malformed request: GET")


def test_post_on_metadata(client: ServingClient) -> None:
    assert_error(post(client, "/metadata", {}), 400, "Malformed request: POST")


def test_missing_model_name(client: ServingClient) -> None:
    assert_error(client.send("GET", "/v1/models"), 400, "Missing model name")


def test_classify_with_a_predict_signature(client: ServingClient) -> None:
    # TF Serving's default --enable_signature_method_name_check=false: checked by shape.
    body = {"examples": [{"image_raw": b64(image())}]}
    message = "Expected one or two output Tensors, found 3"
    assert_error(post(client, ":classify", body), 400, message)


def test_classify_without_examples(client: ServingClient) -> None:
    body = {"signature_name": "classify", "context": {}}
    assert_error(post(client, ":classify", body), 400, "'examples' is expected")


def test_classify_with_empty_examples(client: ServingClient) -> None:
    body = {"signature_name": "classify", "examples": []}
    assert_error(post(client, ":classify", body), 400, "empty array")


def test_classify_feature_of_the_wrong_type(client: ServingClient) -> None:
    body = {"signature_name": "classify", "examples": [{"image_raw": 5}]}
    assert_error(post(client, ":classify", body), 400)


def test_classify_mixed_feature_kinds(client: ServingClient) -> None:
    body = {"signature_name": "classify", "examples": [{"image_raw": ["a", 1]}]}
    assert_error(post(client, ":classify", body), 400, "Unexpected element type in feature")


def test_too_large_body(client: ServingClient, target: Target) -> None:
    local_only(target)
    body = {"instances": [{"b64": "A" * MAX_BODY_BYTES}]}
    assert_error(post(client, ":predict", body), 400, "--max-body-bytes")


def test_too_many_instances(client: ServingClient, target: Target) -> None:
    local_only(target)
    data = b64(image(size=8))
    body = {"instances": [data] * (MAX_INSTANCES + 1)}
    assert_error(post(client, ":predict", body), 400, "--max-instances")
    examples = [{"image_raw": data}] * (MAX_INSTANCES + 1)
    classify = {"signature_name": "classify", "examples": examples}
    assert_error(post(client, ":classify", classify), 400, "--max-instances")


def test_a_thousand_instances(client: ServingClient, target: Target) -> None:
    images = [b64(image(seed=i % 8, size=16)) for i in range(1000)]
    predictions = client.predict(instances=images)["predictions"]
    assert len(predictions) == 1000
    assert predictions[8] == predictions[0]
    check_prediction(predictions[999], target.local)


def test_gzip_body(client: ServingClient, target: Target) -> None:
    document = json.dumps({"instances": [b64(image(seed=14))]}).encode()
    response = client.send(
        "POST",
        f"/v1/models/{client.model}:predict",
        content=gzip.compress(document),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == client.predict(instances=[b64(image(seed=14))])


def test_gzip_body_that_does_not_decompress(client: ServingClient) -> None:
    response = client.send(
        "POST",
        f"/v1/models/{client.model}:predict",
        content=b"\x1f\x8b not really gzip",
        headers={"Content-Encoding": "gzip"},
    )
    assert_error(response, 400, "JSON Parse error")


def test_gzip_body_over_the_decompressed_cap(client: ServingClient, target: Target) -> None:
    local_only(target)
    padding = " " * (MAX_DECOMPRESSED_BYTES + 1)
    document = ('{"instances": [' + json.dumps(b64(image())) + "]" + padding + "}").encode()
    response = client.send(
        "POST",
        f"/v1/models/{client.model}:predict",
        content=gzip.compress(document),
        headers={"Content-Encoding": "gzip"},
    )
    assert len(gzip.compress(document)) < MAX_BODY_BYTES
    assert_error(response, 400, "--max-decompressed-bytes")


def test_line_wrapped_base64(client: ServingClient, target: Target) -> None:
    data = image(seed=15)
    wrapped = base64.encodebytes(data).decode()  # 76-column lines, as `base64` and MIME
    assert "\n" in wrapped
    answer = client.predict(instances=[{"b64": wrapped}])
    assert answer == client.predict(instances=[b64(data)])
    spaced = " ".join(base64.b64encode(data).decode()[i : i + 60] for i in range(0, 300, 60))
    spaced += base64.b64encode(data).decode()[300:]
    assert client.predict(instances=[{"b64": spaced}]) == answer


def test_regress_unknown_model(client: ServingClient) -> None:
    body = {"examples": [{"image_raw": b64(image())}]}
    response = client.send("POST", "/v1/models/no_such_model:regress", json=body)
    assert_error(response, 404, "Servable not found for request: Latest(no_such_model)")


def test_regress_with_signatures_that_cannot_regress(client: ServingClient) -> None:
    body = {"examples": [{"image_raw": b64(image())}]}
    # serving_default has three outputs; classify has two (PreProcessRegression's checks).
    assert_error(post(client, ":regress", body), 400, "Expected one output Tensor.")
    body["signature_name"] = "classify"
    assert_error(post(client, ":regress", body), 400, "Expected one output Tensor.")
    body["signature_name"] = "nope"
    assert_error(post(client, ":regress", body), 400, "No signature was found with the name: nope")


def test_regress_parses_the_body_first(client: ServingClient) -> None:
    # The JSON is parsed before the model is looked up, and its message says "classify".
    response = client.send("POST", "/v1/models/no_such_model:regress", json={"x": 1})
    assert_error(response, 400, "When method is classify, key 'examples' is expected")


def test_unknown_path_answers_json(client: ServingClient, target: Target) -> None:
    local_only(target)
    assert_error(client.send("GET", "/v2/models/x"), 404)


def test_prometheus_metrics(client: ServingClient, target: Target) -> None:
    local_only(target)
    # Its own traffic first, so it passes alone as well as after the other tests.
    client.predict(instances=[b64(image(seed=16))])
    assert_error(post(client, ":predict", {"instances": [1]}), 400)
    response = client.send("GET", "/monitoring/prometheus/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    # TF Serving's names and labels (prometheus_exporter.cc, util.cc, http_server.cc).
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert f':tensorflow:serving:request_count{{model_name="{target.model}",status="OK"}} ' in text
    assert (
        f':tensorflow:serving:request_count{{model_name="{target.model}",'
        'status="INVALID_ARGUMENT"} '
    ) in text
    assert "# TYPE :tensorflow:serving:request_latency histogram" in text
    assert (
        f':tensorflow:serving:request_latency_bucket{{model_name="{target.model}",'
        'API="predict",entrypoint="REST",le="10"}'
    ) in text
    assert "# TYPE :tensorflow:serving:model_warmup_latency histogram" in text
    # This server's own series.
    assert "serving_rest_requests_total{" in text
    assert 'serving_rest_errors_total{api="predict",code="INVALID_ARGUMENT"}' in text
    assert "serving_rest_request_latency_seconds_bucket{" in text
    assert f'serving_model_versions{{model="{target.model}",state="AVAILABLE"}} 1.0' in text


def test_server_still_answers_after_malformed_requests(client, target: Target) -> None:
    # Runs last in this module: everything above must have left the server healthy.
    answer = client.predict(instances=[b64(image(seed=13))])
    check_prediction(answer["predictions"][0], target.local)
    if target.server is not None:
        assert target.server.process.poll() is None, target.server.log_tail()
