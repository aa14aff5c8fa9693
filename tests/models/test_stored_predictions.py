"""The stored eval predictions' file: what the Trainer writes is what the Evaluator reads."""

from __future__ import annotations

import os

import numpy as np
import pytest

from models import stored_predictions


def test_round_trip_finds_each_example_by_its_bytes(tmp_path):
    records = [b"example-a", b"example-b", b"example-c"]
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]], np.float32)
    path = stored_predictions.write(
        str(tmp_path), stored_predictions.build(records, probabilities, ["cat", "dog"])
    )
    assert path == os.path.join(str(tmp_path), "eval_predictions", "predictions.npz")
    assert os.listdir(os.path.dirname(path)) == ["predictions.npz"]  # no temporary left
    read = stored_predictions.read(str(tmp_path))
    assert read.class_names == ("cat", "dog")
    table = read.table()
    for record, row in zip(records, probabilities):
        np.testing.assert_array_equal(table[stored_predictions.example_digest(record)], row)
    assert stored_predictions.example_digest(b"example-d") not in table


def test_a_model_without_stored_predictions_reads_none(tmp_path):
    assert stored_predictions.read(str(tmp_path)) is None


def test_digests_and_predictions_must_pair_up():
    with pytest.raises(ValueError, match="2 digests for 1 predictions"):
        stored_predictions.build([b"a", b"b"], np.zeros((1, 2)), ["x", "y"])


def test_about_one_example_in_32_is_checked_and_always_the_same_ones():
    digests = [stored_predictions.example_digest(str(i).encode()) for i in range(20000)]
    checked = [d for d in digests if stored_predictions.is_checked(d)]
    share = 1 / stored_predictions.CHECK_ONE_IN
    assert len(checked) / len(digests) == pytest.approx(share, rel=0.1)
    again = [stored_predictions.example_digest(str(i).encode()) for i in range(20000)]
    assert [d for d in again if stored_predictions.is_checked(d)] == checked
