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
  (its baseline changed from none to that very model) and must not multiply identical versions;
- stops with PushError naming the serving directory and its free bytes when the model does
  not fit (checked before copying, and on ENOSPC/EDQUOT during the copy, whose partial
  temporary directory is removed): the served version stays the previous one;
- keeps the newest `keep_versions` versions (KEEP_VERSIONS; 0 keeps all) after a push.

A base directory with a scheme (`gs://bucket/models/x`, `ram://...`) goes through
`tf.io.gfile`, which reads the model from any artifact URI too. A bucket has no directory
rename: gfile's rename of a folder copies and deletes object by object, so the version folder
appears file by file. The push therefore writes the temporary folder, then renames its files
into the version folder with `saved_model.pb` LAST: TF Serving (and serving/) see a version
only through its saved_model.pb (a load attempt before it finds no model and is retried), and
by then every variables file is in place. What a bucket does not give: two pushes racing for
the same version number, and a reader that lists a version's folder mid-push sees it partly
filled (no local fsync either; an object is durable once its upload returns). Other push
destinations (not `filesystem`) go to TFX's executor unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import filecmp
import json
import logging
import os
import shutil
import time
from functools import partial

import tensorflow as tf
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
from models.crash_points import crash_point

EXTRA_ASSETS_KEY = "extra_assets"  # the optional ExtraAssets input (component.py)
TFLITE_EVALUATION_KEY = "tflite_evaluation"  # the optional TFLiteEvaluation input
TFLITE_SUFFIX = ".tflite"  # <version>.tflite/ beside <version>/: not a number, not loaded
TEMP_PREFIX = ".push-"  # not a number: neither TF Serving nor serving/ treat it as a version
KEEP_VERSIONS_KEY = "keep_versions"  # in custom_config: versions kept after a push, 0 = all
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_SAME_MODEL_FILES = ("saved_model.pb", os.path.join("variables", "variables.index"))

log = logging.getLogger(__name__)


def is_remote(path: str) -> bool:
    """A path with a scheme (gs://, ram://, s3://...): handled through tf.io.gfile."""
    return "://" in path


def _names(base_directory: str) -> list[str]:
    if is_remote(base_directory):
        if not tf.io.gfile.isdir(base_directory):
            return []
        return [name.rstrip("/") for name in tf.io.gfile.listdir(base_directory)]
    return os.listdir(base_directory) if os.path.isdir(base_directory) else []


def _versions(base_directory: str) -> list[int]:
    return sorted(int(name) for name in _names(base_directory) if name.isascii() and name.isdigit())


def _same_file(first: str, second: str) -> bool:
    if not (is_remote(first) or is_remote(second)):
        return os.path.isfile(second) and filecmp.cmp(first, second, False)
    if not tf.io.gfile.exists(second):
        return False
    with tf.io.gfile.GFile(first, "rb") as a, tf.io.gfile.GFile(second, "rb") as b:
        return a.read() == b.read()


def find_same_version(model_path: str, base_directory: str) -> str | None:
    """The version directory under base_directory holding this exact SavedModel, if any."""
    for version in reversed(_versions(base_directory)):
        candidate = os.path.join(base_directory, str(version))
        if all(
            _same_file(os.path.join(model_path, name), os.path.join(candidate, name))
            for name in _SAME_MODEL_FILES
        ):
            return str(version)
    return None


class PushError(OSError):
    """The model cannot be pushed (no space); the message names the path and what to do."""

    def __init__(self, message: str):
        super().__init__(message)
        self.errno = errno.ENOSPC


def _tree_bytes(root: str) -> int:
    """Bytes under root (a local folder or an artifact URI with a scheme)."""
    return sum(
        tf.io.gfile.stat(os.path.join(directory, name)).length
        for directory, _dirs, files in tf.io.gfile.walk(root)
        for name in files
    )


def _no_space(base_directory: str, needed: int, cause: str) -> PushError:
    free = shutil.disk_usage(base_directory).free
    served = _versions(base_directory)
    return PushError(
        f"No space to push the model to {base_directory}: {free} bytes free on its file "
        f"system, the model needs {needed} bytes ({cause}). Nothing was published; the "
        f"served version is still {served[-1] if served else 'none'}. Free space (e.g. "
        "KEEP_VERSIONS=2 keeps only the newest versions) and run again: the run resumes "
        "from TFX's cache.",
    )


def remove_old_versions(base_directory: str, keep: int, pushed: str) -> list[str]:
    """Delete all but the newest `keep` numeric versions (never `pushed`); 0 keeps all."""
    if keep <= 0:
        return []
    old = [str(v) for v in _versions(base_directory)[:-keep] if str(v) != pushed]
    for version in old:
        log.info("KEEP_VERSIONS=%d: removing version %s", keep, version)
        # Renamed out of the version namespace first, so no reader sees it half deleted.
        doomed = os.path.join(base_directory, TEMP_PREFIX + "old-" + version)
        os.rename(os.path.join(base_directory, version), doomed)
        shutil.rmtree(doomed)
    return old


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
    stale = sorted(n for n in _names(base_directory) if n.startswith(TEMP_PREFIX))
    for name in stale:
        log.warning("Removing %s left by an interrupted push", name)
        if is_remote(base_directory):
            _remove_remote_tree(os.path.join(base_directory, name))
        else:
            shutil.rmtree(os.path.join(base_directory, name))
    return stale


