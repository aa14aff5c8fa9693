"""The model's most confident mistakes, as a TFMA metric of the Evaluator's own pass.

The evaluation report lists the K most confident wrong answers on the eval split. The
Evaluator already has the candidate's prediction for every eval example; this metric keeps the K
wrong predictions with the highest confidence as it goes (a Beam CombineFn holding at
most K entries, so merging partial results gives the global top K), with the example's
`source_path` feature to find its photo again. The report then needs no model of its
own: it reads this metric and only decodes the K photos for thumbnails.

The value is JSON (bytes, MetricValue.bytes_value in the metrics file). TFMA leaves
non-numeric values out of baseline diffs and out of confidence-interval samples, and no
threshold names this metric, so the comparison, the confidence intervals and the blessing gate
ignore it. It is computed for the candidate model only, on every slice TFMA computes
metrics for; the report reads the overall slice's value back through the one reader of
the Evaluator's output (components/evaluation_report/evaluation.py, `worst_errors`).
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import json
from collections.abc import Iterable

import apache_beam as beam
import numpy as np
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types

from models import features
from models.metrics.class_metrics import labelled_predictions
from models.metrics.metric_keys import metric_keys

WORST_ERRORS = 12  # K: how many mistakes the report shows
WORST_ERRORS_METRIC = "worst_errors"


@dataclasses.dataclass(frozen=True)
class WorstError:
    """One wrong prediction: which example, the true and predicted class indices, and the
    predicted class's probability."""

    source_path: str
    label: int
    predicted: int
    confidence: float


def _rank(error: WorstError) -> tuple[float, str]:
    # Most confident first; equal confidences by path, so the top K does not depend on
    # the order in which Beam feeds and merges the examples.
    return (-error.confidence, error.source_path)


def top_k(errors: Iterable[WorstError], k: int = WORST_ERRORS) -> list[WorstError]:
    """The k highest-ranked errors, best (most confident) first."""
    return heapq.nsmallest(k, errors, key=_rank)


def to_json(errors: list[WorstError]) -> bytes:
    return json.dumps([dataclasses.asdict(e) for e in errors]).encode()


def from_json(value: bytes) -> list[WorstError]:
    return [WorstError(**entry) for entry in json.loads(value)]


def _source_path(element: metric_types.StandardMetricInputs) -> str:
    value = element.features.get(features.SOURCE_PATH_KEY) if element.features else None
    if value is None:
        raise ValueError(
            f"{WORST_ERRORS_METRIC}: the example has no {features.SOURCE_PATH_KEY!r} feature "
            "(ingest writes it into every tf.Example; was the Evaluator given other examples?)"
        )
    value = np.asarray(value).reshape(-1)[0]
    return value.decode() if isinstance(value, bytes) else str(value)


class WorstErrorsCombiner(beam.CombineFn):
    """Top K wrong predictions by confidence; the accumulator is a list of <= k WorstErrors."""

    def __init__(
        self,
        key: metric_types.MetricKey,
        eval_config: tfma.EvalConfig | None = None,
        k: int = WORST_ERRORS,
    ):
        self._key = key
        self._eval_config = eval_config
        self._k = k

    def create_accumulator(self) -> list[WorstError]:
        return []

    def add_input(
        self, accumulator: list[WorstError], element: metric_types.StandardMetricInputs
    ) -> list[WorstError]:
        for true, probabilities, _ in labelled_predictions(element, self._key, self._eval_config):
            predicted = int(np.argmax(probabilities))
            if predicted == true:
                continue
            error = WorstError(
                _source_path(element), true, predicted, float(probabilities[predicted])
            )
            accumulator = top_k([*accumulator, error], self._k)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[list[WorstError]]) -> list[WorstError]:
        return top_k(itertools.chain.from_iterable(accumulators), self._k)

    def extract_output(self, accumulator: list[WorstError]) -> dict:
        return {self._key: to_json(top_k(accumulator, self._k))}


def _worst_errors(
    name: str = WORST_ERRORS_METRIC,
    eval_config: tfma.EvalConfig | None = None,
    model_names: list[str] | None = None,
    output_names: list[str] | None = None,
    example_weighted: bool = False,
) -> metric_types.MetricComputations:
    # The candidate's keys only: the report lists the candidate's mistakes.
    keys = metric_keys(name, model_names, output_names, example_weighted, eval_config=eval_config)
    return [
        metric_types.MetricComputation(
            keys=[key],
            # Labels and predictions (the defaults) plus the one feature that names the example.
            preprocessors=[
                metric_types.FeaturePreprocessor(feature_keys=[features.SOURCE_PATH_KEY])
            ],
            combiner=WorstErrorsCombiner(key, eval_config),
        )
        for key in keys
    ]


class WorstErrors(tfma.metrics.Metric):
    """The WORST_ERRORS most confident wrong predictions (JSON list of WorstError)."""

    def __init__(self, name: str = WORST_ERRORS_METRIC):
        super().__init__(_worst_errors, name=name)

    @property
    def compute_confidence_interval(self) -> bool:
        return False  # a list, not a number: no interval
