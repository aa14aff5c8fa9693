"""Accuracy and cross-entropy of a classifier's probabilities, as plain TFMA metrics.

TFMA's SparseCategoricalAccuracy and SparseCategoricalCrossentropy wrap the Keras metrics:
each Beam combiner instance builds Keras metric objects, traces their update functions with
autograph, and flushes buffered examples through TensorFlow in `compact` (before every
accumulator is encoded) and in `extract_output` (setting the metric's variables, then
reading the result). With confidence intervals that happens in each of the jackknife's
twenty delete-one samples, for every slice and model: py-spy put those metrics at about a
quarter of the Evaluator's Beam work on 500 examples, for two sums per example.

These compute the same numbers with numpy (the Keras definitions: argmax, ties to the lowest
class index; probabilities clipped to [1e-7, 1 - 1e-7] and renormalised before the log),
under the same metric names, so thresholds, the report and the run summary read them as
before. The accumulator is two floats, which merges and encodes for nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import apache_beam as beam
import numpy as np
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types, metric_util

from components.metric_keys import metric_keys

ACCURACY_METRIC = "sparse_categorical_accuracy"
CROSSENTROPY_METRIC = "sparse_categorical_crossentropy"
# tf_keras.backend.epsilon(): Keras clips probabilities to [EPSILON, 1 - EPSILON].
EPSILON = 1e-7


def labelled_predictions(
    element: metric_types.StandardMetricInputs,
    key: metric_types.MetricKey,
    eval_config: tfma.EvalConfig | None,
) -> Iterator[tuple[int, np.ndarray, float]]:
    """(true class index, predicted probabilities, example weight) of each example in a
    TFMA metric input, for the model and output `key` names (1.0 unless TFMA asks for
    weighted metrics)."""
    for label, prediction, weight in metric_util.to_label_prediction_example_weight(
        element,
        eval_config=eval_config,
        model_name=key.model_name,
        output_name=key.output_name,
        example_weighted=key.example_weighted,
        flatten=False,
    ):
        yield (
            int(np.asarray(label).reshape(-1)[0]),
            np.asarray(prediction, dtype=np.float64).reshape(-1),
            float(np.asarray(weight).reshape(-1)[0]),
        )


def correct(true: int, probabilities: np.ndarray) -> float:
    """1.0 if the highest-probability class (the lowest index among ties, as argmax) is
    the true one, else 0.0."""
    return float(int(np.argmax(probabilities)) == true)


def crossentropy(true: int, probabilities: np.ndarray) -> float:
    """-log of the true class's probability, clipped and renormalised as Keras does."""
    clipped = np.clip(probabilities, EPSILON, 1 - EPSILON)
    return float(-np.log(clipped[true] / clipped.sum()))


class _WeightedMeanCombiner(beam.CombineFn):
    """The weighted mean of a per-example score for one model and output; the
    accumulator is [weighted sum, total weight]."""

    def __init__(
        self,
        key: metric_types.MetricKey,
        score: Callable[[int, np.ndarray], float],
        eval_config: tfma.EvalConfig | None,
    ):
        self._key = key
        self._score = score
        self._eval_config = eval_config

    def create_accumulator(self) -> list[float]:
        return [0.0, 0.0]

    def add_input(
        self, accumulator: list[float], element: metric_types.StandardMetricInputs
    ) -> list[float]:
        for true, probabilities, weight in labelled_predictions(
            element, self._key, self._eval_config
        ):
            accumulator[0] += weight * self._score(true, probabilities)
            accumulator[1] += weight
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[list[float]]) -> list[float]:
        total, weight = 0.0, 0.0
        for accumulator in accumulators:
            total += accumulator[0]
            weight += accumulator[1]
        return [total, weight]

    def extract_output(self, accumulator: list[float]) -> dict:
        total, weight = accumulator
        return {self._key: total / weight if weight else float("nan")}


def _weighted_mean(score: Callable[[int, np.ndarray], float]) -> Callable:
    def computations(
        name: str,
        eval_config: tfma.EvalConfig | None = None,
        model_names: list[str] | None = None,
        output_names: list[str] | None = None,
        example_weighted: bool = False,
    ) -> metric_types.MetricComputations:
        return [
            metric_types.MetricComputation(
                keys=[key],
                preprocessors=None,  # labels, predictions and weights: TFMA's defaults
                combiner=_WeightedMeanCombiner(key, score, eval_config),
            )
            for key in metric_keys(name, model_names, output_names, example_weighted)
        ]

    return computations


class ClassAccuracy(tfma.metrics.Metric):
    """Share of examples whose highest-probability class is the label (Keras's
    SparseCategoricalAccuracy on probabilities)."""

    def __init__(self, name: str = ACCURACY_METRIC):
        super().__init__(_weighted_mean(correct), name=name)


class ClassCrossentropy(tfma.metrics.Metric):
    """Mean -log probability of the label (Keras's SparseCategoricalCrossentropy on
    probabilities)."""

    def __init__(self, name: str = CROSSENTROPY_METRIC):
        super().__init__(_weighted_mean(crossentropy), name=name)
