"""Model status and metadata responses, built from TF Serving's own protos.

TF Serving answers these two GET APIs by printing its GetModelStatusResponse and
GetModelMetadataResponse protos as JSON (int64 as strings, enums by name, default values
included). Building the same protos from tensorflow-serving-api and printing them with
protobuf's json_format gives the same documents without re-describing their shape by hand.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from serving.models import VersionStatus


def _to_dict(message) -> dict:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, including_default_value_fields=True
    )


def model_status(statuses: Iterable[VersionStatus]) -> dict:
    """`{"model_version_status": [{"version", "state", "status": {...}}, ...]}`."""
    response = get_model_status_pb2.GetModelStatusResponse()
    for status in statuses:
        entry = response.model_version_status.add()
        entry.version = status.version
        entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(status.state.value)
        entry.status.error_code = int(status.error_code)
        entry.status.error_message = status.error_message
    return _to_dict(response)


def model_metadata(name: str, version: int, signature_defs) -> dict:
    """`{"model_spec": ..., "metadata": {"signature_def": {"signature_def": {...}}}}`.

    `signature_defs` is the MetaGraphDef's signature_def map, printed whole as TF Serving does
    (including `__saved_model_init_op`).
    """
    spec = model_pb2.ModelSpec(name=name)
    spec.version.value = version
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in signature_defs.items():
        signature_map.signature_def[key].CopyFrom(signature)
    return {"model_spec": _to_dict(spec), "metadata": {"signature_def": _to_dict(signature_map)}}
