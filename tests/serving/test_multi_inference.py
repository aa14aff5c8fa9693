"""PredictionService.MultiInference, case by case as TF Serving's multi_inference_test.cc.

Against our server over a half_plus_two-shaped fixture SavedModel (the pushed model has no
regress signature): the same requests, the same expected responses (compared as whole protos)
and the same status codes and message fragments as TF Serving's own test.
"""

from __future__ import annotations

import grpc
import pytest
from tensorflow_serving.apis import inference_pb2, prediction_service_pb2_grpc

from tests.serving.helpers import HALF_PLUS_TWO

pytest_plugins = ["tests.serving.helpers"]

REGRESS = "tensorflow/serving/regress"
CLASSIFY = "tensorflow/serving/classify"
PREDICT = "tensorflow/serving/predict"


@pytest.fixture(scope="module")
def stub(batching_server):
    with grpc.insecure_channel(batching_server.grpc_target) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def request_for(*tasks: tuple[str, str], xs=(2.0,), model: str = HALF_PLUS_TWO):
    """AddInput + PopulateTask of multi_inference_test.cc: examples with feature x."""
    request = inference_pb2.MultiInferenceRequest()
    for x in xs:
        example = request.input.example_list.examples.add()
        example.features.feature["x"].float_list.value.append(x)
    for signature, method in tasks:
        task = request.tasks.add()
        task.model_spec.name = model
        task.model_spec.signature_name = signature
        task.method_name = method
    return request


def expected(request, version: int, *results) -> inference_pb2.MultiInferenceResponse:
    """The expected response: per task, its model spec with the version, and its result."""
    response = inference_pb2.MultiInferenceResponse()
    for task, (kind, values) in zip(request.tasks, results, strict=True):
        result = response.results.add()
        result.model_spec.CopyFrom(task.model_spec)
        result.model_spec.version.value = version
        if kind == "regression":
            for value in values:
                result.regression_result.regressions.add(value=value)
        else:
            for value in values:
                result.classification_result.classifications.add().classes.add(score=value)
    return response


def error_of(stub, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        stub.MultiInference(request, timeout=60)
    return raised.value


def version_of(stub) -> int:
    request = request_for(("regress_x_to_y", REGRESS))
    return stub.MultiInference(request, timeout=60).results[0].model_spec.version.value


def test_missing_input(stub) -> None:
    request = request_for(("regress_x_to_y", REGRESS), xs=())
    error = error_of(stub, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Input is empty" in error.details()


def test_undefined_signature(stub) -> None:
    error = error_of(stub, request_for(("ThisSignatureDoesNotExist", REGRESS)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "signature not found" in error.details()


def test_inconsistent_model_specs(stub) -> None:
    request = request_for(("regress_x_to_y", REGRESS))
    task = request.tasks.add(method_name=REGRESS)
    task.model_spec.name = "ModelDoesNotExist"
    task.model_spec.signature_name = "regress_x_to_y"
    error = error_of(stub, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "must access the same model name" in error.details()


def test_duplicate_signatures(stub) -> None:
    request = request_for(("regress_x_to_y", REGRESS), ("regress_x_to_y", REGRESS))
    error = error_of(stub, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Duplicate evaluation of signature: regress_x_to_y" in error.details()


def test_unsupported_signature_type(stub) -> None:
    error = error_of(stub, request_for(("serving_default", PREDICT)))
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "Unsupported signature" in error.details()


def test_empty_model_names(stub) -> None:
    # No task (GetModelSpecFromRequest's default ModelSpec) and a nameless second task.
    error = error_of(stub, inference_pb2.MultiInferenceRequest())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ModelSpec has no name specified." in error.details()
    request = request_for(("regress_x_to_y", REGRESS))
    request.tasks.add(method_name=REGRESS).model_spec.signature_name = "regress_x_to_y2"
    error = error_of(stub, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Found ModelSpec with an empty model name." in error.details()


def test_valid_single_signature(stub) -> None:
    request = request_for(("regress_x_to_y", REGRESS))
    response = stub.MultiInference(request, timeout=60)
    assert response == expected(request, version_of(stub), ("regression", [3.0]))


def test_multiple_valid_regress_signatures(stub) -> None:
    request = request_for(("regress_x_to_y", REGRESS), ("regress_x_to_y2", REGRESS))
    response = stub.MultiInference(request, timeout=60)
    assert response == expected(
        request, version_of(stub), ("regression", [3.0]), ("regression", [4.0])
    )


def test_regress_and_classify_signatures(stub) -> None:
    request = request_for(("regress_x_to_y", REGRESS), ("classify_x_to_y", CLASSIFY))
    response = stub.MultiInference(request, timeout=60)
    assert response == expected(
        request, version_of(stub), ("regression", [3.0]), ("classification", [3.0])
    )


def test_examples_and_context_are_shared_across_tasks(stub) -> None:
    """Every task runs on the same examples (the context merged into each), in order."""
    request = request_for(("classify_x_to_y", CLASSIFY), ("regress_x_to_y2", REGRESS), xs=())
    listed = request.input.example_list_with_context
    listed.context.features.feature["unused"].int64_list.value.append(7)
    for x in (2.0, 4.0, 6.0):
        listed.examples.add().features.feature["x"].float_list.value.append(x)
    response = stub.MultiInference(request, timeout=60)
    assert response == expected(
        request,
        version_of(stub),
        ("classification", [3.0, 4.0, 5.0]),
        ("regression", [4.0, 5.0, 6.0]),
    )
    # An empty signature name means serving_default: a Predict signature, so refused.
    request = request_for(("", REGRESS))
    error = error_of(stub, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
