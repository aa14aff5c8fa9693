"""What runs inside the pipeline: ingest, evaluation config and the TFX module files.

The custom artifact types are importable as `components.<Title>`, the class path their
TYPE_NAME names (artifact_types.py says why).
"""

from components.artifact_types import (  # noqa: F401 - re-exported by name
    EvaluationReport,
    ExtraAssets,
    Predictions,
    TFLiteEvaluation,
)
