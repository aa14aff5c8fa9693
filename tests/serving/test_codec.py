"""JSON <-> tensor rules that the exported model cannot exercise end to end.

The conformance suite covers what the project's model answers; these cases cover the rest of
TF Serving's JSON mapping (numeric dtypes, `_bytes` outputs, NaN, multi-input row checks).
"""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import pytest
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import classification_pb2

from serving import codec, errors, prediction
from serving.savedmodel import TensorSpec

FLOATS = {"x": TensorSpec("DT_FLOAT", (-1, 2))}
TWO_INPUTS = {"tag": TensorSpec("DT_STRING", (-1,)), "signal": TensorSpec("DT_INT64", (-1, 3))}


def error_of(call, *args) -> errors.ServingError:
    with pytest.raises(errors.ServingError) as caught:
        call(*args)
    return caught.value


def test_row_format_builds_one_batched_tensor_per_input() -> None:
    parsed = codec.parse_predict(
        {"instances": [{"tag": "a", "signal": [1, 2, 3]}, {"tag": "b", "signal": [4, 5, 6]}]},
        TWO_INPUTS,
    )
    assert parsed.format == codec.ROW and parsed.batch_size == 2
    assert parsed.tensors["tag"].tolist() == [b"a", b"b"]
    assert parsed.tensors["signal"].dtype == np.int64
    assert parsed.tensors["signal"].tolist() == [[1, 2, 3], [4, 5, 6]]


def test_row_format_requires_every_named_input() -> None:
    error = error_of(codec.parse_predict, {"instances": [{"tag": "a"}]}, TWO_INPUTS)
    assert error.code is errors.Code.INVALID_ARGUMENT
    assert "keys must be equal to: signal,tag" in error.message
    plain = error_of(codec.parse_predict, {"instances": ["a"]}, TWO_INPUTS)
    assert "instances is a plain list" in plain.message


def test_columnar_inputs_may_differ_in_batch_size() -> None:
    parsed = codec.parse_predict({"inputs": {"tag": ["a"], "signal": [[1, 2, 3]] * 3}}, TWO_INPUTS)
    assert parsed.format == codec.COLUMNAR
    assert parsed.tensors["signal"].shape == (3, 3)
    missing = error_of(codec.parse_predict, {"inputs": {"tag": ["a"]}}, TWO_INPUTS)
    assert missing.message == "Missing named input: signal in 'inputs' object."


@pytest.mark.parametrize(
    ("dtype", "value", "ok"),
    [
        ("DT_FLOAT", 1, True),
        ("DT_FLOAT", 1.5, True),
        ("DT_FLOAT", True, False),
        ("DT_FLOAT", "1", False),
        ("DT_INT32", 2**31, False),
        ("DT_INT32", 1.0, False),
        ("DT_UINT8", -1, False),
        ("DT_INT64", 2**63 - 1, True),
        ("DT_BOOL", 1, False),
        ("DT_BOOL", False, True),
        ("DT_STRING", "text", True),
        ("DT_STRING", 1, False),
    ],
)
def test_value_types_follow_tf_servings_table(dtype: str, value, ok: bool) -> None:
    specs = {"x": TensorSpec(dtype, (-1,))}
    if ok:
        assert codec.parse_predict({"instances": [value]}, specs).tensors["x"].shape == (1,)
    else:
        message = error_of(codec.parse_predict, {"instances": [value]}, specs).message
        assert "is not of expected type" in message


def test_unsupported_dtype_is_unimplemented() -> None:
    specs = {"x": TensorSpec("DT_HALF", (-1,))}
    assert error_of(codec.parse_predict, {"inputs": [1.0]}, specs).http_status == 501
    # As in TF Serving, the row format wraps every element error as an invalid argument.
    assert error_of(codec.parse_predict, {"instances": [1.0]}, specs).http_status == 400


def test_values_must_sit_at_the_leaf_level() -> None:
    error = error_of(codec.parse_predict, {"inputs": [[1.0, 2.0], 3.0]}, FLOATS)
    assert "found at incorrect level" in error.message or "unexpected" in error.message


def test_nan_and_infinity_tokens_are_accepted_and_written_back() -> None:
    document = codec.parse_json(b'{"inputs": [[NaN, Infinity]]}')
    tensor = codec.parse_predict(document, FLOATS).tensors["x"]
    assert math.isnan(tensor[0, 0]) and tensor[0, 1] == math.inf
    written = codec.dumps(codec.encode_predict({"y": tensor}, codec.COLUMNAR))
    assert written == b'{"outputs":[[NaN,Infinity]]}'


