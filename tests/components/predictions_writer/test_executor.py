"""Prediction logs -> predictions.jsonl / .csv, and counts that must add up."""

from __future__ import annotations

import csv
import io
import json

import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from components.predictions_writer import executor
from models import features
from models.examples import make_example
from models.ingest_report import REPORT_FILE


def _write_logs(folder, answers: dict[str, dict[str, float]]) -> None:
    with tf.io.TFRecordWriter(str(folder / "prediction_logs-00000.gz"), "GZIP") as writer:
        for path, scores in answers.items():
            log = prediction_log_pb2.PredictionLog()
            example = make_example({features.SOURCE_PATH_KEY: path.encode()})
            log.classify_log.request.input.example_list.examples.add().CopyFrom(example)
            result = log.classify_log.response.result.classifications.add()
            for label, score in scores.items():
                result.classes.add(label=label, score=score)
            writer.write(log.SerializeToString())


def _write_report(folder, listed: int, skipped: list[dict]) -> None:
    (folder / REPORT_FILE).write_text(
        json.dumps({"images_dir": "/photos", "totals": {"listed": listed}, "skipped": skipped})
    )


def test_every_photo_one_line_with_every_class(tmp_path):
    logs, examples, out = tmp_path / "logs", tmp_path / "examples", tmp_path / "out"
    logs.mkdir(), examples.mkdir()
    _write_logs(logs, {"b/2.png": {"cat": 0.3, "dog": 0.7}, "1.jpg": {"cat": 0.8, "dog": 0.2}})
    _write_report(examples, 3, [{"path": "x.txt", "reason": "not an image"}])
    summary = executor.write(str(logs), str(examples), "17", [str(out)])
    assert (summary["listed"], summary["predicted"], summary["skipped"]) == (3, 2, 1)
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert lines[0] == {
        "path": "/photos/1.jpg",
        "class": "cat",
        "probability": pytest.approx(0.8),
        "probabilities": {"cat": pytest.approx(0.8), "dog": pytest.approx(0.2)},
        "model_version": "17",
    }
    assert lines[1]["path"] == "/photos/b/2.png" and lines[1]["class"] == "dog"
    rows = list(csv.reader(io.StringIO((out / "predictions.csv").read_text())))
    assert rows[0] == ["path", "class", "probability", "p_cat", "p_dog", "model_version"]
    assert rows[2][:2] == ["/photos/b/2.png", "dog"] and len(rows) == 3


def test_a_photo_lost_on_the_way_fails_the_step(tmp_path):
    logs, examples = tmp_path / "logs", tmp_path / "examples"
    logs.mkdir(), examples.mkdir()
    _write_logs(logs, {"1.jpg": {"cat": 1.0}})
    _write_report(examples, 3, [{"path": "x.txt", "reason": "not an image"}])
    with pytest.raises(executor.CountsDoNotAddUp, match="3 files listed but 1 predicted"):
        executor.write(str(logs), str(examples), "1", [str(tmp_path / "out")])
