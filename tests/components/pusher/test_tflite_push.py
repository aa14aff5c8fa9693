"""The Pusher's TFLite files: only the blessed ones, beside the version, whole or not at all."""

from __future__ import annotations

import os

from components.pusher.executor import TEMP_PREFIX, push_tflite, remove_stale_pushes
from models import tflite_export


def _model_artifact(root) -> str:
    folder = root / "model" / tflite_export.TFLITE_DIR
    folder.mkdir(parents=True)
    for name in tflite_export.MODEL_FILES:
        (folder / name).write_bytes(name.encode() * 10)
    (root / "tflite_evaluation.json").write_text("{}")
    return str(root / "model")


def test_only_blessed_files_land_beside_the_version_not_inside_it(tmp_path):
    model_uri = _model_artifact(tmp_path)
    base = tmp_path / "serving"
    (base / "12").mkdir(parents=True)  # the SavedModel version
    path = push_tflite(
        model_uri, str(base), "12", ["model_int8.tflite"], str(tmp_path / "tflite_evaluation.json")
    )
    assert path == str(base / "12.tflite")
    assert sorted(os.listdir(path)) == ["model_int8.tflite", "tflite_evaluation.json"]
    assert (base / "12.tflite" / "model_int8.tflite").read_bytes() == b"model_int8.tflite" * 10
    assert os.listdir(base / "12") == []
    assert sorted(os.listdir(base)) == ["12", "12.tflite"]  # no temporary left


def test_nothing_blessed_nothing_written_and_a_killed_push_is_cleaned(tmp_path):
    model_uri = _model_artifact(tmp_path)
    base = tmp_path / "serving"
    base.mkdir()
    assert push_tflite(model_uri, str(base), "3", []) == ""
    assert os.listdir(base) == []
    (base / f"{TEMP_PREFIX}4.tflite").mkdir()  # what a killed push leaves
    assert remove_stale_pushes(str(base)) == [f"{TEMP_PREFIX}4.tflite"]
    push_tflite(model_uri, str(base), "4", list(tflite_export.MODEL_FILES))
    assert sorted(os.listdir(base / "4.tflite")) == sorted(tflite_export.MODEL_FILES)
