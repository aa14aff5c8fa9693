"""The Evaluator's numpy calibration histogram gives TFMA's histogram, bucket for bucket,
and pickles without one object per bucket."""

from __future__ import annotations

import pickle
import pickletools

import numpy as np
import pytest
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import calibration_histogram as tfma_histogram
from tensorflow_model_analysis.metrics import metric_types

from models.metrics import calibration_histogram, class_metrics

PARTITIONS = 20  # as TFMA's jackknife


def _elements(rng: np.random.Generator, n: int, classes: int) -> list:
    probabilities = rng.dirichlet(np.ones(classes), size=n)
    probabilities[0] = 1.0 / classes  # ties
    probabilities[1] = np.eye(classes)[0]  # exactly 0 and 1
    labels = rng.integers(0, classes, size=n)
    weights = rng.uniform(0.5, 2.0, size=n)  # sums that are not integers
    return [
        metric_types.StandardMetricInputs(
            labels=np.array([label]), predictions=p, example_weights=np.array([w])
        )
        for label, p, w in zip(labels, probabilities, weights)
    ]


def _combiner(cls, class_id: int):
    key = metric_types.PlotKey(
        name="histogram", sub_key=metric_types.SubKey(class_id=class_id), example_weighted=True
    )
    return key, cls(
        key=key,
        eval_config=None,
        aggregation_type=None,
        class_weights=None,
        example_weighted=True,
        num_buckets=tfma_histogram.DEFAULT_NUM_BUCKETS,
        left=0.0,
        right=1.0,
        prediction_based_bucketing=True,
        fractional_labels=True,
    )


def _jackknife(cls, class_id: int, elements: list) -> list:
    """The full histogram and each delete-one-partition sample, with every accumulator
    pickled between steps as Beam encodes it between stages."""
    key, combiner = _combiner(cls, class_id)
    partitions = [combiner.create_accumulator() for _ in range(PARTITIONS)]
    for i, element in enumerate(elements):
        partitions[i % PARTITIONS] = combiner.add_input(partitions[i % PARTITIONS], element)
    encoded = [pickle.dumps(combiner.compact(a)) for a in partitions]
    results = []
    for left_out in [None, *range(PARTITIONS)]:
        kept = [pickle.loads(e) for i, e in enumerate(encoded) if i != left_out]
        merged = combiner.merge_accumulators(kept)
        results.append(combiner.extract_output(pickle.loads(pickle.dumps(merged)))[key])
    return results


@pytest.mark.parametrize("classes", [2, 5])
def test_same_histogram_as_tfma_in_every_jackknife_sample(classes):
    elements = _elements(np.random.default_rng(classes), 300, classes)
    for class_id in range(classes):
        expected = _jackknife(calibration_histogram._TFMA_COMBINER, class_id, elements)
        found = _jackknife(
            calibration_histogram.NumpyCalibrationHistogramCombiner, class_id, elements
        )
        # The same buckets, each sum added in the same order: equal, not just close.
        assert found == expected
        assert all(isinstance(b, tfma_histogram.Bucket) for b in found[0])


def _pickled_objects(accumulator) -> int:
    return sum(
        1
        for op, _, _ in pickletools.genops(pickle.dumps(accumulator))
        if op.name == "REDUCE" or op.name.startswith("NEWOBJ") or op.name == "BUILD"
    )


def test_an_accumulator_pickles_as_a_few_arrays_whatever_its_buckets():
    """TFMA's pickles one Bucket per non-empty bucket (about one per example); this one
    two arrays (a fixed handful of pickle objects), however many buckets are filled."""
    objects = {}
    for n in (20, 400):
        elements = _elements(np.random.default_rng(n), n, 2)
        for cls in (
            calibration_histogram._TFMA_COMBINER,
            calibration_histogram.NumpyCalibrationHistogramCombiner,
        ):
            _, combiner = _combiner(cls, 1)
            accumulator = combiner.create_accumulator()
            for element in elements:
                accumulator = combiner.add_input(accumulator, element)
            objects[(cls.__name__, n)] = _pickled_objects(accumulator)
    numpy_name = calibration_histogram.NumpyCalibrationHistogramCombiner.__name__
    assert objects[(numpy_name, 20)] == objects[(numpy_name, 400)]
    tfma_name = calibration_histogram._TFMA_COMBINER.__name__
    assert objects[(tfma_name, 400)] > 300


def test_tfma_metrics_build_their_histogram_with_it():
    """class_metrics (imported by eval_config, the first module TFMA imports for the
    Evaluator's config) installs it: AUC, the ROC plot and the calibration plot use it."""
    assert class_metrics.calibration_histogram is calibration_histogram
    for metric in (
        tfma.metrics.AUC(num_thresholds=200),
        tfma.metrics.ConfusionMatrixPlot(num_thresholds=200),
        tfma.metrics.CalibrationPlot(num_buckets=10),
    ):
        combiners = [
            c.combiner
            for c in metric.computations(sub_keys=[metric_types.SubKey(class_id=0)])
            if isinstance(c, metric_types.MetricComputation)
        ]
        assert combiners
        assert all(
            isinstance(c, calibration_histogram.NumpyCalibrationHistogramCombiner)
            for c in combiners
        )
