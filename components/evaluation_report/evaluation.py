"""The Evaluator's output (a ModelEvaluation artifact), read once.

The gate (gate.py), the report (build.py), the model card (model_card.py) and the run
summary (pipeline/summary.py) all need the same few files of one evaluation: the eval
config, the metrics, the plots and the validation result. `Evaluation.load` reads each
of them once, through TFMA's own readers (which go through tf.io.gfile, so a bucket
works like a local folder), and everything else here is derived from what it holds:
the candidate's name, the class names, the overall slice's metrics with their 95 %
intervals, the candidate's plots, the class counts, the worst errors and the EvalResult
Model Card Toolkit draws from.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.view import util as view_util
from tensorflow_model_analysis.view import view_types
from tensorflow_model_analysis.writers import eval_config_writer

from models.metrics import class_metrics, eval_config, worst_errors

BASELINE_MODEL = "baseline"  # the name TFMA gives the baseline ModelSpec
OVERALL = "overall"


class EvaluationError(ValueError):
    """An Evaluator output this code cannot read (missing, or from an older Evaluator)."""


@dataclasses.dataclass(frozen=True)
class Interval:
    value: float
    lower: float  # 95 % interval (TFMA's t-interval over its jackknife samples)
    upper: float

    def __str__(self) -> str:
        return f"{self.value:.4f} [95% CI {self.lower:.4f}, {self.upper:.4f}]"


def interval(entry: Any) -> Interval:
    """The Interval of a MetricKeyAndValue holding a double (its own interval when TFMA
    could not compute one)."""
    value = entry.value.double_value.value
    if entry.HasField("confidence_interval"):
        ci = entry.confidence_interval
        return Interval(value, ci.lower_bound.double_value.value, ci.upper_bound.double_value.value)
    return Interval(value, value, value)


MetricKey = tuple[str, str, bool]  # (metric name, model name, is_diff)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One Evaluator output, loaded. Build it with `Evaluation.load(uri)`."""

    uri: str
    config: tfma.EvalConfig
    data_location: str
    file_format: str
    model_locations: dict[str, str]
    metrics: tuple  # MetricsForSlice, one per slice
    plots: tuple  # PlotsForSlice, one per slice
    validation: Any  # ValidationResult

    @classmethod
    def load(cls, uri: str) -> Evaluation:
        config, data_location, file_format, model_locations = eval_config_writer.load_eval_run(uri)
        if config is None:
            raise EvaluationError(f"no eval config under {uri}: not an Evaluator output")
        if not eval_config.class_names(config):
            raise EvaluationError(
                f"the evaluation at {uri} was made before the Evaluator computed ClassRecall "
                "(project 0.x); run the pipeline again to evaluate the model with today's "
                "metrics"
            )
        return cls(
            uri=uri,
            config=config,
            data_location=data_location,
            file_format=file_format,
            model_locations=dict(model_locations),
            metrics=tuple(tfma.load_metrics(uri)),
            plots=tuple(tfma.load_plots(uri)),
            validation=tfma.load_validation_result(uri),
        )

    # --- what the config says ---------------------------------------------------------

    @functools.cached_property
    def candidate(self) -> str:
        """The candidate's model name ("" when there is no baseline: TFMA's one model)."""
        return next((s.name for s in self.config.model_specs if not s.is_baseline), "")

    @functools.cached_property
    def has_baseline(self) -> bool:
        return any(spec.is_baseline for spec in self.config.model_specs)

    @functools.cached_property
    def class_names(self) -> list[str]:
        return eval_config.class_names(self.config)

    @property
    def blessed(self) -> bool:
        return self.validation.validation_ok

    # --- metrics of the overall slice -------------------------------------------------

    @functools.cached_property
    def overall_entries(self) -> tuple:
        """Every MetricKeyAndValue of the overall slice (the only slice the config has)."""
        return tuple(
            entry
            for metrics_for_slice in self.metrics
            if not metrics_for_slice.slice_key.single_slice_keys
            for entry in metrics_for_slice.metric_keys_and_values
        )

    @functools.cached_property
    def overall(self) -> dict[MetricKey, Interval]:
        """{(metric name, model name, is_diff): Interval} of the overall slice's plain and
        macro-averaged (`<name>_macro`) metrics; one class's value of a binarized metric
        (a sub key) is left out."""
        found = {}
        for entry in self.overall_entries:
            key = entry.key
            if key.HasField("sub_key") or not entry.value.HasField("double_value"):
                continue
            name = key.name + ("_macro" if key.aggregation_type.macro_average else "")
            found[(name, key.model_name, key.is_diff)] = interval(entry)
        return found

    @functools.cached_property
    def class_recall(self) -> dict[str, Interval]:
        """{class name: recall} of the candidate (ClassRecall: a sub key per class), in
        class order."""
        names = self.class_names
        found = {
            names[entry.key.sub_key.class_id.value]: interval(entry)
            for entry in self.overall_entries
            if entry.key.name == class_metrics.RECALL_METRIC
            and entry.key.model_name == self.candidate
            and entry.key.sub_key.HasField("class_id")
            and entry.value.HasField("double_value")
        }
        return {name: found[name] for name in names if name in found}

    @functools.cached_property
    def worst_errors(self) -> list[worst_errors.WorstError]:
        """The candidate's most confident mistakes (models/metrics/worst_errors.py)."""
        for entry in self.overall_entries:
            key = entry.key
            if (
                key.name == worst_errors.WORST_ERRORS_METRIC
                and key.model_name == self.candidate
                and not key.is_diff
                and entry.value.HasField("bytes_value")
            ):
                return worst_errors.from_json(entry.value.bytes_value)
        raise EvaluationError(
            f"the evaluation at {self.uri} has no {worst_errors.WORST_ERRORS_METRIC} metric "
            "of the candidate (was the Evaluator given models/metrics/eval_config.py's config?)"
        )

    # --- plots ------------------------------------------------------------------------

    @functools.cached_property
    def candidate_plots(self) -> dict[tuple[str, int | None], Any]:
        """Overall-slice plots of the candidate: {(plot name, class id or None): PlotData}."""
        found = {}
        for plots_for_slice in self.plots:
            if plots_for_slice.slice_key.single_slice_keys:
                continue
            for entry in plots_for_slice.plot_keys_and_values:
                if entry.key.model_name != self.candidate:
                    continue
                key = entry.key
                class_id = key.sub_key.class_id.value if key.HasField("sub_key") else None
                found[(key.name, class_id)] = entry.value
        return found

    @functools.cached_property
    def confusion_matrix(self) -> Any:
        """The candidate's MultiClassConfusionMatrixAtThresholds (argmax, threshold 0)."""
        data = self.candidate_plots.get((eval_config.CONFUSION_MATRIX_PLOT_NAME, None))
        if data is None:
            raise EvaluationError(
                f"the evaluation at {self.uri} has no {eval_config.CONFUSION_MATRIX_PLOT} "
                "of the candidate"
            )
        return data.multi_class_confusion_matrix_at_thresholds

    @functools.cached_property
    def class_counts(self) -> dict[str, int]:
        """{class name: eval examples}, from the candidate's confusion matrix."""
        counts = eval_config.class_counts(self.confusion_matrix)
        return {name: int(round(counts.get(i, 0))) for i, name in enumerate(self.class_names)}

    @functools.cached_property
    def majority_rate(self) -> float:
        """The largest class's share of the eval examples (the gate's majority rule)."""
        return eval_config.majority_rate(self.confusion_matrix)

    # --- for Model Card Toolkit -------------------------------------------------------

    def eval_result(self) -> tfma.EvalResult:
        """The EvalResult tfma.load_eval_result would build from these files (what Model
        Card Toolkit draws its metric graphics from), without reading them again."""
        return view_types.EvalResult(
            slicing_metrics=[
                m
                for m in (view_util.convert_metrics_proto_to_dict(p) for p in self.metrics)
                if m is not None
            ],
            plots=[
                p
                for p in (view_util.convert_plots_proto_to_dict(p) for p in self.plots)
                if p is not None
            ],
            attributions=[],  # the config computes none
            config=self.config,
            data_location=self.data_location,
            file_format=self.file_format,
            model_location=next(iter(self.model_locations.values()), ""),
        )
