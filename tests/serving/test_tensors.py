"""TensorProto encodings: TF Serving's typed fields (default) and tensor_content (its
--enable_serialization_as_tensor_content), checked against TensorFlow's own readers/writers."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2

from serving import tensors

ARRAYS = [
    np.array([[0.25, 0.75], [1.0, 0.0]], np.float32),
    np.array([1.5, -2.0], np.float64),
    np.array([[1, -2, 3]], np.int32),
    np.array([7, 2**40], np.int64),
    np.array([0, 255], np.uint8),
    np.array([True, False]),
    np.array([0.5, -1.0], np.float16),
    np.array([1 + 2j], np.complex64),
    np.float32(3.5).reshape(()),
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{list(a.shape)}")
def test_typed_fields_hold_every_value(array: np.ndarray) -> None:
    proto = tensors.as_proto_field(array)
    assert proto.tensor_content == b""
    assert proto.dtype == tf.as_dtype(array.dtype).as_datatype_enum
    assert [d.size for d in proto.tensor_shape.dim] == list(array.shape)
    np.testing.assert_array_equal(tf.make_ndarray(proto), array)
    np.testing.assert_array_equal(tensors.to_ndarray(proto), array)


def test_typed_field_names_are_the_ones_clients_read() -> None:
    assert list(tensors.as_proto_field(np.array([0.5], np.float32)).float_val) == [0.5]
    assert list(tensors.as_proto_field(np.array([3], np.int64)).int64_val) == [3]
    assert list(tensors.as_proto_field(np.array([3], np.int32)).int_val) == [3]
    strings = np.array([b"hot_dog", b"x"], dtype=object)
    assert list(tensors.as_proto_field(strings).string_val) == [b"hot_dog", b"x"]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{list(a.shape)}")
def test_tensor_content_is_tensorflows_own_encoding(array: np.ndarray) -> None:
    """Tensor::AsProtoTensorContent, as tf.io.serialize_tensor writes it for numbers."""
    ours = tensors.as_tensor_content(array)
    theirs = tensor_pb2.TensorProto.FromString(tf.io.serialize_tensor(array).numpy())
    assert ours == theirs
    np.testing.assert_array_equal(tensors.to_ndarray(ours), array)


def test_string_tensor_content_is_encode_string_list() -> None:
    """port::EncodeStringList: the lengths as varints, then the bytes."""
    values = np.array([b"a", b"bc", b"\x00" * 200], dtype=object)
    proto = tensors.as_tensor_content(values)
    assert proto.tensor_content == b"\x01\x02\xc8\x01abc" + b"\x00" * 200
    assert tensors.to_ndarray(proto).tolist() == values.tolist()
    truncated = tensor_pb2.TensorProto()
    truncated.CopyFrom(proto)
    truncated.tensor_content = proto.tensor_content[:-3]
    with pytest.raises(ValueError):
        tensors.to_ndarray(truncated)


def test_a_request_tensor_is_read_in_any_encoding() -> None:
    images = [b"\xff\xd8 jpeg \x00", b"png\x00"]
    for proto in (
        tf.make_tensor_proto(images),
        tensors.as_tensor_content(np.array(images, object)),
    ):
        assert tensors.to_ndarray(proto).tolist() == images
