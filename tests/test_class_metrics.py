"""The Evaluator's numpy accuracy and cross-entropy give the Keras metrics' numbers."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_model_analysis as tfma
import tf_keras
from tensorflow_model_analysis.metrics import metric_types

from components import class_metrics


def _probabilities(rng: np.random.Generator, n: int, classes: int) -> np.ndarray:
    p = rng.dirichlet(np.ones(classes), size=n).astype(np.float32)
    p[0] = 1.0 / classes  # a tie everywhere: argmax takes the first class
    p[1] = np.eye(classes)[1]  # probability exactly 0 for the others, 1 for one
    p[2, 0] = 0.0  # exactly 0 for a label below
    return p


def _run(
    metric: tfma.metrics.Metric, labels, probabilities, weights, example_weighted=False
) -> float:
    """The metric's combiner over two partial accumulators, as Beam merges them."""
    (computation,) = metric.computations(example_weighted=example_weighted)
    combiner = computation.combiner
    halves = []
    for part in np.array_split(np.arange(len(labels)), 2):
        accumulator = combiner.create_accumulator()
        for i in part:
            element = metric_types.StandardMetricInputs(
                labels=np.array([labels[i]]),
                predictions=probabilities[i],
                example_weights=np.array([weights[i]]),
            )
            accumulator = combiner.add_input(accumulator, element)
        halves.append(accumulator)
    (value,) = combiner.extract_output(combiner.merge_accumulators(halves)).values()
    return value


@pytest.mark.parametrize("classes", [2, 5])
def test_same_values_as_the_keras_metrics(classes):
    rng = np.random.default_rng(classes)
    probabilities = _probabilities(rng, 60, classes)
    labels = rng.integers(0, classes, size=60)
    labels[2] = 0
    weights = np.ones(60)

    keras_accuracy = tf_keras.metrics.SparseCategoricalAccuracy()
    keras_accuracy.update_state(labels, probabilities)
    keras_crossentropy = tf_keras.metrics.SparseCategoricalCrossentropy()
    keras_crossentropy.update_state(labels, probabilities)

    accuracy = _run(class_metrics.ClassAccuracy(), labels, probabilities, weights)
    crossentropy = _run(class_metrics.ClassCrossentropy(), labels, probabilities, weights)
    assert accuracy == pytest.approx(float(keras_accuracy.result()), abs=1e-7)
    assert crossentropy == pytest.approx(float(keras_crossentropy.result()), rel=1e-5)


def test_names_are_the_keras_metrics_names():
    """Thresholds, the report and the summary read these names."""
    assert class_metrics.ClassAccuracy().name == "sparse_categorical_accuracy"
    assert class_metrics.ClassCrossentropy().name == "sparse_categorical_crossentropy"


def test_weights_count_only_when_tfma_asks_for_weighted_metrics():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)
    labels, weights = np.array([0, 0]), np.array([3.0, 1.0])
    metric = class_metrics.ClassAccuracy()
    assert _run(metric, labels, probabilities, weights) == pytest.approx(0.5)
    weighted = _run(metric, labels, probabilities, weights, example_weighted=True)
    assert weighted == pytest.approx(0.75)
