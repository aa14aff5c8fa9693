"""JSON <-> TF Serving's protos, by the rules of its REST API (util/json_tensor.cc).

Requests: `instances` (row format) or `inputs` (columnar format) become numpy arrays of the
signature's dtypes (the REST handler puts them in a PredictRequest), with the same checks and
error messages as TF Serving (dense shapes only, values at the leaf level, `{"b64": ...}` for
binary strings); `examples` and `context` of a Classify or Regress request become its Input
proto. Responses are printed from the response protos: `predictions` / `outputs`, Classify and
Regress `results`, model status and metadata; string outputs whose name ends in `_bytes` are
written as `{"b64": ...}`, floats in their shortest round-trip form, NaN and Infinity as the
bare tokens TF Serving uses.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf import json_format
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    input_pb2,
    regression_pb2,
)

from serving import errors, tensors
from serving.savedmodel import TensorSpec

ROW = "row"
COLUMNAR = "columnar"
B64 = "b64"
BYTES_SUFFIX = "_bytes"

_INT_RANGES = {
    "DT_INT8": (np.int8, -(2**7), 2**7 - 1),
    "DT_UINT8": (np.uint8, 0, 2**8 - 1),
    "DT_INT16": (np.int16, -(2**15), 2**15 - 1),
    "DT_INT32": (np.int32, -(2**31), 2**31 - 1),
    "DT_INT64": (np.int64, -(2**63), 2**63 - 1),
    "DT_UINT32": (np.uint32, 0, 2**32 - 1),
    "DT_UINT64": (np.uint64, 0, 2**64 - 1),
}
_FLOATS = {"DT_FLOAT": np.float32, "DT_DOUBLE": np.float64}
_MAX_ERROR_VALUE_CHARS = 200


@dataclass(frozen=True)
class PredictInputs:
    tensors: dict[str, np.ndarray]
    format: str  # ROW or COLUMNAR: the response mirrors it
    batch_size: int


# ---- parsing ----


def parse_json(body: bytes) -> dict:
    """The request document; TF Serving's messages for an empty or malformed body."""
    if not body.strip():
        raise errors.invalid_argument("JSON Parse error: The document is empty")
    try:
        # Python's json accepts NaN / Infinity / -Infinity, as TF Serving's parser does.
        doc = json.loads(body)
    except json.JSONDecodeError as exc:
        raise errors.invalid_argument(f"JSON Parse error: {exc.msg} at offset: {exc.pos}") from None
    except (UnicodeDecodeError, RecursionError) as exc:
        raise errors.invalid_argument(f"JSON Parse error: {exc}") from None
    if not isinstance(doc, dict):
        raise errors.invalid_argument(f"JSON Value: {_show(doc)} Is not object")
    return doc


def signature_name(doc: Mapping[str, Any]) -> str:
    """The optional `signature_name`; '' means the default signature."""
    value = doc.get("signature_name", "")
    if not isinstance(value, str):
        raise errors.invalid_argument(
            f"JSON Value: {_show(doc)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return value


def parse_predict(doc: Mapping[str, Any], specs: Mapping[str, TensorSpec]) -> PredictInputs:
    """Input tensors of a Predict request, checked against the signature's inputs."""
    if not specs:
        raise errors.invalid_argument("Failed to get input map for signature")
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise errors.invalid_argument(
            f"JSON Value: {_show(doc)} Not formatted correctly expecting only one of 'inputs' "
            "or 'instances' keys to exist "
        )
    try:
        if has_instances:
            instances = _json_array(
                doc,
                "instances",
                "Expecting 'instances' to be an list/array",
                "No values in 'instances' array",
            )
            return PredictInputs(_from_instances(instances, specs), ROW, len(instances))
        if has_inputs:
            tensors = _from_inputs(doc["inputs"], specs)
            batch = max((t.shape[0] if t.ndim else 1) for t in tensors.values())
            return PredictInputs(tensors, COLUMNAR, batch)
    except RecursionError:
        raise errors.invalid_argument("JSON Value nested too deeply") from None
    raise errors.invalid_argument("Missing 'inputs' or 'instances' key")


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(B64), str)


