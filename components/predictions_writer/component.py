"""PredictionsWriter's spec: the BulkInferrer's logs -> predictions.jsonl + .csv (executor.py)."""

# No `from __future__ import annotations`: TFX reads the component's annotations at runtime.
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from components.artifact_types import Predictions
from components.predictions_writer import executor


@component
def PredictionsWriter(  # noqa: N802 (TFX names components like classes)
    inference_result: InputArtifact[standard_artifacts.InferenceResult],
    examples: InputArtifact[standard_artifacts.Examples],
    predictions: OutputArtifact[Predictions],
    model_version: Parameter[str] = "",
    output_dir: Parameter[str] = "",
) -> None:
    """Writes the predictions into its artifact and, when given, output_dir."""
    executor.run(inference_result, examples, predictions, model_version, output_dir)
