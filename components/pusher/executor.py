"""ImagePusher: TFX's Pusher, made atomic and crash-safe, with files for `assets.extra/`.

TFX's Pusher copies a model file by file into the final numbered directory. TF Serving loads
any numeric directory as soon as it appears, so it can catch a half-written version; a
version that fails to load is retried a few times and then left in END until restart. This
component's executor instead:
- writes the version into a temporary sibling directory whose name is not a number
  (`.push-<version>`), which TF Serving ignores (its version parser, absl::SimpleAtoi,
  refuses it), copies the SavedModel and, when the optional `extra_assets` channel gives one,
  the files of that ExtraAssets artifact's folder into `<tmp>/assets.extra/`, syncs it to disk,
  then renames it into place: a version directory is either absent or complete;
- removes temporary directories a killed push left behind before pushing, so the next run
  redoes an unfinished push, and a push killed after its rename is found (below) and recorded;
- with the optional `tflite_evaluation` input, publishes the TFLite files that passed their
  gate beside the version as `<version>.tflite/` (not a number: no server loads it), the
  same way: a `.push-` temporary renamed into place;
- records a model that is already in the serving directory (same saved_model.pb and variables
  index) as that version instead of copying it again: an unchanged re-run is blessed again
  (its baseline changed from none to that very model) and must not multiply identical versions.

Only the local file system is handled here (the serving directory of this project); other
push destinations go to TFX's executor unchanged.
"""

from __future__ import annotations

import filecmp
import logging
import os
import shutil
import time

from tfx.components.pusher import executor as pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components.tflite_evaluator.executor import (
    EVALUATION_FILE,
    blessed_files,
    read_evaluation,
)
from models import features, tflite_export

EXTRA_ASSETS_KEY = "extra_assets"  # the optional ExtraAssets input (component.py)
TFLITE_EVALUATION_KEY = "tflite_evaluation"  # the optional TFLiteEvaluation input
TFLITE_SUFFIX = ".tflite"  # <version>.tflite/ beside <version>/: not a number, not loaded
TEMP_PREFIX = ".push-"  # not a number: neither TF Serving nor serving/ treat it as a version
_SAME_MODEL_FILES = ("saved_model.pb", os.path.join("variables", "variables.index"))

log = logging.getLogger(__name__)


def _versions(base_directory: str) -> list[int]:
    if not os.path.isdir(base_directory):
        return []
    return sorted(
        int(name) for name in os.listdir(base_directory) if name.isascii() and name.isdigit()
    )


def find_same_version(model_path: str, base_directory: str) -> str | None:
    """The version directory under base_directory holding this exact SavedModel, if any."""
    for version in reversed(_versions(base_directory)):
        candidate = os.path.join(base_directory, str(version))
        if all(
            os.path.isfile(os.path.join(candidate, name))
            and filecmp.cmp(os.path.join(model_path, name), os.path.join(candidate, name), False)
            for name in _SAME_MODEL_FILES
        ):
            return str(version)
    return None


def _fsync_tree(root: str) -> None:
    """Flush every file and directory under root, so the rename publishes data on disk."""
    for directory, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(directory)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_pushes(base_directory: str) -> list[str]:
    """Delete what killed pushes left (temporary directories); returns their names."""
    if not os.path.isdir(base_directory):
        return []
    stale = sorted(n for n in os.listdir(base_directory) if n.startswith(TEMP_PREFIX))
    for name in stale:
        log.warning("Removing %s left by an interrupted push", name)
        shutil.rmtree(os.path.join(base_directory, name))
    return stale


def push_model(model_path: str, base_directory: str, extra_assets_dir: str | None = None) -> str:
    """Publish the SavedModel at model_path as a new version under base_directory, atomically.

    Returns the version (a directory name). The version is the push time in seconds, as TFX's
    UNIX_TIMESTAMP versioning, but always above every existing version so it is the latest.
    """
    os.makedirs(base_directory, exist_ok=True)
    remove_stale_pushes(base_directory)
    same = find_same_version(model_path, base_directory)
    if same is not None:
        log.info("Model already in %s as version %s; not copying it again", base_directory, same)
        return same
    version = str(max([int(time.time()), *(v + 1 for v in _versions(base_directory))]))
    temporary = os.path.join(base_directory, TEMP_PREFIX + version)
    shutil.copytree(model_path, temporary)
    if extra_assets_dir:
        shutil.copytree(
            extra_assets_dir, os.path.join(temporary, features.ASSETS_EXTRA_DIR), dirs_exist_ok=True
        )
    _fsync_tree(temporary)
    os.rename(temporary, os.path.join(base_directory, version))  # the version appears whole
    _fsync_dir(base_directory)
    log.info("Model pushed to %s", os.path.join(base_directory, version))
    return version


def push_tflite(
    model_uri: str, base_directory: str, version: str, blessed: list[str], evaluation: str = ""
) -> str:
    """Publish the blessed TFLite files of the Model artifact at model_uri beside the
    version, as `<base>/<version>.tflite/` with the evaluation file that blessed them (the
    path `evaluation`, when given), atomically (a `.push-` temporary renamed into place); an
    existing complete folder is kept. Returns its path ("" when none blessed)."""
    if not blessed:
        return ""
    final = os.path.join(base_directory, version + TFLITE_SUFFIX)
    if os.path.isdir(final):
        return final
    temporary = os.path.join(base_directory, TEMP_PREFIX + version + TFLITE_SUFFIX)
    os.makedirs(temporary)
    for name in blessed:
        shutil.copyfile(
            os.path.join(tflite_export.tflite_dir(model_uri), name), os.path.join(temporary, name)
        )
    if evaluation:
        shutil.copyfile(evaluation, os.path.join(temporary, os.path.basename(evaluation)))
    _fsync_tree(temporary)
    os.rename(temporary, final)
    _fsync_dir(base_directory)
    log.info("TFLite models %s pushed to %s", ", ".join(blessed), final)
    return final


class Executor(pusher_executor.Executor):
    def Do(self, input_dict, output_dict, exec_properties) -> None:  # noqa: N802 (TFX API)
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination
        )
        if not destination.HasField("filesystem"):
            super().Do(input_dict, output_dict, exec_properties)
            return
        self._log_startup(input_dict, output_dict, exec_properties)
        model_push = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY]
        )
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            return
        extra_assets = input_dict.get(EXTRA_ASSETS_KEY) or []
        extra_dir = artifact_utils.get_single_uri(extra_assets) if extra_assets else None
        base = destination.filesystem.base_directory
        version = push_model(self.GetModelPath(input_dict), base, extra_dir)
        tflite = input_dict.get(TFLITE_EVALUATION_KEY) or []
        if tflite:  # the TFLite files that passed their gate, beside the version
            model_uri = artifact_utils.get_single_uri(
                input_dict[standard_component_specs.MODEL_KEY]
            )
            evaluation_uri = artifact_utils.get_single_uri(tflite)
            blessed = blessed_files(read_evaluation(evaluation_uri))
            push_tflite(
                model_uri, base, version, blessed, os.path.join(evaluation_uri, EVALUATION_FILE)
            )
        self._MarkPushed(
            model_push, pushed_destination=os.path.join(base, version), pushed_version=version
        )