def _is_element_object(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64(value)


def _from_instances(instances: list, specs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    if not isinstance(instances[0], dict) and len(specs) > 1:
        raise errors.invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )
    objects = _is_element_object(instances[0])
    names = set(specs)
    values: dict[str, list] = {}
    shapes: dict[str, tuple[int, ...]] = {}

    def add(item: Any, name: str) -> None:
        if name not in specs:
            raise errors.invalid_argument(f"JSON object: does not have named input: {name}")
        shape, flat = _dense(item, specs[name].dtype)
        if name not in shapes:
            shapes[name] = shape
        elif _size(shapes[name]) != _size(shape):
            raise errors.invalid_argument(
                f"Expecting tensor size: {_size(shapes[name])} but got: {_size(shape)}"
            )
        elif shapes[name] != shape:
            raise errors.invalid_argument(
                f"Expecting shape {_shape_str(shapes[name])} but got: {_shape_str(shape)}"
            )
        values.setdefault(name, []).extend(flat)

    for index, element in enumerate(instances):
        if objects:
            if not _is_element_object(element):
                raise errors.invalid_argument(
                    f"Expecting object but got list at item {index} of input list"
                )
            for name, item in element.items():
                try:
                    add(item, name)
                except errors.ServingError as exc:
                    raise errors.invalid_argument(
                        f"Failed to process element: {index} key: {name} of 'instances' list. "
                        f"Error: {exc.code.name}: {exc.message}"
                    ) from None
            if set(element) != names:
                raise errors.invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{_show(element)} keys must be equal to: {','.join(sorted(names))}"
                )
        else:
            if _is_element_object(element):
                raise errors.invalid_argument(
                    f"Expecting value/list but got object at item {index} of input list"
                )
            try:
                add(element, next(iter(specs)))
            except errors.ServingError as exc:
                raise errors.invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. "
                    f"Error: {exc.code.name}: {exc.message}"
                ) from None
    return {
        name: _array(values[name], (len(instances), *shapes[name]), specs[name].dtype)
        for name in values
    }


def _from_inputs(value: Any, specs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    if not isinstance(value, dict) or _is_b64(value):
        if len(specs) > 1:
            raise errors.invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        items = {next(iter(specs)): value}
    else:
        items = {}
        for name in specs:
            if name not in value:
                raise errors.invalid_argument(f"Missing named input: {name} in 'inputs' object.")
            items[name] = value[name]
    tensors = {}
    for name, item in items.items():
        shape, flat = _dense(item, specs[name].dtype)
        tensors[name] = _array(flat, shape, specs[name].dtype)
    return tensors


def _dense(value: Any, dtype: str) -> tuple[tuple[int, ...], list]:
    """Shape (from the first element at each level) and flat values of a nested JSON list."""
    shape = []
    probe = value
    while isinstance(probe, list):
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    flat: list = []
    _fill(value, 0, tuple(shape), dtype, flat)
    return tuple(shape), flat


def _fill(value: Any, level: int, shape: tuple[int, ...], dtype: str, out: list) -> None:
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise errors.invalid_argument(
                f"JSON Value: {_show(value)} found at incorrect level: {level + 1} in the JSON "
                f"DOM. Expected at level: {rank}"
            )
        out.append(_leaf(value, dtype))
        return
    if level >= rank:
        raise errors.invalid_argument(
            f"Encountered list at unexpected level: {level} expected < {rank}"
        )
    if len(value) != shape[level]:
        raise errors.invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {shape[level]}"
        )
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def _leaf(value: Any, dtype: str) -> Any:
    """One JSON scalar as a value of `dtype` (TF Serving's AddValueToTensor)."""
    if isinstance(value, dict):
        if dtype != "DT_STRING":
            raise _type_error(value, dtype)
        if not _is_b64(value):
            raise errors.invalid_argument(
                f"JSON Value: {_show(value)} not formatted correctly for base64 data"
            )
        return decode_b64(value[B64])
    if dtype == "DT_STRING":
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        return value.encode("utf-8")
    if dtype == "DT_BOOL":
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    if dtype in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _type_error(value, dtype)
        return value
    if dtype in _INT_RANGES:
        _, low, high = _INT_RANGES[dtype]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _type_error(value, dtype)
        return value
    raise errors.ServingError(
        errors.Code.UNIMPLEMENTED,
        f"Conversion of JSON Value: {_show(value)} to type: {_dtype_string(dtype)}",
    )


# absl::Base64Unescape (absl/strings/escaping.cc, Base64UnescapeInternal), which TF Serving's
# json_tensor.cc calls: ASCII whitespace is skipped anywhere, so line-wrapped base64 (`base64`
# without -w0, Python's encodebytes, Java's MIME encoder) decodes; the padding is either absent
# or exactly right, and '.' counts as a padding character (an Abseil extension); one leftover
# character, or anything after the padding, is an error.
_WHITESPACE = re.compile(r"[ \t\n\v\f\r]+")
_BASE64 = re.compile(r"([A-Za-z0-9+/]*)([=.]*)")
_EXPECTED_PADDING = {0: 0, 2: 2, 3: 1}


