"""TF Serving's gRPC API through the official stubs (tensorflow_serving.apis.*_pb2_grpc).

Against the conformance suite's server (REST and gRPC on one process, one registry), or, with
TF_SERVING_GRPC=host:port (and TF_SERVING_URL), against a real TF Serving. Every answer is
compared with the REST answer for the same request, and errors carry TF Serving's gRPC codes.
"""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.client import ServingClient, b64
from tests.serving.helpers import Target, image

pytest_plugins = ["tests.serving.helpers"]


@pytest.fixture(scope="module")
def target(serving_target: Target) -> Target:
    if serving_target.grpc is None:
        pytest.skip("no gRPC endpoint (TF_SERVING_GRPC)")
    return serving_target


@pytest.fixture(scope="module")
def channel(target: Target):
    with grpc.insecure_channel(
        target.grpc,
        options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)],
    ) as opened:
        yield opened


@pytest.fixture(scope="module")
def predictions(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def rest(target: Target):
    with ServingClient(target.url, target.model, timeout=60) as client:
        yield client


def predict_request(model: str, images: list[bytes], **spec) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(images))
    return request


def outputs(response) -> dict[str, np.ndarray]:
    return {key: tf.make_ndarray(value) for key, value in response.outputs.items()}


def rpc_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call(request, timeout=60)
    return raised.value


def test_predict_matches_rest(predictions, rest, target: Target) -> None:
    images = [image(seed=21), image(seed=22)]
    response = predictions.Predict(predict_request(target.model, images), timeout=60)
    assert response.model_spec.name == target.model
    assert response.model_spec.signature_name == "serving_default"
    assert response.model_spec.version.value > 0
    got = outputs(response)
    assert set(got) == {"probabilities", "class_index", "class_name"}
    expected = rest.predict(instances=[b64(i) for i in images])["predictions"]
    for row, want in enumerate(expected):
        assert got["class_name"][row].decode() == want["class_name"]
        assert got["class_index"][row] == want["class_index"]
        np.testing.assert_allclose(got["probabilities"][row], want["probabilities"], atol=1e-6)


def test_tf_serving_example_client_logic_prints_the_right_class(
    predictions, rest, target: Target
) -> None:
    """TF Serving's example/resnet_client_grpc.py, its request and its reading of the answer:
    `result.outputs[...].float_val`, then argmax. It needs the typed fields TF Serving fills
    by default (an empty float_val made it fail with "argmax of an empty sequence")."""
    data = image(seed=24)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = target.model
    request.model_spec.signature_name = "serving_default"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([data]))
    result = predictions.Predict(request, 10.0)  # 10 secs timeout, as the example
    probabilities = result.outputs["probabilities"].float_val
    predicted = int(np.argmax(probabilities))
    expected = rest.predict(instances=[b64(data)])["predictions"][0]
    assert predicted == expected["class_index"]
    np.testing.assert_allclose(list(probabilities), expected["probabilities"], atol=1e-6)
    # The other outputs in their typed fields, as Tensor::AsProtoField writes them.
    assert list(result.outputs["class_index"].int64_val) == [expected["class_index"]]
    assert [v.decode() for v in result.outputs["class_name"].string_val] == [expected["class_name"]]
    for name, dims in (("probabilities", [1, 2]), ("class_index", [1]), ("class_name", [1])):
        tensor = result.outputs[name]
        assert tensor.tensor_content == b""
        assert [d.size for d in tensor.tensor_shape.dim] == dims
    assert result.outputs["probabilities"].dtype == tf.float32.as_datatype_enum
    assert result.outputs["class_index"].dtype == tf.int64.as_datatype_enum
    assert result.outputs["class_name"].dtype == tf.string.as_datatype_enum


