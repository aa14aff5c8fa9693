"""PushedModelImport's spec: a pushed SavedModel version folder -> a Model artifact
(executor.py says why a plain Importer does not do)."""

# No `from __future__ import annotations`: TFX reads the component's annotations at runtime.
from tfx.dsl.component.experimental.annotations import OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from components.pushed_model_import import executor


@component
def PushedModelImport(  # noqa: N802 (TFX names components like classes)
    model: OutputArtifact[standard_artifacts.Model],
    pushed_model_dir: Parameter[str],
) -> None:
    """Copies the version's SavedModel into the Model artifact's Format-Serving/."""
    executor.adapt(pushed_model_dir, model)
