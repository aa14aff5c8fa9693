"""TFLiteEvaluator's spec: the TFLite models of a Model artifact against its SavedModel on
the eval split, paired; the work (and the rule) is in executor.py."""

# No `from __future__ import annotations`: TFX reads the component's annotations at runtime.
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from components.artifact_types import TFLiteEvaluation
from components.tflite_evaluator import executor
from models.options import TFLITE_MAX_DROP, TFLITE_MIN_AGREEMENT


@component
def TFLiteEvaluator(  # noqa: N802 (TFX names components like classes)
    examples: InputArtifact[standard_artifacts.Examples],
    model: InputArtifact[standard_artifacts.Model],
    evaluation: OutputArtifact[TFLiteEvaluation],
    eval_split: Parameter[str] = "eval",
    min_agreement: Parameter[float] = TFLITE_MIN_AGREEMENT,
    max_drop: Parameter[float] = TFLITE_MAX_DROP,
) -> None:
    """Scores model.tflite and model_int8.tflite against the SavedModel; refuses either
    below TFLITE_MIN_AGREEMENT or worse beyond noise by more than TFLITE_MAX_DROP."""
    executor.run(examples, model, evaluation, eval_split, min_agreement, max_drop)