def _remove_remote_tree(folder: str) -> None:
    """Delete every object under folder; a bucket's (or ram://'s) folders are only prefixes.
    NotFound is skipped: TF's ram:// lists `assets.extra/x` under `assets/` as `.extra`."""
    for directory, _dirs, files in list(tf.io.gfile.walk(folder)):
        for name in files:
            with contextlib.suppress(tf.errors.NotFoundError):
                tf.io.gfile.remove(os.path.join(directory, name))
    with contextlib.suppress(tf.errors.NotFoundError):
        tf.io.gfile.rmtree(folder)  # NotFound: nothing but prefixes was left


def copy_tree(source: str, destination: str) -> list[str]:
    """gfile's copy of a folder (any scheme on either side); returns the files' relative paths.
    Also the run summary's copy of the report artifact onto the launching machine."""
    copied = []
    for directory, _dirs, files in tf.io.gfile.walk(source):
        relative = os.path.relpath(directory, source)
        # No os.path.normpath: it turns "gs://b" into the local path "gs:/b".
        target = destination if relative == "." else os.path.join(destination, relative)
        tf.io.gfile.makedirs(target)
        for name in files:
            tf.io.gfile.copy(os.path.join(directory, name), os.path.join(target, name), True)
            copied.append(name if relative == "." else os.path.join(relative, name))
    return copied


def _push_remote(model_path: str, temporary: str, final: str, extra_assets_dir: str | None):
    """Copy into temporary, then move its files under final, saved_model.pb last (see the
    module docstring). The file list is the copy's own: no listing of the bucket mid-push."""
    files = copy_tree(model_path, temporary)
    if extra_assets_dir:
        extra = os.path.join(temporary, features.ASSETS_EXTRA_DIR)
        files += [
            os.path.join(features.ASSETS_EXTRA_DIR, n) for n in copy_tree(extra_assets_dir, extra)
        ]
    files = sorted(set(files), key=lambda name: (name == "saved_model.pb", name))
    for name in files:
        tf.io.gfile.makedirs(os.path.dirname(os.path.join(final, name)))
        tf.io.gfile.rename(os.path.join(temporary, name), os.path.join(final, name), True)
    _remove_remote_tree(temporary)


def push_model(model_path: str, base_directory: str, extra_assets_dir: str | None = None) -> str:
    """Publish the SavedModel at model_path as a new version under base_directory, atomically.

    Returns the version (a directory name). The version is the push time in seconds, as TFX's
    UNIX_TIMESTAMP versioning, but always above every existing version so it is the latest.
    """
    if is_remote(base_directory):
        tf.io.gfile.makedirs(base_directory)
    else:
        os.makedirs(base_directory, exist_ok=True)
    remove_stale_pushes(base_directory)
    same = find_same_version(model_path, base_directory)
    if same is not None:
        log.info("Model already in %s as version %s; not copying it again", base_directory, same)
        return same
    version = str(max([int(time.time()), *(v + 1 for v in _versions(base_directory))]))
    temporary = os.path.join(base_directory, TEMP_PREFIX + version)
    final = os.path.join(base_directory, version)
    if is_remote(base_directory):
        _push_remote(model_path, temporary, final, extra_assets_dir)
        log.info("Model pushed to %s", final)
        return version
    sources_remote = is_remote(model_path) or is_remote(extra_assets_dir or "")
    copy = copy_tree if sources_remote else partial(shutil.copytree, dirs_exist_ok=True)
    needed = _tree_bytes(model_path) + (_tree_bytes(extra_assets_dir) if extra_assets_dir else 0)
    if needed > shutil.disk_usage(base_directory).free:
        raise _no_space(base_directory, needed, "checked before copying")
    try:
        copy(model_path, temporary)
        if extra_assets_dir:
            copy(extra_assets_dir, os.path.join(temporary, features.ASSETS_EXTRA_DIR))
        _fsync_tree(temporary)
    except OSError as exc:
        # copytree gathers its failures into shutil.Error, with the reasons as text.
        full = exc.errno in _DISK_FULL or any(os.strerror(e) in str(exc) for e in _DISK_FULL)
        if not full:
            raise
        shutil.rmtree(temporary, ignore_errors=True)
        raise _no_space(base_directory, needed, f"the copy failed: {exc}") from exc
    crash_point("Pusher")  # the version is complete but not yet visible
    os.rename(temporary, final)  # the version appears whole
    _fsync_dir(base_directory)
    log.info("Model pushed to %s", final)
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
        custom = json.loads(
            exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY) or "null"
        )
        remove_old_versions(base, int((custom or {}).get(KEEP_VERSIONS_KEY, 0)), version)
        self._MarkPushed(
            model_push, pushed_destination=os.path.join(base, version), pushed_version=version
        )