def decode_b64(text: str) -> bytes:
    """Standard base64 with absl::Base64Unescape's rules (see above)."""
    match = _BASE64.fullmatch(_WHITESPACE.sub("", text))
    if match is not None:
        data, padding = match.groups()
        expected = _EXPECTED_PADDING.get(len(data) % 4)
        if expected is not None and len(padding) in (0, expected):
            return base64.b64decode(data + "=" * (-len(data) % 4))
    raise errors.invalid_argument("Unable to base64 decode")


def bytes_array(values: list[bytes]) -> np.ndarray:
    """A 1-D object array of byte strings: np.array would make a fixed-width `S` array and
    strip trailing NUL bytes, which serialized protos and images can end with."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _array(flat: list, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    if dtype == "DT_STRING":
        return bytes_array(flat).reshape(shape)
    if dtype == "DT_BOOL":
        numpy_dtype = np.bool_
    elif dtype in _FLOATS:
        numpy_dtype = _FLOATS[dtype]
    else:
        numpy_dtype = _INT_RANGES[dtype][0]
    return np.array(flat, dtype=numpy_dtype).reshape(shape)


# ---- Classify ----


def _json_array(doc: Mapping[str, Any], key: str, not_an_array: str, empty: str) -> list:
    """doc[key] as a non-empty JSON array; otherwise TF Serving's message for this API."""
    value = doc[key]
    if not isinstance(value, list):
        raise errors.invalid_argument(f"JSON Value: {_show(doc)} {not_an_array}")
    if not value:
        raise errors.invalid_argument(f"JSON Value: {_show(doc)} {empty}")
    return value


def parse_classify(doc: Mapping[str, Any]) -> input_pb2.Input:
    """The Input of a Classify or Regress request (FillClassificationRequestFromJson): an
    ExampleList, or an ExampleListWithContext when the request has a `context`."""
    context = _example(doc["context"]) if "context" in doc else None
    if "examples" not in doc:
        raise errors.invalid_argument(
            f"JSON Value: {_show(doc)} When method is classify, key 'examples' is expected and "
            "was not found"
        )
    examples = _json_array(
        doc,
        "examples",
        "Expecting 'examples' value to be an list/array",
        "'examples' value is an empty array",
    )
    parsed = [_example(example) for example in examples]
    request_input = input_pb2.Input()
    if context is None:
        request_input.example_list.examples.extend(parsed)
    else:
        request_input.example_list_with_context.context.CopyFrom(context)
        request_input.example_list_with_context.examples.extend(parsed)
    return request_input


def _example(value: Any) -> example_pb2.Example:
    if not isinstance(value, dict):
        raise errors.invalid_argument(
            f"Example must be JSON object but got JSON {_json_type(value)}"
        )
    example = example_pb2.Example()
    for name, content in value.items():
        feature = example.features.feature[name]
        for item in content if isinstance(content, list) else [content]:
            _add_feature_value(item, name, feature)
    return example


_FEATURE_KINDS = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}


def _add_feature_value(value: Any, name: str, feature: example_pb2.Feature) -> None:
    """One JSON value into a tf.Example feature (TF Serving's AddValueToFeature)."""
    if value is None or isinstance(value, list) or (isinstance(value, dict) and not _is_b64(value)):
        raise errors.invalid_argument(
            f"Feature: {name} has element with unexpected JSON type: {_json_type(value)}"
        )
    if isinstance(value, bool):
        kind, item = "int64_list", int(value)
    elif isinstance(value, dict):
        kind, item = "bytes_list", decode_b64(value[B64])
    elif isinstance(value, str):
        kind, item = "bytes_list", value.encode("utf-8")
    elif isinstance(value, float):
        kind, item = "float_list", value
    else:
        if value > 2**63 - 1:
            raise errors.invalid_argument(
                f"Feature: {name} has uint64_t element. Only int64_t is supported."
            )
        kind, item = "int64_list", value
    current = feature.WhichOneof("kind")
    if current is not None and current != kind:
        raise errors.invalid_argument(
            f"Unexpected element type in feature: {name} expecting type: {_FEATURE_KINDS[current]}"
        )
    getattr(feature, kind).value.append(item)


# ---- responses ----


