"""The ingest report's name and how code downstream of ingest reads it.

ImageExampleGen writes `ingest_report.json` into its Examples artifact (beside the
`Split-*` folders), so the class names, the counts per split and class, and every skipped
file travel with the records. The Trainer (for class names and class weights) and the run
summary read it from there. This module is TF-free and lives with the module files because
the Trainer's run_fn imports it.
"""

from __future__ import annotations

import json
import os

REPORT_FILE = "ingest_report.json"
LABELS_FILE = "labels.txt"


def examples_uri_of(split_pattern: str) -> str:
    """`<examples uri>/Split-train/*` (what TFX hands run_fn as train_files) -> the uri."""
    return os.path.dirname(os.path.dirname(split_pattern))


def read_report(directory: str) -> dict | None:
    """The report in an Examples artifact or ingest folder, or None when there is none."""
    import tensorflow as tf  # gfile: the artifact may live in a bucket

    path = os.path.join(directory, REPORT_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def class_config(report: dict | None) -> dict:
    """The Trainer's `class_names` and `class_counts` (training split) from a report."""
    if report is None:
        return {}
    names = report["class_names"]
    return {
        "class_names": list(names),
        "class_counts": [int(report["counts"]["train"][name]) for name in names],
    }


def class_config_of_folder(examples_dir: str) -> dict:
    """Class names (labels.txt) and counts (the report, if any) of a folder of TFRecords."""
    import tensorflow as tf

    report = read_report(examples_dir)
    if report is not None:
        return class_config(report)
    path = os.path.join(examples_dir, LABELS_FILE)
    if not tf.io.gfile.exists(path):
        raise ValueError(
            f"EXAMPLES={examples_dir} has no {LABELS_FILE} (class names, one per line, line N "
            "is label N); `make ingest` writes one."
        )
    with tf.io.gfile.GFile(path) as f:
        return {"class_names": [line.strip() for line in f if line.strip()], "class_counts": []}
