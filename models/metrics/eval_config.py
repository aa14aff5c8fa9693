"""The Evaluator's TFMA configuration: metrics, plots, slices and the blessing gate.

The gate is four TFMA thresholds, so TFMA's own validator decides the blessing and
records every failed rule in the Evaluator's validation result:

- accuracy_threshold: overall accuracy >= ACCURACY_THRESHOLD;
- majority_class: overall accuracy > the eval split's majority-class rate (a metric
  of our own, accuracy_over_majority, computed from TFMA's MultiClassConfusionMatrixPlot
  of the same slice: the class counts are known only once the eval split is read);
- class_recall: every class's recall >= MIN_CLASS_RECALL (class_metrics.ClassRecall,
  one value per class on the overall slice, with its own jackknife interval);
- vs_baseline (only when a blessed baseline exists): the upper end of the 95 %
  confidence interval of (candidate - baseline) accuracy >= -ACCURACY_MAX_DROP, i.e.
  a candidate is refused only when it is worse than the baseline by more than
  ACCURACY_MAX_DROP beyond sampling noise.

Why a metric of our own for the last rule: TFMA 0.47.1's metrics_validator compares
`float(metric)`, which for a metric with a confidence interval
(types.ValueWithTDistribution) is the unsampled point estimate, so TFMA's intervals
never influence a threshold by themselves. Its jackknife does compute the diff
metrics inside every jackknife sample (both models' predictions on the same examples
left out: a paired interval), and a CIDerivedMetricComputation runs after the
intervals exist and before validation.

Why no per-class slices: TFMA computes every metric and plot of the config on every slice,
AUC and the ROC and calibration curves included, which are undefined on a slice of one
class. Slices `label_text=<class>` for per-class recall made the Evaluator compute
everything three times on two classes; measured on 500 eval photos, a head-only re-run's
Evaluator went from 24.7-29.6 s to 20.4-22.4 s without them (three runs each).

Why the jackknife and not TFMA's Poisson bootstrap: the bootstrap feeds every example
into each of its 20 replicates, so the Evaluator paid 21 times for every metric and
plot (per class, per slice, per model); the delete-d jackknife puts each example in one
of 20 buckets once and merges the buckets. Measured on 500 eval photos with a
baseline: 64.5 s for the Evaluator with the bootstrap, 36.0 to 40.3 s with the jackknife,
same machine, one after the other. Both give a t-interval with 19 degrees of freedom.

AccuracyDiffUpperBound turns the interval of the accuracy diff into one number (with
TFMA's own interval formula, math_util.calculate_confidence_interval) that a plain change
threshold can gate on.
"""

from __future__ import annotations

import dataclasses
import json

import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types
from tensorflow_model_analysis.utils import math_util

from models import features
from models.metrics import class_metrics, worst_errors
from models.metrics.class_metrics import ACCURACY_METRIC
from models.metrics.metric_keys import metric_keys

DIFF_UPPER_BOUND_METRIC = "accuracy_diff_ci_upper"
OVER_MAJORITY_METRIC = "accuracy_over_majority"
CONFUSION_MATRIX_PLOT_NAME = "multi_class_confusion_matrix_plot"
# Accuracy and the majority rate are k/n fractions: "strictly above" is ">= this margin".
STRICTLY_ABOVE = 1e-9
CONFUSION_MATRIX_PLOT = "MultiClassConfusionMatrixPlot"
CALIBRATION_BUCKETS = 10
ROC_THRESHOLDS = 200

# Rule names, as reported by pipeline/summary.py and the evaluation report.
RULE_ACCURACY = "accuracy_threshold"
RULE_MAJORITY = "majority_class"
RULE_CLASS_RECALL = "class_recall"
RULE_BASELINE = "vs_baseline"


@dataclasses.dataclass(frozen=True)
class GateSettings:
    """The blessing gate's knobs (pipeline/configs.py)."""

    accuracy_threshold: float
    min_class_recall: float
    accuracy_max_drop: float
    beat_majority_class: bool = True


def class_counts(confusion_matrix) -> dict[int, float]:
    """{class index: weighted examples} of a MultiClassConfusionMatrixAtThresholds."""
    per_class: dict[int, float] = {}
    for entry in confusion_matrix.matrices[0].entries if confusion_matrix.matrices else []:
        per_class[entry.actual_class_id] = (
            per_class.get(entry.actual_class_id, 0.0) + entry.num_weighted_examples
        )
    return per_class


def majority_rate(confusion_matrix) -> float:
    """The largest class's share of the examples, from a MultiClassConfusionMatrixAtThresholds:
    the bound of the gate's majority rule, here (AccuracyOverMajority) and when the report
    explains it (components/evaluation_report/evaluation.py)."""
    per_class = class_counts(confusion_matrix)
    total = sum(per_class.values())
    return max(per_class.values()) / total if total else 0.0


