"""The blessing decision read back from the Evaluator's output, rule by rule.

TFMA's validator decides (models/metrics/eval_config.py sets its thresholds); this module
only explains the decision: the candidate's and baseline's accuracy with their 95 %
intervals, the paired difference with its interval, each rule with its value, bound
and outcome, and which rule decided. The run summary, the evaluation report and the
model card all print this one record.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.writers import eval_config_writer

from models.metrics import class_metrics, eval_config

BASELINE_MODEL = "baseline"  # the name TFMA gives the baseline ModelSpec
OVERALL = "overall"


@dataclasses.dataclass(frozen=True)
class Interval:
    value: float
    lower: float  # 95 % interval (TFMA's t-interval over its jackknife samples)
    upper: float

    def __str__(self) -> str:
        return f"{self.value:.4f} [95% CI {self.lower:.4f}, {self.upper:.4f}]"


@dataclasses.dataclass(frozen=True)
class Rule:
    name: str
    applied: bool
    passed: bool
    value: float | None  # what was compared ...
    bound: float | None  # ... with this bound (value >= bound passes)
    text: str  # the rule in words, with its numbers


@dataclasses.dataclass(frozen=True)
class GateDecision:
    blessed: bool
    candidate: Interval
    baseline: Interval | None
    difference: Interval | None  # candidate - baseline, paired on the same examples
    class_recall: dict[str, Interval]
    class_counts: dict[str, int]
    majority_rate: float
    rules: tuple[Rule, ...]

    @property
    def decided_by(self) -> str:
        failed = [r.name for r in self.rules if r.applied and not r.passed]
        if failed:
            return "refused by " + ", ".join(failed)
        return (
            "blessed: every rule passed ("
            + ", ".join(r.name for r in self.rules if r.applied)
            + ")"
        )

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "decided_by": self.decided_by}


def _interval(entry) -> Interval:
    value = entry.value.double_value.value
    if entry.HasField("confidence_interval"):
        ci = entry.confidence_interval
        return Interval(value, ci.lower_bound.double_value.value, ci.upper_bound.double_value.value)
    return Interval(value, value, value)


def _slice_name(slice_key) -> str:
    if not slice_key.single_slice_keys:
        return OVERALL
    single = slice_key.single_slice_keys[0]
    return single.bytes_value.decode() if single.bytes_value else str(single.int64_value)


def _metric_entries(evaluation_uri: str) -> list[tuple[str, Any]]:
    """(slice name, MetricKeyAndValue) of every metric in the evaluation, read once."""
    return [
        (_slice_name(metrics_for_slice.slice_key), entry)
        for metrics_for_slice in tfma.load_metrics(evaluation_uri)
        for entry in metrics_for_slice.metric_keys_and_values
    ]


def _by_slice(entries: list[tuple[str, Any]]) -> dict[str, dict[tuple[str, str, bool], Interval]]:
    result: dict[str, dict] = {}
    for slice_name, entry in entries:
        by_key = result.setdefault(slice_name, {})
        key = entry.key
        if key.HasField("sub_key"):
            continue  # one class of a binarized metric
        name = key.name + ("_macro" if key.aggregation_type.macro_average else "")
        if entry.value.HasField("double_value"):
            by_key[(name, key.model_name, key.is_diff)] = _interval(entry)
    return result


def read_metrics(evaluation_uri: str) -> dict[str, dict[tuple[str, str, bool], Interval]]:
    """{slice: {(metric name, model name, is_diff): Interval}} for plain and macro-averaged
    (`<name>_macro`) metrics; slice is "overall" or, in evaluations made before
    ClassRecall, the class name of a `label_text` slice."""
    return _by_slice(_metric_entries(evaluation_uri))


def _class_recall(
    entries: list[tuple[str, Any]], candidate: str, class_names: list[str]
) -> dict[str, Interval]:
    """{class name: recall} of the candidate: ClassRecall's sub keys, overall slice."""
    recall = {
        class_names[entry.key.sub_key.class_id.value]: _interval(entry)
        for slice_name, entry in entries
        if slice_name == OVERALL
        and entry.key.name == class_metrics.RECALL_METRIC
        and entry.key.model_name == candidate
    }
    return {name: recall[name] for name in class_names if name in recall}


def candidate_name(config: tfma.EvalConfig) -> str:
    """The candidate's model name in an eval config ("" when there is no baseline)."""
    return next((s.name for s in config.model_specs if not s.is_baseline), "")


def candidate_model(evaluation_uri: str) -> str:
    """The candidate's model name in an Evaluator output ("" when there is no baseline)."""
    return candidate_name(eval_config_writer.load_eval_run(evaluation_uri)[0])


