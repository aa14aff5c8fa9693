"""The Evaluator's numpy accuracy and cross-entropy give the Keras metrics' numbers."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_model_analysis as tfma
import tf_keras
from tensorflow_model_analysis.metrics import metric_types

from models.metrics import class_metrics


def _probabilities(rng: np.random.Generator, n: int, classes: int) -> np.ndarray:
    p = rng.dirichlet(np.ones(classes), size=n).astype(np.float32)
    p[0] = 1.0 / classes  # a tie everywhere: argmax takes the first class
    p[1] = np.eye(classes)[1]  # probability exactly 0 for the others, 1 for one
    p[2, 0] = 0.0  # exactly 0 for a label below
    return p


def _outputs(metric: tfma.metrics.Metric, labels, probabilities, weights, **kwargs) -> dict:
    """The metric's one combiner over two partial accumulators, as Beam merges them:
    {key: value}. `kwargs` go to metric.computations."""
    (computation,) = metric.computations(**kwargs)
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
    return combiner.extract_output(combiner.merge_accumulators(halves))


def _run(
    metric: tfma.metrics.Metric, labels, probabilities, weights, example_weighted=False
) -> float:
    (value,) = _outputs(
        metric, labels, probabilities, weights, example_weighted=example_weighted
    ).values()
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


def _class_recall(labels, probabilities, weights, classes, example_weighted=False) -> dict:
    """ClassRecall's value per class id."""
    output = _outputs(
        class_metrics.ClassRecall(class_names=[str(i) for i in range(classes)]),
        labels,
        probabilities,
        weights,
        sub_keys=[metric_types.SubKey(class_id=i) for i in range(classes)],
        example_weighted=example_weighted,
    )
    return {key.sub_key.class_id: value for key, value in output.items()}


@pytest.mark.parametrize("classes", [2, 5])
def test_class_recall_is_each_class_s_recall_under_argmax(classes):
    """The same numbers as scikit-learn's recall of the argmax answers (ties to the lowest
    class index, as Keras' accuracy): what the per-class slices' accuracy gave."""
    from sklearn.metrics import recall_score

    rng = np.random.default_rng(10 + classes)
    probabilities = _probabilities(rng, 80, classes)
    labels = rng.integers(0, classes, size=80)
    weights = rng.uniform(0.5, 2.0, size=80)
    answers = np.argmax(probabilities, axis=1)
    expected = recall_score(labels, answers, labels=list(range(classes)), average=None)
    found = _class_recall(labels, probabilities, weights, classes)
    assert [found[i] for i in range(classes)] == pytest.approx(list(expected), abs=1e-12)
    weighted = recall_score(
        labels, answers, labels=list(range(classes)), average=None, sample_weight=weights
    )
    found = _class_recall(labels, probabilities, weights, classes, example_weighted=True)
    assert [found[i] for i in range(classes)] == pytest.approx(list(weighted), abs=1e-12)


def test_class_recall_of_a_class_without_examples_is_nan():
    probabilities = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]], dtype=np.float32)
    found = _class_recall(np.array([0, 1]), probabilities, np.ones(2), 3)
    assert found[0] == 1.0 and found[1] == 1.0 and np.isnan(found[2])


def test_class_recall_needs_one_sub_key_per_class():
    with pytest.raises(ValueError, match="binarize: class_ids"):
        class_metrics.ClassRecall().computations()