def class_names(config: tfma.EvalConfig) -> list[str]:
    """The class names build_eval_config recorded in ClassRecall's config ([] in a config
    without ClassRecall: not one of build_eval_config's)."""
    for spec in config.metrics_specs:
        for metric in spec.metrics:
            if metric.class_name == class_metrics.ClassRecall.__name__ and metric.config:
                return list(json.loads(metric.config).get("class_names") or [])
    return []


def with_class_names(config: tfma.EvalConfig, class_names: list[str]) -> tfma.EvalConfig:
    """`config` (one of build_eval_config's) for the classes of the data at hand: the
    Evaluator's executor (components/evaluator/) calls it with the names of ImageExampleGen's
    report, so a spec compiled without reading the photos gets per-class metrics and the
    per-class gate for the classes that were ingested. Equal to build_eval_config(class_names,
    the same gate): tests/models/metrics/test_eval_config_classes.py checks it."""
    result = tfma.EvalConfig()
    result.CopyFrom(config)
    class_ids = list(range(len(class_names)))
    for spec in result.metrics_specs:
        if not spec.HasField("binarize"):
            continue  # not per class
        del spec.binarize.class_ids.values[:]
        spec.binarize.class_ids.values.extend(class_ids)
        if spec.aggregate.macro_average:
            spec.aggregate.class_weights.clear()
            spec.aggregate.class_weights.update({i: 1.0 for i in class_ids})
        for metric in spec.metrics:
            if metric.class_name == class_metrics.ClassRecall.__name__:
                metric.config = json.dumps({"class_names": list(class_names)})
    return result


def _over_majority(
    name: str = OVER_MAJORITY_METRIC,
    eval_config: tfma.EvalConfig | None = None,
    model_names: list[str] | None = None,
    output_names: list[str] | None = None,
    example_weighted: bool = False,
) -> metric_types.MetricComputations:
    computations = []
    for key in metric_keys(name, model_names, output_names, example_weighted):

        def result(metrics, key=key) -> dict:
            accuracy = plot = None
            for k, value in metrics.items():
                if getattr(k, "model_name", None) != key.model_name or k.is_diff:
                    continue
                if k.name == ACCURACY_METRIC and not isinstance(k, metric_types.PlotKey):
                    accuracy = float(value)  # the point estimate, as TFMA's validator
                elif k.name == CONFUSION_MATRIX_PLOT_NAME:
                    plot = value
            if accuracy is None or plot is None:
                return {}
            return {key: accuracy - majority_rate(plot)}

        computations.append(metric_types.CIDerivedMetricComputation(keys=[key], result=result))
    return computations


class AccuracyOverMajority(tfma.metrics.Metric):
    """Accuracy minus the slice's majority-class rate (> 0: better than always answering
    the largest class)."""

    def __init__(self, name: str = OVER_MAJORITY_METRIC):
        super().__init__(_over_majority, name=name)


def _diff_upper_bound(
    name: str = DIFF_UPPER_BOUND_METRIC,
    eval_config: tfma.EvalConfig | None = None,
    model_names: list[str] | None = None,
    output_names: list[str] | None = None,
    example_weighted: bool = False,
) -> metric_types.MetricComputations:
    computations = []
    # A diff key, so a change threshold applies to it, and TFX drops that threshold when
    # there is no baseline (first run: nothing to compare). The candidate's keys only.
    keys = metric_keys(
        name, model_names, output_names, example_weighted, is_diff=True, eval_config=eval_config
    )
    for key in keys:
        source = key._replace(name=ACCURACY_METRIC)

        def result(metrics, source=source, key=key) -> dict:
            if source not in metrics:
                return {}
            return {key: diff_interval(metrics[source])[2]}

        computations.append(metric_types.CIDerivedMetricComputation(keys=[key], result=result))
    return computations


def diff_interval(value) -> tuple[float, float, float]:
    """(point, lower, upper) of a TFMA metric value: the 95 % t-interval TFMA's writer
    stores for a ValueWithTDistribution; a plain number (no interval could be computed)
    is its own interval."""
    if isinstance(value, tfma.types.ValueWithTDistribution):
        _, lower, upper = math_util.calculate_confidence_interval(value)
        return float(value.unsampled_value), float(lower), float(upper)
    return float(value), float(value), float(value)


class AccuracyDiffUpperBound(tfma.metrics.Metric):
    """Upper end of the 95 % paired jackknife interval of (candidate - baseline) accuracy."""

    def __init__(self, name: str = DIFF_UPPER_BOUND_METRIC):
        super().__init__(_diff_upper_bound, name=name)