def test_float32_outputs_are_written_in_shortest_form() -> None:
    outputs = {"p": np.array([[0.8, 0.2]], dtype=np.float32)}
    assert codec.encode_predict(outputs, codec.ROW) == {"predictions": [[0.8, 0.2]]}


def test_outputs_named_bytes_are_base64_objects() -> None:
    outputs = {
        "thumbnail_bytes": np.array([b"\xff\xd8raw"], dtype=object),
        "label": np.array([b"cat"], dtype=object),
    }
    rows = codec.encode_predict(outputs, codec.ROW)["predictions"]
    assert rows == [
        {"thumbnail_bytes": {"b64": base64.b64encode(b"\xff\xd8raw").decode()}, "label": "cat"}
    ]
    columns = codec.encode_predict(outputs, codec.COLUMNAR)["outputs"]
    assert columns["label"] == ["cat"]


def test_row_outputs_must_share_the_batch_size() -> None:
    outputs = {"a": np.zeros((2, 1), np.float32), "b": np.zeros((3,), np.int64)}
    assert "inconsistent batch size" in error_of(codec.encode_predict, outputs, codec.ROW).message


def test_classify_examples_get_the_context_features() -> None:
    request_input = codec.parse_classify(
        {"context": {"shared": [1, 2]}, "examples": [{"image": {"b64": "aGk="}, "w": 0.5}]}
    )
    serialized = prediction.examples(request_input)  # what the model is fed
    example = example_pb2.Example.FromString(serialized[0])
    features = example.features.feature
    assert list(features["shared"].int64_list.value) == [1, 2]
    assert list(features["image"].bytes_list.value) == [b"hi"]
    assert list(features["w"].float_list.value) == [0.5]


def test_classify_feature_values_follow_tf_servings_rules() -> None:
    for bad, fragment in [
        ({"f": None}, "unexpected JSON type: Null"),
        ({"f": [[1]]}, "unexpected JSON type: Array"),
        ({"f": {"x": 1}}, "unexpected JSON type: Object"),
        ({"f": [1, 1.5]}, "expecting type: int64"),
        ({"f": 2**64 - 1}, "Only int64_t is supported"),
    ]:
        message = error_of(codec.parse_classify, {"examples": [bad]}).message
        assert fragment in message, (bad, message)


def test_classify_results_pair_labels_with_scores() -> None:
    classes = np.array([[b"a", b"b"]], dtype=object)
    scores = np.array([[0.25, 0.75]], dtype=np.float32)
    assert classify_json(classes, scores) == {"results": [[["a", 0.25], ["b", 0.75]]]}
    assert classify_json(None, scores) == {"results": [[["", 0.25], ["", 0.75]]]}


def classify_json(classes, scores) -> dict:
    """Model outputs -> ClassificationResult (the shared implementation) -> REST JSON."""
    outputs = {"classes": classes, "scores": scores}
    result = classification_pb2.ClassificationResult()
    prediction.classification_result({k: v for k, v in outputs.items() if v is not None}, 1, result)
    return codec.classify_json(result)


def test_error_messages_do_not_echo_huge_values() -> None:
    message = error_of(codec.parse_json, json.dumps(["x" * 100_000]).encode()).message
    assert len(message) < 400


def test_base64_padding_is_optional_and_garbage_is_refused() -> None:
    assert codec.decode_b64("aGk=") == codec.decode_b64("aGk") == b"hi"
    assert error_of(codec.decode_b64, "a$b").message == "Unable to base64 decode"


@pytest.mark.parametrize(
    ("text", "decoded"),
    [
        ("aGk=", b"hi"),
        ("aGk", b"hi"),  # no padding
        ("aGk.", b"hi"),  # '.' pads too (an Abseil extension)
        ("aG\nk=\r\n", b"hi"),  # line-wrapped, as `base64` and MIME encoders write it
        (" a G k = ", b"hi"),
        ("aGVsbG8gd29ybGQ=\n", b"hello world"),
        ("aGk==", None),  # too much padding
        ("aGVsbA=", None),  # too little (0 or exactly the expected count)
        ("aGVsb", None),  # one leftover character
        ("aGk=aGk=", None),  # data after the padding
        ("aGk\u00a0", None),  # non-ASCII space is not whitespace to absl
        ("aG-k", None),  # web-safe alphabet is another function
    ],
)
def test_base64_as_absl_unescapes_it(text: str, decoded: bytes | None) -> None:
    if decoded is None:
        assert error_of(codec.decode_b64, text).message == "Unable to base64 decode"
    else:
        assert codec.decode_b64(text) == decoded