def test_predict_output_filter_version_and_label(predictions, target: Target) -> None:
    images = [image(seed=23)]
    request = predict_request(target.model, images, signature_name="serving_default")
    request.output_filter.append("class_name")
    assert set(predictions.Predict(request, timeout=60).outputs) == {"class_name"}
    version = predictions.Predict(request, timeout=60).model_spec.version.value
    pinned = predict_request(target.model, images, version=version)
    assert predictions.Predict(pinned, timeout=60).model_spec.version.value == version
    if target.label:
        labelled = predict_request(target.model, images, version_label=target.label)
        assert predictions.Predict(labelled, timeout=60).model_spec.version.value > 0


def test_predict_errors(predictions, target: Target) -> None:
    error = rpc_error(predictions.Predict, predict_request("no_such_model", [image()]))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "Servable not found for request: Latest(no_such_model)" in error.details()

    wrong_input = predict_request(target.model, [image()])
    wrong_input.inputs["pixels"].CopyFrom(tf.make_tensor_proto([1.0]))
    error = rpc_error(predictions.Predict, wrong_input)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input size does not match signature: 2!=1" in error.details()
    assert "Sent extra: {pixels}" in error.details()

    bad_filter = predict_request(target.model, [image()])
    bad_filter.output_filter.append("nope")
    error = rpc_error(predictions.Predict, bad_filter)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "output tensor alias not found in signature: nope" in error.details()

    error = rpc_error(predictions.Predict, predict_request(target.model, [image()], version=999))
    assert error.code() == grpc.StatusCode.NOT_FOUND

    not_an_image = predict_request(target.model, [b"not an image"])
    assert rpc_error(predictions.Predict, not_an_image).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_predict_beyond_grpcs_default_4_mib(predictions, target: Target) -> None:
    # A noise PNG does not compress: ~5 MB in one request, above gRPC's default limit.
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (1300, 1300, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    big = buffer.getvalue()
    assert len(big) > 4 * 1024 * 1024
    response = predictions.Predict(predict_request(target.model, [big]), timeout=120)
    assert outputs(response)["probabilities"].shape[0] == 1


def test_classify_matches_rest(predictions, rest, target: Target) -> None:
    images = [image(seed=24), image(seed=25)]
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = target.model
    request.model_spec.signature_name = "classify"
    for data in images:
        example = request.input.example_list.examples.add()
        example.features.feature["image_raw"].bytes_list.value.append(data)
    response = predictions.Classify(request, timeout=60)
    assert response.model_spec.signature_name == "classify"
    expected = rest.classify(
        examples=[{"image_raw": b64(data)} for data in images], signature_name="classify"
    )["results"]
    got = [
        [[c.label, c.score] for c in classification.classes]
        for classification in response.result.classifications
    ]
    assert [[label for label, _ in row] for row in got] == [
        [label for label, _ in row] for row in expected
    ]
    np.testing.assert_allclose(
        [[s for _, s in row] for row in got], [[s for _, s in row] for row in expected], atol=1e-6
    )
    request.model_spec.signature_name = ""  # serving_default cannot classify
    error = rpc_error(predictions.Classify, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Expected one or two output Tensors, found 3" in error.details()


def test_get_model_metadata(predictions, rest, target: Target) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = target.model
    error = rpc_error(predictions.GetModelMetadata, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "must specify at least one metadata_field" in error.details()
    request.metadata_field.append("signature_def")
    response = predictions.GetModelMetadata(request, timeout=60)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    assert {"serving_default", "serving_tf_example", "classify"} <= set(signatures.signature_def)
    default = signatures.signature_def["serving_default"]
    assert default.inputs["image_bytes"].dtype == tf.string.as_datatype_enum
    assert response.model_spec.version.value == int(rest.metadata()["model_spec"]["version"])


def test_get_model_status(channel, rest, target: Target) -> None:
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = target.model
    response = models.GetModelStatus(request, timeout=60)
    rest_status = rest.status()["model_version_status"]
    assert [str(v.version) for v in response.model_version_status] == [
        v["version"] for v in rest_status
    ]
    states = {v.version: v.state for v in response.model_version_status}
    assert get_model_status_pb2.ModelVersionStatus.AVAILABLE in states.values()
    request.model_spec.name = "no_such_model"
    error = rpc_error(models.GetModelStatus, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "Could not find any versions of model no_such_model" in error.details()