def build_eval_config(class_names: list[str], gate: GateSettings) -> tfma.EvalConfig:
    overall = tfma.SlicingSpec()

    def floor(value: float) -> tfma.MetricThreshold:
        return tfma.MetricThreshold(
            value_threshold=tfma.GenericValueThreshold(lower_bound={"value": value})
        )

    def on_overall(threshold: tfma.MetricThreshold) -> list[tfma.PerSliceMetricThreshold]:
        return [tfma.PerSliceMetricThreshold(slicing_specs=[overall], threshold=threshold)]

    majority_metrics = []
    if gate.beat_majority_class:
        majority_metrics.append(
            tfma.MetricConfig(
                class_name=AccuracyOverMajority.__name__,
                module=__name__,
                per_slice_thresholds=on_overall(floor(STRICTLY_ABOVE)),
            )
        )
    baseline_gate = tfma.MetricThreshold(
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={"value": -gate.accuracy_max_drop},
        )
    )
    class_ids = list(range(len(class_names)))
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name=features.TF_EXAMPLE_SIGNATURE,
                label_key=features.LABEL_KEY,
                prediction_key=features.PROBABILITIES_KEY,
                # tf_generic: call the signature, don't reload the Keras model and
                # recompute its compiled metrics (6x faster, half the memory).
                model_type=tfma.TF_GENERIC,
            )
        ],
        slicing_specs=[overall],
        options=tfma.Options(
            compute_confidence_intervals={"value": True},
            confidence_intervals=tfma.ConfidenceIntervalOptions(
                method=tfma.ConfidenceIntervalOptions.JACKKNIFE
            ),
        ),
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    # numpy, not TFMA's Keras wrappers (class_metrics.py says why)
                    tfma.MetricConfig(
                        class_name=class_metrics.ClassAccuracy.__name__,
                        module=class_metrics.__name__,
                        per_slice_thresholds=on_overall(floor(gate.accuracy_threshold)),
                    ),
                    tfma.MetricConfig(
                        class_name=class_metrics.ClassCrossentropy.__name__,
                        module=class_metrics.__name__,
                    ),
                    tfma.MetricConfig(
                        class_name=AccuracyDiffUpperBound.__name__,
                        module=__name__,
                        per_slice_thresholds=on_overall(baseline_gate),
                    ),
                ]
            ),
            # The candidate's alone: the gate's majority rule and the report's worst errors
            # and confusion matrix are about the candidate; the baseline's would be merged
            # in every jackknife sample for nothing. (With no baseline TFMA renames the one
            # model, and this list with it, to "".)
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(
                        class_name=CONFUSION_MATRIX_PLOT, config='{"thresholds": [0.0]}'
                    ),
                    *majority_metrics,
                    # The report's most confident mistakes, from this same pass.
                    tfma.MetricConfig(
                        class_name=worst_errors.WorstErrors.__name__, module=worst_errors.__name__
                    ),
                ],
                model_names=[tfma.CANDIDATE_KEY],
            ),
            # Each class's recall, gated, for the candidate (a sub key per class).
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(
                        class_name=class_metrics.ClassRecall.__name__,
                        module=class_metrics.__name__,
                        config=json.dumps({"class_names": list(class_names)}),
                        per_slice_thresholds=on_overall(floor(gate.min_class_recall)),
                    )
                ],
                binarize=tfma.BinarizationOptions(class_ids={"values": class_ids}),
                model_names=[tfma.CANDIDATE_KEY],
            ),
            # One-vs-rest per class, macro-averaged: AUC, precision and recall are
            # defined for any number of classes this way; the per-class plots give
            # the ROC / PR curves and the reliability diagram.
            tfma.MetricsSpec(
                metrics=[
                    # ROC_THRESHOLDS like the ROC plot: both read one histogram, and
                    # TFMA's default 10,000 would be merged in every jackknife sample.
                    tfma.MetricConfig(
                        class_name="AUC", config=f'{{"num_thresholds": {ROC_THRESHOLDS}}}'
                    ),
                    tfma.MetricConfig(class_name="Precision"),
                    tfma.MetricConfig(class_name="Recall"),
                ],
                binarize=tfma.BinarizationOptions(class_ids={"values": class_ids}),
                aggregate=tfma.AggregationOptions(
                    macro_average=True, class_weights={i: 1.0 for i in class_ids}
                ),
            ),
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(
                        class_name="ConfusionMatrixPlot",
                        config=f'{{"num_thresholds": {ROC_THRESHOLDS}}}',
                    ),
                    tfma.MetricConfig(
                        class_name="CalibrationPlot",
                        config=f'{{"num_buckets": {CALIBRATION_BUCKETS}}}',
                    ),
                ],
                binarize=tfma.BinarizationOptions(class_ids={"values": class_ids}),
                # The report draws the candidate's curves only (see above).
                model_names=[tfma.CANDIDATE_KEY],
            ),
        ],
    )