def candidate_plots(evaluation_uri: str, candidate: str | None = None) -> dict:
    """Overall-slice plots of the candidate model: {(plot name, class id or None): PlotData}."""
    if candidate is None:
        candidate = candidate_model(evaluation_uri)
    found = {}
    for plots_for_slice in tfma.load_plots(evaluation_uri):
        if plots_for_slice.slice_key.single_slice_keys:
            continue
        for entry in plots_for_slice.plot_keys_and_values:
            if entry.key.model_name != candidate:
                continue
            class_id = entry.key.sub_key.class_id.value if entry.key.HasField("sub_key") else None
            found[(entry.key.name, class_id)] = entry.value
    return found


def read_class_counts(evaluation_uri: str, candidate: str) -> dict[int, int]:
    """{class index: eval examples} from the candidate's MultiClassConfusionMatrixPlot."""
    data = candidate_plots(evaluation_uri, candidate).get(
        (eval_config.CONFUSION_MATRIX_PLOT_NAME, None)
    )
    if data is None:
        return {}
    counts = eval_config.class_counts(data.multi_class_confusion_matrix_at_thresholds)
    return {index: int(round(n)) for index, n in sorted(counts.items())}


def class_results_from_slices(
    metrics: dict[str, dict], candidate: str
) -> tuple[dict[str, Interval], dict[str, int]]:
    """(recall, eval examples) per class of an evaluation made before ClassRecall, whose
    `label_text=<class>` slices held them: a slice's accuracy is its class's recall."""
    classes = {name: slice_metrics for name, slice_metrics in metrics.items() if name != OVERALL}
    recall = {
        name: found[(eval_config.ACCURACY_METRIC, candidate, False)]
        for name, found in sorted(classes.items())
    }
    counts = {
        name: int(found[("example_count", candidate, False)].value)
        for name, found in sorted(classes.items())
    }
    return recall, counts


def _failed_rules(evaluation_uri: str) -> set[str]:
    failed = set()
    validation = tfma.load_validation_result(evaluation_uri)
    for per_slice in validation.metric_validations_per_slice:
        overall = not per_slice.slice_key.single_slice_keys
        for failure in per_slice.failures:
            if failure.metric_key.name == eval_config.DIFF_UPPER_BOUND_METRIC:
                failed.add(eval_config.RULE_BASELINE)
            elif failure.metric_key.name == eval_config.OVER_MAJORITY_METRIC:
                failed.add(eval_config.RULE_MAJORITY)
            elif failure.metric_key.name == class_metrics.RECALL_METRIC or not overall:
                failed.add(eval_config.RULE_CLASS_RECALL)
            else:
                failed.add(eval_config.RULE_ACCURACY)
    if not validation.validation_ok and not failed:
        failed.add("tfma_validation")  # e.g. a metric TFMA could not compute
    return failed


def _bounds(config: tfma.EvalConfig, candidate: str) -> dict[str, list[float]]:
    """Lower bounds of the accuracy thresholds (overall / per class) and the baseline
    rule's change threshold, from the eval config the Evaluator ran with."""
    bounds: dict[str, list[float]] = {
        "overall": [],
        "per_class": [],
        "max_drop": [],
        "majority": [],
    }
    thresholds = tfma.metrics.metric_thresholds_from_metrics_specs(
        config.metrics_specs, eval_config=config
    )
    for key, entries in thresholds.items():
        if key.model_name != candidate:
            continue
        for slice_spec, threshold in entries:
            if key.name == eval_config.ACCURACY_METRIC and not key.is_diff:
                # (a per-class slice's accuracy: evaluations made before ClassRecall)
                kind = "per_class" if slice_spec and slice_spec.feature_keys else "overall"
                bounds[kind].append(threshold.lower_bound.value)
            elif key.name == class_metrics.RECALL_METRIC:
                bounds["per_class"].append(threshold.lower_bound.value)
            elif key.name == eval_config.DIFF_UPPER_BOUND_METRIC:
                bounds["max_drop"].append(-threshold.absolute.value)
            elif key.name == eval_config.OVER_MAJORITY_METRIC:
                bounds["majority"].append(threshold.lower_bound.value)
    return bounds


def _accuracy_rule(failed: set[str], accuracy: float, bound: float) -> Rule:
    return Rule(
        eval_config.RULE_ACCURACY,
        True,
        eval_config.RULE_ACCURACY not in failed,
        accuracy,
        bound,
        f"accuracy {accuracy:.4f} >= ACCURACY_THRESHOLD {bound:g}",
    )


