"""The InfraValidator's verdict as its InfraBlessing carries it: one writer, one reader.

TFX's executor records only `blessed` (1 or 0) and a marker file; why a model was refused
it only logs. The executor (executor.py) therefore also records which model server
validated and, when the model was refused, why (`record`). The run summary
(pipeline/summary.py) and the evaluation report (components/evaluation_report/) read the
three back through `read`, from the blessing's ML Metadata artifact.
"""

from __future__ import annotations

from ml_metadata.proto import metadata_store_pb2
from tfx import types

BLESSED_KEY = "blessed"  # TFX's own custom property (1 or 0), set by its executor
SERVER_KEY = "model_server"  # which server loaded and queried the model
FAILURE_KEY = "failure"  # why a not-blessed model was refused


def record(blessing: types.Artifact, model_server: str, failure: str | None) -> None:
    """The executor's additions to TFX's blessing (after TFX marked it blessed or not)."""
    blessing.set_string_custom_property(SERVER_KEY, model_server)
    if failure and not blessing.get_int_custom_property(BLESSED_KEY):
        blessing.set_string_custom_property(FAILURE_KEY, failure)


def read(blessing: metadata_store_pb2.Artifact) -> dict:
    """{blessed, model_server, failure (None when blessed or unknown)} of an InfraBlessing
    (its ML Metadata artifact: `artifact.mlmd_artifact` of a TFX artifact)."""
    properties = blessing.custom_properties

    def value(key: str):
        found = properties.get(key)
        if found is None:
            return None
        return found.string_value or found.int_value

    return {
        "blessed": bool(value(BLESSED_KEY)),
        "model_server": value(SERVER_KEY),
        "failure": value(FAILURE_KEY),
    }
