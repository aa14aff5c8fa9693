"""Pusher executor that does not push the same model twice.

An unchanged re-run reuses the cached Trainer's model, but the Evaluator runs again
because its baseline (the latest blessed model) changed from none to that very model;
it blesses it again and TFX's Pusher would copy it into a new version directory. This
executor finds a version directory holding the same SavedModel and records the push
as that version instead, so re-runs never multiply identical versions.
"""

from __future__ import annotations

import filecmp
import os

from tfx.components.pusher import executor as pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

_SAME_MODEL_FILES = ("saved_model.pb", os.path.join("variables", "variables.index"))


def find_same_version(model_path: str, base_directory: str) -> str | None:
    """The version directory under base_directory holding this exact SavedModel, if any."""
    if not os.path.isdir(base_directory):
        return None
    for version in sorted(os.listdir(base_directory), reverse=True):
        candidate = os.path.join(base_directory, version)
        if all(
            os.path.isfile(os.path.join(candidate, name))
            and filecmp.cmp(os.path.join(model_path, name), os.path.join(candidate, name), False)
            for name in _SAME_MODEL_FILES
        ):
            return version
    return None


class Executor(pusher_executor.Executor):
    def Do(self, input_dict, output_dict, exec_properties) -> None:  # noqa: N802 (TFX API)
        model_push = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY]
        )
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination
        )
        if self.CheckBlessing(input_dict) and destination.HasField("filesystem"):
            base = destination.filesystem.base_directory
            version = find_same_version(self.GetModelPath(input_dict), base)
            if version is not None:
                self._MarkPushed(
                    model_push,
                    pushed_destination=os.path.join(base, version),
                    pushed_version=version,
                )
                return
        super().Do(input_dict, output_dict, exec_properties)