def encode_predict(outputs: Mapping[str, np.ndarray], request_format: str) -> dict:
    """`predictions` for row requests, `outputs` for columnar ones; name omitted if single."""
    if not outputs:
        raise errors.invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if request_format == COLUMNAR:
        columns = {name: _to_json(outputs[name], name.endswith(BYTES_SUFFIX)) for name in names}
        return {"outputs": columns if len(names) > 1 else columns[names[0]]}
    batch = None
    for name in names:
        if outputs[name].ndim == 0:
            raise errors.invalid_argument(f"Tensor name: {name} has no shape information ")
        size = outputs[name].shape[0]
        if batch is not None and size != batch:
            raise errors.invalid_argument(
                f"Tensor name: {name} has inconsistent batch size: {size} expecting: {batch}"
            )
        batch = size
    rows = {name: _to_json(outputs[name], name.endswith(BYTES_SUFFIX)) for name in names}
    if len(names) == 1:
        return {"predictions": rows[names[0]]}
    return {"predictions": [{name: rows[name][i] for name in names} for i in range(batch)]}


def predict_json(outputs: Mapping[str, tensor_pb2.TensorProto], request_format: str) -> dict:
    """A PredictResponse's outputs as MakeJsonFromTensors writes them."""
    return encode_predict({key: tensors.to_ndarray(value) for key, value in outputs.items()},
                          request_format)  # fmt: skip


def classify_json(result: classification_pb2.ClassificationResult) -> dict:
    """Classify `results`: per example, [label, score] pairs (MakeJsonFromClassificationResult)."""
    return {
        "results": [
            [[entry.label, _float32_json(entry.score)] for entry in classification.classes]
            for classification in result.classifications
        ]
    }


def regress_json(result: regression_pb2.RegressionResult) -> dict:
    """Regress `results`: one float per example (MakeJsonFromRegressionResult)."""
    return {"results": [_float32_json(entry.value) for entry in result.regressions]}


def _float32_json(value: float) -> float:
    return float(str(np.float32(value)))


def _proto_json(message) -> dict:
    """TF Serving's printing of a response proto: field names as in the .proto, int64 as
    strings, enums by name, default values included."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, including_default_value_fields=True
    )


def status_json(response: get_model_status_pb2.GetModelStatusResponse) -> dict:
    """`{"model_version_status": [{"version", "state", "status": {...}}, ...]}`."""
    return _proto_json(response)


def metadata_json(response: get_model_metadata_pb2.GetModelMetadataResponse) -> dict:
    """`{"model_spec": ..., "metadata": {"signature_def": {"signature_def": {...}}}}`: each
    metadata Any printed as the message it holds (ProcessModelMetadataRequest)."""
    metadata = {}
    for key, packed in response.metadata.items():
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        packed.Unpack(signature_map)
        metadata[key] = _proto_json(signature_map)
    return {"model_spec": _proto_json(response.model_spec), "metadata": metadata}


def _to_json(array: np.ndarray, as_bytes: bool) -> Any:
    """A tensor as nested JSON-ready lists."""
    if array.dtype == np.float32:
        # str() of a float32 is its shortest round-trip form (0.8, not 0.800000011920929),
        # the form TF Serving writes.
        return array.astype(str).astype(np.float64).tolist()
    if array.dtype.kind in "OSU":
        flat = [_string(value, as_bytes) for value in array.reshape(-1)]
        if array.ndim == 0:
            return flat[0]
        return np.array(flat, dtype=object).reshape(array.shape).tolist()
    return array.tolist()


def _string(value: Any, as_bytes: bool) -> Any:
    raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
    if as_bytes:
        return {B64: base64.b64encode(raw).decode("ascii")}
    return raw.decode("utf-8", errors="replace")


def dumps(document: Any) -> bytes:
    """Response JSON; NaN and Infinity are written as the bare tokens TF Serving writes."""
    return json.dumps(document, allow_nan=True, separators=(",", ":")).encode("utf-8")


def error_body(message: str) -> bytes:
    return dumps({"error": message})


# ---- messages ----


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    if len(text) > _MAX_ERROR_VALUE_CHARS:
        text = text[:_MAX_ERROR_VALUE_CHARS] + "...(truncated)"
    return text


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _dtype_string(dtype: str) -> str:
    return dtype.removeprefix("DT_").lower()


def _type_error(value: Any, dtype: str) -> errors.ServingError:
    return errors.invalid_argument(
        f"JSON Value: {_show(value)} Type: {_json_type(value)} is not of expected type: "
        f"{_dtype_string(dtype)}"
    )


def _size(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _shape_str(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"
