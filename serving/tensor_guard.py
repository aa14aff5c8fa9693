"""Refuse a request TensorProto whose decoding would allocate far more than the request holds.

A TensorProto states its shape apart from its values, and TensorFlow fills a tensor that
carries fewer values than its shape with copies of the last one (tensor_util.make_ndarray,
as Tensor::FromProto does). So a few bytes saying `dim { size: 2147483648 }` and one
string_val made the server build a 2^31-element array: gigabytes for one request, enough to
take the process (and the machine) down. TF Serving answers such a tensor "tensor parsing
error" (its allocation fails) with INVALID_ARGUMENT; this check answers the same before any
allocation, for every tensor larger than the values it carries and than FILL_LIMIT_BYTES.
"""

from __future__ import annotations

import math

from serving import errors

FILL_LIMIT_BYTES = 64 * 1024 * 1024  # a filled tensor may grow to this; ordinary ones never do
_VALUE_FIELDS = (
    "half_val", "float_val", "double_val", "int_val", "string_val", "scomplex_val",
    "int64_val", "bool_val", "dcomplex_val", "resource_handle_val", "variant_val",
    "uint32_val", "uint64_val", "float8_val",
)  # fmt: skip


def carried_values(proto) -> int:
    """How many values a TensorProto holds in its typed fields (or its content's bytes)."""
    counted = [len(getattr(proto, name)) for name in _VALUE_FIELDS if hasattr(proto, name)]
    return max([len(proto.tensor_content), *counted])


def check_tensor(key: str, proto, item_bytes: int = 8) -> None:
    """INVALID_ARGUMENT unless the tensor's shape is valid and decoding it stays bounded."""
    dims = [d.size for d in proto.tensor_shape.dim]
    if any(size < 0 for size in dims):
        raise errors.invalid_argument(
            f"tensor parsing error: {key} (negative dimension in shape {dims})"
        )
    elements = math.prod(dims)
    if elements > carried_values(proto) and elements * item_bytes > FILL_LIMIT_BYTES:
        raise errors.invalid_argument(
            f"tensor parsing error: {key} (shape {dims} is {elements} elements but the "
            f"request carries {carried_values(proto)} values; refused rather than filled)"
        )
