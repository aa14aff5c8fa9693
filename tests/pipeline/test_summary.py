"""The run summary's readers of artifacts that may live in a bucket (read through gfile)."""

from __future__ import annotations

import json
import os
import uuid

import tensorflow as tf

from pipeline import summary


def test_tuner_summary_reads_trials_from_a_non_local_file_system():
    # ram:// is TensorFlow's in-memory file system: a path only gfile can open, as gs:// is.
    uri = f"ram://tuner-results-{uuid.uuid4().hex}"
    trials = [
        {"trial_id": "03", "score": 0.91, "hyperparameters": {"learning_rate": 0.001}},
        {"trial_id": "01", "score": 0.84, "hyperparameters": {"learning_rate": 0.01}},
    ]
    tf.io.gfile.makedirs(uri)
    with tf.io.gfile.GFile(os.path.join(uri, summary.TUNER_RESULTS_FILE), "w") as f:
        json.dump(trials, f)

    result = summary.tuner_summary(uri)

    assert result["trials"] == 2
    assert result["best"]["trial_id"] == "03"
    assert result["all"] == trials
