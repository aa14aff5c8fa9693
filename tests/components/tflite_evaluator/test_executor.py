"""The TFLite gate's rule: paired difference and agreement against the SavedModel.

(A corrupted TFLite model refused end to end: tests/pipeline/test_deploy_e2e.py.)
"""

from __future__ import annotations

import numpy as np
import pytest

from components.tflite_evaluator.executor import blessed_files, judge, paired_difference


def _result(agreement: float, candidate: np.ndarray, reference: np.ndarray) -> dict:
    return {
        "accuracy": float(candidate.mean()),
        "agreement": agreement,
        "difference": paired_difference(candidate, reference),
    }


def test_identical_answers_have_a_zero_width_interval_and_pass():
    correct = np.array([1, 0, 1, 1] * 25, bool)
    verdict = judge(_result(1.0, correct, correct), 0.98, 0.01)
    assert verdict["difference"] == {"mean": 0.0, "lower": 0.0, "upper": 0.0}
    assert verdict["blessed"] and verdict["refused_because"] == []


def test_low_agreement_refuses_even_at_equal_accuracy():
    reference = np.array([1, 0] * 50, bool)
    candidate = ~reference  # every answer differs, same accuracy
    verdict = judge(_result(0.0, candidate, reference), 0.98, 0.01)
    assert not verdict["blessed"]
    assert ["TFLITE_MIN_AGREEMENT" in r for r in verdict["refused_because"]] == [True]


def test_one_flip_in_a_hundred_is_noise_but_a_systematic_drop_is_not():
    reference = np.ones(100, bool)
    one_flip = reference.copy()
    one_flip[0] = False
    noisy = judge(_result(0.99, one_flip, reference), 0.98, 0.01)
    assert noisy["difference"]["mean"] == pytest.approx(-0.01)
    assert noisy["difference"]["upper"] > -0.01 and noisy["blessed"]
    dropped = reference.copy()
    dropped[:10] = False
    worse = judge(_result(0.99, dropped, reference), 0.98, 0.01)
    assert worse["difference"]["upper"] < -0.01 and not worse["blessed"]
    assert ["TFLITE_MAX_DROP" in r for r in worse["refused_because"]] == [True]


def test_blessed_files_lists_only_the_passing_models():
    evaluation = {
        "models": {"model.tflite": {"blessed": False}, "model_int8.tflite": {"blessed": True}}
    }
    assert blessed_files(evaluation) == ["model_int8.tflite"]
