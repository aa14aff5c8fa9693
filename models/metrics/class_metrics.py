"""Accuracy, cross-entropy and per-class recall of a classifier's probabilities, as plain
TFMA metrics.

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

ClassRecall gives each class's recall on the overall slice, one value per class (a
`binarize: class_ids` sub key), so the gate needs no per-class slice (eval_config.py says
what those cost).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import apache_beam as beam
import numpy as np
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types, metric_util

from models.metrics import calibration_histogram
from models.metrics.metric_keys import metric_keys

# Before TFMA builds any metric's computations: see calibration_histogram.py.
calibration_histogram.install()

ACCURACY_METRIC = "sparse_categorical_accuracy"
CROSSENTROPY_METRIC = "sparse_categorical_crossentropy"
RECALL_METRIC = "class_recall"  # per class (sub key class_id)
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


class _ClassRecallCombiner(beam.CombineFn):
    """Per class: the share of its examples whose highest-probability class is it. One
    combiner for all classes of one model and output; the accumulator is
    [[weighted correct, weighted examples] per class]."""

    def __init__(
        self,
        key: metric_types.MetricKey,
        class_keys: list[metric_types.MetricKey],
        eval_config: tfma.EvalConfig | None,
    ):
        self._key = key
        self._class_keys = class_keys
        self._index = {k.sub_key.class_id: i for i, k in enumerate(class_keys)}
        self._eval_config = eval_config

    def create_accumulator(self) -> list[list[float]]:
        return [[0.0, 0.0] for _ in self._class_keys]

    def add_input(
        self, accumulator: list[list[float]], element: metric_types.StandardMetricInputs
    ) -> list[list[float]]:
        for true, probabilities, weight in labelled_predictions(
            element, self._key, self._eval_config
        ):
            index = self._index.get(true)
            if index is not None:
                accumulator[index][0] += weight * correct(true, probabilities)
                accumulator[index][1] += weight
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[list[list[float]]]) -> list[list[float]]:
        merged = self.create_accumulator()
        for accumulator in accumulators:
            for total, (hits, weight) in zip(merged, accumulator):
                total[0] += hits
                total[1] += weight
        return merged

    def extract_output(self, accumulator: list[list[float]]) -> dict:
        return {
            key: hits / weight if weight else float("nan")
            for key, (hits, weight) in zip(self._class_keys, accumulator)
        }


def _class_recall(
    name: str = RECALL_METRIC,
    eval_config: tfma.EvalConfig | None = None,
    model_names: list[str] | None = None,
    output_names: list[str] | None = None,
    sub_keys: list[metric_types.SubKey | None] | None = None,
    example_weighted: bool = False,
    class_names: list[str] | None = None,  # recorded in the config, not used here
) -> metric_types.MetricComputations:
    class_ids = [s.class_id for s in sub_keys or [] if s is not None and s.class_id is not None]
    if not class_ids:
        raise ValueError(f"{name} needs a MetricsSpec with binarize: class_ids")
    computations = []
    for key in metric_keys(name, model_names, output_names, example_weighted):
        class_keys = [key._replace(sub_key=metric_types.SubKey(class_id=i)) for i in class_ids]
        computations.append(
            metric_types.MetricComputation(
                keys=class_keys,
                preprocessors=None,  # the raw labels and probabilities, not binarized
                combiner=_ClassRecallCombiner(key, class_keys, eval_config),
            )
        )
    return computations


class ClassRecall(tfma.metrics.Metric):
    """Each class's recall under the classifier's own rule (the highest-probability class
    is the answer), one value per `binarize: class_ids` sub key: the accuracy on that
    class's examples. TFMA's Recall cannot: a class_id (or binarize) with top_k is
    refused, and without top_k it thresholds one class's probability at 0.5.

    `class_names` (the class index's name, in order) rides in the metric's config so the
    evaluation records them; the gate and the report read them from there."""

    def __init__(self, name: str = RECALL_METRIC, class_names: list[str] | None = None):
        super().__init__(_class_recall, name=name, class_names=class_names)
