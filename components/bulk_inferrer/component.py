"""ImageBulkInferrer's spec: TFX's BulkInferrer (same spec, same parameters) with the
executor that keeps the photos' bytes out of the prediction logs (executor.py)."""

from __future__ import annotations

from tfx.components.bulk_inferrer.component import BulkInferrer
from tfx.dsl.components.base import executor_spec

from components.bulk_inferrer.executor import Executor


class ImageBulkInferrer(BulkInferrer):
    """BulkInferrer whose inference result holds no image bytes."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
