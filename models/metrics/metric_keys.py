"""The keys a custom TFMA metric computes: one per model and output TFMA asks for.

Why a module of its own: the blessing gate's derived metrics (eval_config.py) and the
report's worst-errors metric (report/worst_errors.py) build them the same way, and
eval_config imports worst_errors, so the helper cannot live in either.
"""

from __future__ import annotations

from collections.abc import Iterator

import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types


def metric_keys(
    name: str,
    model_names: list[str] | None,
    output_names: list[str] | None,
    example_weighted: bool,
    is_diff: bool = False,
    eval_config: tfma.EvalConfig | None = None,
) -> Iterator[metric_types.MetricKey]:
    """A metric's key for each model and output; with `eval_config`, the baseline model's
    keys are left out (a metric of the candidate only)."""
    baseline = tfma.utils.get_baseline_model_spec(eval_config) if eval_config else None
    for model_name in model_names or [""]:
        if baseline is not None and model_name == baseline.name:
            continue
        for output_name in output_names or [""]:
            yield metric_types.MetricKey(
                name,
                model_name=model_name,
                output_name=output_name,
                example_weighted=example_weighted,
                is_diff=is_diff,
            )
