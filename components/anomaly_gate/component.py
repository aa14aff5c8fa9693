"""AnomalyGate's spec: a function component over ExampleValidator's anomalies; the work is
in executor.py (read, describe, block or warn)."""

# No `from __future__ import annotations`: TFX reads the component's annotations at runtime.
from tfx.dsl.component.experimental.annotations import InputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from components.anomaly_gate.executor import BLOCK, gate


@component
def AnomalyGate(  # noqa: N802 (TFX names components like classes)
    anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
    mode: Parameter[str] = BLOCK,
) -> None:
    """Fails the run on ExampleValidator anomalies in block mode; warns in warn mode."""
    gate(anomalies, mode)
