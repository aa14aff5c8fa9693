"""Batch inference's answers as files people read: predictions.jsonl and predictions.csv.

Reads the BulkInferrer's prediction logs (classify signature: class names and scores per
photo; the photos' bytes are not in them, components/bulk_inferrer/) and the unlabelled
ingest report of the same run, and writes one line per photo: its path, the top class and
its probability, the probability of every class, the model version. Counts must add up:
files listed = photos predicted + files skipped (each skipped file is listed with its
reason in summary.json), or the step fails rather than lose a photo silently.
"""

from __future__ import annotations

import csv
import io
import json
import os

import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from models import features
from models.atomic_files import write_text_atomically
from models.ingest_report import read_report

PREDICTIONS_JSONL = "predictions.jsonl"
PREDICTIONS_CSV = "predictions.csv"
SUMMARY_JSON = "summary.json"


class CountsDoNotAddUp(RuntimeError):
    """Files went missing between the listing and the predictions."""


def read_prediction_logs(inference_result_uri: str) -> list[prediction_log_pb2.PredictionLog]:
    files = sorted(tf.io.gfile.glob(os.path.join(inference_result_uri, "*.gz")))
    return [
        prediction_log_pb2.PredictionLog.FromString(record.numpy())
        for record in tf.data.TFRecordDataset(files, compression_type="GZIP")
    ]


def rows(logs, images_dir: str, model_version: str) -> list[dict]:
    """One dict per photo, sorted by path."""
    out = []
    for log in logs:
        request = log.classify_log.request.input.example_list.examples
        results = log.classify_log.response.result.classifications
        for example, classification in zip(request, results, strict=True):
            relpath = example.features.feature[features.SOURCE_PATH_KEY].bytes_list.value[0]
            probabilities = {c.label: float(c.score) for c in classification.classes}
            best = max(probabilities, key=probabilities.get)
            out.append(
                {
                    "path": images_dir.rstrip("/") + "/" + relpath.decode(),
                    "class": best,
                    "probability": probabilities[best],
                    "probabilities": probabilities,
                    "model_version": model_version,
                }
            )
    return sorted(out, key=lambda r: r["path"])


def to_jsonl(predictions: list[dict]) -> str:
    return "".join(json.dumps(p) + "\n" for p in predictions)


def to_csv(predictions: list[dict]) -> str:
    classes = list(predictions[0]["probabilities"]) if predictions else []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "class", "probability", *(f"p_{c}" for c in classes), "model_version"])
    for p in predictions:
        writer.writerow(
            [
                p["path"],
                p["class"],
                f"{p['probability']:.6f}",
                *(f"{p['probabilities'][c]:.6f}" for c in classes),
                p["model_version"],
            ]
        )
    return buffer.getvalue()


def write(inference_result_uri: str, examples_uri: str, model_version: str, out_dirs) -> dict:
    """Write the three files into every folder of out_dirs (each file atomically); returns
    the summary."""
    report = read_report(examples_uri)
    predictions = rows(
        read_prediction_logs(inference_result_uri), report["images_dir"], model_version
    )
    summary = {
        "images_dir": report["images_dir"],
        "model_version": model_version,
        "listed": report["totals"]["listed"],
        "predicted": len(predictions),
        "skipped": len(report["skipped"]),
        "skipped_files": report["skipped"],
    }
    if summary["listed"] != summary["predicted"] + summary["skipped"]:
        raise CountsDoNotAddUp(
            f"{summary['listed']} files listed but {summary['predicted']} predicted and "
            f"{summary['skipped']} skipped"
        )
    for folder in out_dirs:
        write_text_atomically(os.path.join(folder, PREDICTIONS_JSONL), to_jsonl(predictions))
        write_text_atomically(os.path.join(folder, PREDICTIONS_CSV), to_csv(predictions))
        write_text_atomically(
            os.path.join(folder, SUMMARY_JSON), json.dumps(summary, indent=2) + "\n"
        )
    return summary


def run(inference_result, examples, predictions, model_version: str, output_dir: str) -> None:
    summary = write(
        inference_result.uri,
        examples.uri,
        model_version,
        [predictions.uri, *([output_dir] if output_dir else [])],
    )
    for key in ("listed", "predicted", "skipped"):
        predictions.set_int_custom_property(key, summary[key])
    predictions.set_string_custom_property("model_version", model_version)
    tf.get_logger().info(
        "Batch inference: %d files listed, %d predicted, %d skipped -> %s",
        summary["listed"],
        summary["predicted"],
        summary["skipped"],
        output_dir or predictions.uri,
    )
