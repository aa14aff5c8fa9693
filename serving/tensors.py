"""numpy arrays <-> TensorProtos, in the two encodings TF Serving writes.

TF Serving's Predict answers with the typed repeated fields (`float_val`, `int64_val`,
`string_val`, ...: Tensor::AsProtoField, PredictResponseTensorSerializationOption::kAsProtoField
in servables/tensorflow/predict_util.cc) unless the server runs with
--enable_serialization_as_tensor_content, which switches to Tensor::AsProtoTensorContent: the
raw little-endian bytes in `tensor_content`, strings included (port::EncodeStringList: every
length as a varint32, then the bytes). `tf.make_tensor_proto` does neither exactly (it packs
numbers into tensor_content and strings into string_val), hence this module. `to_ndarray`
reads every encoding, string tensor_content included, which `tf.make_ndarray` cannot.
"""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

# numpy dtype -> (DataType, typed field, how values go into it)
_TYPED = {
    np.dtype(np.float32): (types_pb2.DT_FLOAT, "float_val"),
    np.dtype(np.float64): (types_pb2.DT_DOUBLE, "double_val"),
    np.dtype(np.int32): (types_pb2.DT_INT32, "int_val"),
    np.dtype(np.int16): (types_pb2.DT_INT16, "int_val"),
    np.dtype(np.int8): (types_pb2.DT_INT8, "int_val"),
    np.dtype(np.uint8): (types_pb2.DT_UINT8, "int_val"),
    np.dtype(np.uint16): (types_pb2.DT_UINT16, "int_val"),
    np.dtype(np.int64): (types_pb2.DT_INT64, "int64_val"),
    np.dtype(np.uint32): (types_pb2.DT_UINT32, "uint32_val"),
    np.dtype(np.uint64): (types_pb2.DT_UINT64, "uint64_val"),
    np.dtype(np.bool_): (types_pb2.DT_BOOL, "bool_val"),
    np.dtype(np.float16): (types_pb2.DT_HALF, "half_val"),
    np.dtype(np.complex64): (types_pb2.DT_COMPLEX64, "scomplex_val"),
    np.dtype(np.complex128): (types_pb2.DT_COMPLEX128, "dcomplex_val"),
}


def _shape(array: np.ndarray) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in array.shape]
    )


def _is_string(array: np.ndarray) -> bool:
    return array.dtype.kind in "OSU"


def _as_bytes(value) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def as_proto_field(array: np.ndarray) -> tensor_pb2.TensorProto:
    """Tensor::AsProtoField: dtype, shape and every value in the dtype's typed field."""
    array = np.asarray(array)
    proto = tensor_pb2.TensorProto(tensor_shape=_shape(array))
    flat = array.reshape(-1)
    if _is_string(array):
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(_as_bytes(value) for value in flat)
        return proto
    if array.dtype not in _TYPED:
        raise TypeError(f"no TensorProto field for dtype {array.dtype}")
    proto.dtype, field = _TYPED[array.dtype]
    if field == "half_val":  # the 16 bits of each half, as TF stores them
        values = flat.view(np.uint16).tolist()
    elif field in ("scomplex_val", "dcomplex_val"):  # real, imaginary, real, ...
        values = np.stack([flat.real, flat.imag], axis=-1).reshape(-1).tolist()
    else:
        values = flat.tolist()
    getattr(proto, field).extend(values)
    return proto


def as_tensor_content(array: np.ndarray) -> tensor_pb2.TensorProto:
    """Tensor::AsProtoTensorContent: dtype, shape and the raw bytes in tensor_content."""
    array = np.asarray(array)
    proto = tensor_pb2.TensorProto(tensor_shape=_shape(array))
    if _is_string(array):
        proto.dtype = types_pb2.DT_STRING
        values = [_as_bytes(value) for value in array.reshape(-1)]
        proto.tensor_content = b"".join(map(_varint, map(len, values))) + b"".join(values)
        return proto
    if array.dtype not in _TYPED:
        raise TypeError(f"no TensorProto dtype for {array.dtype}")
    proto.dtype = _TYPED[array.dtype][0]
    proto.tensor_content = np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()
    return proto


def for_request(array: np.ndarray) -> tensor_pb2.TensorProto:
    """A request input as clients send it: strings in string_val, numbers packed."""
    return as_proto_field(array) if _is_string(np.asarray(array)) else as_tensor_content(array)


def encoder(tensor_content: bool):
    """The response encoding of a server started with or without the flag."""
    return as_tensor_content if tensor_content else as_proto_field


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(data):
            raise ValueError("truncated string tensor_content")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7


def to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """A TensorProto in any encoding as a numpy array (strings: an object array of bytes).

    Raises ValueError for a proto whose values do not fit its shape or dtype."""
    shape = tuple(dim.size for dim in proto.tensor_shape.dim)
    count = int(np.prod(shape, dtype=np.int64))
    if proto.dtype == types_pb2.DT_STRING:
        if proto.tensor_content:
            data, position, lengths = proto.tensor_content, 0, []
            for _ in range(count):
                length, position = _read_varint(data, position)
                lengths.append(length)
            values = []
            for length in lengths:
                values.append(data[position : position + length])
                position += length
            if position != len(data):
                raise ValueError("string tensor_content does not match the shape")
        else:
            values = list(proto.string_val)
            if len(values) == 1 and count > 1:
                values = values * count
        array = np.empty(len(values), dtype=object)
        array[:] = values
        if array.size != count:
            raise ValueError(f"{array.size} values for shape {list(shape)}")
        return array.reshape(shape)
    import tensorflow as tf  # the numeric encodings, with TF's own reader

    return tf.make_ndarray(proto)
