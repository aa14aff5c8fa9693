"""TFMA's calibration histogram, held in numpy arrays instead of one object per bucket.

Why: AUC, the ROC curves (ConfusionMatrixPlot) and the reliability diagram
(CalibrationPlot) all derive from TFMA's calibration histogram
(tensorflow_model_analysis/metrics/calibration_histogram.py): 10,000 buckets per class
and model, whatever thresholds the metric asks for. Its accumulator is a dict with one
`Bucket` dataclass per non-empty bucket, about one per eval example. The jackknife
(eval_config.py) cuts the eval split into 20 partitions and merges each partition's
accumulator into 19 of its 20 samples, and Beam pickles every accumulator between those
stages: on 500 eval photos that was 678,838 `Bucket` pickles (130 MB) per Evaluator run,
and Beam's PickleCoder was the largest single cost of a head-only re-run's Evaluator.

This combiner is TFMA's, with a different accumulator: the ids of the non-empty buckets
and their three sums (weighted labels, predictions and examples) as two numpy arrays,
which pickle as two buffers and merge with one np.unique and three np.bincount. Its
add_input reads each example exactly as TFMA's does, and extract_output returns TFMA's
own Histogram (the same buckets in the same order, each sum added in the same order), so
everything downstream (rebinning, AUC, the plots) is TFMA's code, unchanged.

install() puts the class in place of TFMA's, which `calibration_histogram()` looks up
each time a metric builds its computations. class_metrics.py (which eval_config.py
imports, and TFMA imports for the config's first custom metric) and the Evaluator's module
file (modules/evaluator.py) call it, so it is in place in whichever process TFMA builds
the metrics.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from tensorflow_model_analysis.metrics import calibration_histogram as tfma_histogram
from tensorflow_model_analysis.metrics import metric_types, metric_util

# TFMA's class, kept before install() replaces the module attribute.
_TFMA_COMBINER = tfma_histogram._CalibrationHistogramCombiner


class HistogramAccumulator:
    """Non-empty buckets: `ids` (sorted, unique) and `sums` ([len(ids), 3]: weighted
    labels, predictions, examples). Examples added since the last fold wait in lists."""

    __slots__ = ("ids", "sums", "_new_ids", "_new_sums")

    def __init__(self, ids: np.ndarray | None = None, sums: np.ndarray | None = None):
        self.ids = np.zeros(0, np.int64) if ids is None else ids
        self.sums = np.zeros((0, 3), np.float64) if sums is None else sums
        self._new_ids: list[int] = []
        self._new_sums: list[tuple[float, float, float]] = []

    def add(self, bucket_id: int, label: float, prediction: float, weight: float) -> None:
        self._new_ids.append(bucket_id)
        self._new_sums.append((label, prediction, weight))

    def fold(self) -> HistogramAccumulator:
        """Sum the waiting examples into the arrays (in their order, after the buckets'
        current sums, as TFMA's `+=` does)."""
        if self._new_ids:
            new_ids = np.asarray(self._new_ids, np.int64)
            new_sums = np.asarray(self._new_sums, np.float64)
            self._new_ids, self._new_sums = [], []
            self.ids, self.sums = _sum_by_id(
                np.concatenate([self.ids, new_ids]), np.concatenate([self.sums, new_sums])
            )
        return self

    def __reduce__(self):
        self.fold()
        return HistogramAccumulator, (self.ids, self.sums)


def _sum_by_id(ids: np.ndarray, sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows with the same id summed in row order (np.bincount adds in input order)."""
    unique, index = np.unique(ids, return_inverse=True)
    summed = np.stack(
        [np.bincount(index, weights=sums[:, column], minlength=len(unique)) for column in range(3)],
        axis=1,
    )
    return unique, summed


class NumpyCalibrationHistogramCombiner(_TFMA_COMBINER):
    """TFMA's _CalibrationHistogramCombiner with a HistogramAccumulator."""

    def create_accumulator(self) -> HistogramAccumulator:
        return HistogramAccumulator()

    def add_input(
        self, accumulator: HistogramAccumulator, element: metric_types.StandardMetricInputs
    ) -> HistogramAccumulator:
        # TFMA's add_input, line for line, but for where the sums go.
        for label, prediction, example_weight in metric_util.to_label_prediction_example_weight(
            element,
            eval_config=self._eval_config,
            model_name=self._key.model_name,
            output_name=self._key.output_name,
            sub_key=self._key.sub_key,
            fractional_labels=self._fractional_labels,
            flatten=True,
            aggregation_type=self._aggregation_type,
            class_weights=self._class_weights,
            example_weighted=self._example_weighted,
        ):
            example_weight = float(example_weight)
            label = float(label)
            prediction = float(prediction)
            bucket = self._bucket_index(prediction if self._prediction_based_bucketing else label)
            accumulator.add(
                bucket, label * example_weight, prediction * example_weight, example_weight
            )
        return accumulator

    def merge_accumulators(
        self, accumulators: Iterable[HistogramAccumulator]
    ) -> HistogramAccumulator:
        folded = [accumulator.fold() for accumulator in accumulators]
        if len(folded) == 1:
            return folded[0]
        ids, sums = _sum_by_id(
            np.concatenate([a.ids for a in folded]), np.concatenate([a.sums for a in folded])
        )
        return HistogramAccumulator(ids, sums)

    def compact(self, accumulator: HistogramAccumulator) -> HistogramAccumulator:
        return accumulator.fold()

    def extract_output(
        self, accumulator: HistogramAccumulator
    ) -> dict[metric_types.PlotKey, tfma_histogram.Histogram]:
        accumulator.fold()
        return {
            self._key: [
                tfma_histogram.Bucket(int(bucket_id), float(labels), float(predictions), float(n))
                for bucket_id, (labels, predictions, n) in zip(accumulator.ids, accumulator.sums)
            ]
        }


def install() -> None:
    """Make TFMA build every calibration histogram with NumpyCalibrationHistogramCombiner
    (idempotent)."""
    tfma_histogram._CalibrationHistogramCombiner = NumpyCalibrationHistogramCombiner
