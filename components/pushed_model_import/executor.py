"""A pushed SavedModel version as a Model artifact, for the BulkInferrer.

A pushed version (`<serving>/<model>/<version>/`) is a bare SavedModel, while TFX's
components find a Model artifact's SavedModel under `<uri>/Format-Serving/`; an Importer
pointing at the version would hand them a folder without it. So the version is copied (through
fileio, so buckets work) into the new Model artifact's Format-Serving folder, and the artifact
records where it came from: ML Metadata then links the predictions to that exact version.
"""

from __future__ import annotations

import os

from tfx.dsl.io import fileio

SERVING_DIR = "Format-Serving"  # TFX's path_utils.serving_model_dir


def check_pushed_model(pushed_model_dir: str) -> None:
    if not fileio.exists(os.path.join(pushed_model_dir, "saved_model.pb")):
        raise ValueError(
            f"MODEL={pushed_model_dir} is not a pushed SavedModel version (no saved_model.pb "
            "in it); give a version folder, e.g. OUTPUT/serving/<MODEL_NAME>/<version>."
        )


def copy_tree(source: str, destination: str) -> None:
    for folder, _, names in fileio.walk(source):
        target = os.path.join(destination, os.path.relpath(folder, source))
        fileio.makedirs(target)
        for name in names:
            fileio.copy(os.path.join(folder, name), os.path.join(target, name), overwrite=True)


def adapt(pushed_model_dir: str, model) -> None:
    pushed_model_dir = pushed_model_dir.rstrip("/")
    check_pushed_model(pushed_model_dir)
    copy_tree(pushed_model_dir, os.path.join(model.uri, SERVING_DIR))
    model.set_string_custom_property("pushed_model_dir", pushed_model_dir)
    model.set_string_custom_property("pushed_version", os.path.basename(pushed_model_dir))
