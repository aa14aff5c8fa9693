"""The blessing decision read back from the Evaluator's output, rule by rule.

TFMA's validator decides (models/metrics/eval_config.py sets its thresholds); this module
only explains the decision: the candidate's and baseline's accuracy with their 95 %
intervals, the paired difference with its interval, each rule with its value, bound
and outcome, and which rule decided. The run summary, the evaluation report and the
model card all print this one record.
"""

from __future__ import annotations

import dataclasses

import tensorflow_model_analysis as tfma

from components.evaluation_report.evaluation import BASELINE_MODEL, Evaluation, Interval
from models.metrics import class_metrics, eval_config


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


def _failed_rules(validation) -> set[str]:
    failed = set()
    for per_slice in validation.metric_validations_per_slice:
        for failure in per_slice.failures:
            if failure.metric_key.name == eval_config.DIFF_UPPER_BOUND_METRIC:
                failed.add(eval_config.RULE_BASELINE)
            elif failure.metric_key.name == eval_config.OVER_MAJORITY_METRIC:
                failed.add(eval_config.RULE_MAJORITY)
            elif failure.metric_key.name == class_metrics.RECALL_METRIC:
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
        for _slice_spec, threshold in entries:
            if key.name == eval_config.ACCURACY_METRIC and not key.is_diff:
                bounds["overall"].append(threshold.lower_bound.value)
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


def read_gate(evaluation: Evaluation) -> GateDecision:
    """The decision recorded in an Evaluator output (a ModelEvaluation artifact)."""
    candidate = evaluation.candidate
    overall = evaluation.overall
    accuracy = eval_config.ACCURACY_METRIC
    candidate_accuracy = overall[(accuracy, candidate, False)]
    has_baseline = evaluation.has_baseline
    baseline = overall.get((accuracy, BASELINE_MODEL, False)) if has_baseline else None
    difference = overall.get((accuracy, candidate, True)) if has_baseline else None
    majority_rate = evaluation.majority_rate
    failed = _failed_rules(evaluation.validation)
    bounds = _bounds(evaluation.config, candidate)

    rules = []
    if bounds["overall"]:
        rules.append(_accuracy_rule(failed, candidate_accuracy.value, max(bounds["overall"])))
    rules.append(
        _majority_rule(failed, bool(bounds["majority"]), candidate_accuracy.value, majority_rate)
    )
    if bounds["per_class"]:
        rules.append(_class_recall_rule(failed, evaluation.class_recall, max(bounds["per_class"])))
    rules.append(_baseline_rule(failed, difference, bounds["max_drop"]))
    for name in sorted(failed - {r.name for r in rules}):
        rules.append(Rule(name, True, False, None, None, "TFMA's validation failed"))
    return GateDecision(
        blessed=evaluation.blessed,
        candidate=candidate_accuracy,
        baseline=baseline,
        difference=difference,
        class_recall=evaluation.class_recall,
        class_counts=evaluation.class_counts,
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