def _majority_rule(failed: set[str], applied: bool, accuracy: float, majority_rate: float) -> Rule:
    return Rule(
        eval_config.RULE_MAJORITY,
        applied,
        eval_config.RULE_MAJORITY not in failed,
        accuracy,
        majority_rate,
        f"accuracy {accuracy:.4f} > majority-class rate {majority_rate:.4f}"
        + ("" if applied else " (not applied: BEAT_MAJORITY_CLASS=false)"),
    )


def _class_recall_rule(failed: set[str], class_recall: dict, floor: float) -> Rule:
    worst = min(class_recall, key=lambda name: class_recall[name].value) if class_recall else ""
    worst_value = class_recall[worst].value if worst else float("nan")
    return Rule(
        eval_config.RULE_CLASS_RECALL,
        True,
        eval_config.RULE_CLASS_RECALL not in failed,
        worst_value,
        floor,
        f"lowest class recall {worst_value:.4f} ({worst}) >= MIN_CLASS_RECALL {floor:g}",
    )


def _baseline_rule(failed: set[str], difference, max_drops: list[float]) -> Rule:
    if difference is None or not max_drops:
        return Rule(
            eval_config.RULE_BASELINE,
            False,
            True,
            None,
            None,
            "no blessed baseline model yet: nothing to compare with",
        )
    max_drop = max(max_drops)
    return Rule(
        eval_config.RULE_BASELINE,
        True,
        eval_config.RULE_BASELINE not in failed,
        difference.upper,
        -max_drop,
        f"upper end of the 95% CI of (candidate - baseline) accuracy "
        f"{difference.upper:+.4f} >= -ACCURACY_MAX_DROP {-max_drop:+g}",
    )


def read_gate(evaluation_uri: str) -> GateDecision:
    """The decision recorded in a ModelEvaluation artifact (the Evaluator's output)."""
    config = eval_config_writer.load_eval_run(evaluation_uri)[0]
    entries = _metric_entries(evaluation_uri)
    metrics = _by_slice(entries)
    has_baseline = any(spec.is_baseline for spec in config.model_specs)
    candidate = candidate_name(config)
    accuracy = eval_config.ACCURACY_METRIC
    overall = metrics.get(OVERALL, {})
    class_names = eval_config.class_names(config)
    if class_names:
        class_recall = _class_recall(entries, candidate, class_names)
        counts = read_class_counts(evaluation_uri, candidate)
        class_counts = {name: counts.get(i, 0) for i, name in enumerate(class_names)}
    else:
        class_recall, class_counts = class_results_from_slices(metrics, candidate)
    total = sum(class_counts.values())
    majority_rate = max(class_counts.values()) / total if total else 0.0
    failed = _failed_rules(evaluation_uri)
    bounds = _bounds(config, candidate)
    candidate_accuracy = overall[(accuracy, candidate, False)]
    baseline = overall.get((accuracy, BASELINE_MODEL, False)) if has_baseline else None
    difference = overall.get((accuracy, candidate, True)) if has_baseline else None

    rules = []
    if bounds["overall"]:
        rules.append(_accuracy_rule(failed, candidate_accuracy.value, max(bounds["overall"])))
    rules.append(
        _majority_rule(failed, bool(bounds["majority"]), candidate_accuracy.value, majority_rate)
    )
    if bounds["per_class"]:
        rules.append(_class_recall_rule(failed, class_recall, max(bounds["per_class"])))
    rules.append(_baseline_rule(failed, difference, bounds["max_drop"]))
    for name in sorted(failed - {r.name for r in rules}):
        rules.append(Rule(name, True, False, None, None, "TFMA's validation failed"))
    return GateDecision(
        blessed=tfma.load_validation_result(evaluation_uri).validation_ok,
        candidate=candidate_accuracy,
        baseline=baseline,
        difference=difference,
        class_recall=class_recall,
        class_counts=class_counts,
        majority_rate=majority_rate,
        rules=tuple(rules),
    )


def _interval_text(interval: dict) -> str:
    return str(Interval(**interval))


def format_gate(decision: dict) -> list[str]:
    """Lines for the run summary, from GateDecision.as_dict()."""
    lines = [
        f"gate: {decision['decided_by']}",
        f"  candidate accuracy   {_interval_text(decision['candidate'])}",
    ]
    if decision["baseline"] is not None:
        lines.append(f"  baseline accuracy    {_interval_text(decision['baseline'])}")
    if decision["difference"] is not None:
        lines.append(f"  difference (paired)  {_interval_text(decision['difference'])}")
    recalls = ", ".join(f"{k}={v['value']:.3f}" for k, v in decision["class_recall"].items())
    lines.append(f"  per-class recall     {recalls}")
    for rule in decision["rules"]:
        status = ("PASS" if rule["passed"] else "FAIL") if rule["applied"] else "n/a "
        lines.append(f"  [{status}] {rule['name']}: {rule['text']}")
    return lines
