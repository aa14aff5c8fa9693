"""ImageEvaluator: TFX's Evaluator whose per-class metrics and gate are for the classes of
the data the run ingested, not of a listing made when the pipeline was compiled.

A spec compiled for Vertex reads no photo (the photos belong to the run), and the same spec
runs on another snapshot of the folder, so the class names are known only once
ImageExampleGen has written its ingest report. The executor (executor.py) completes the
eval_config from that report before TFX's Evaluator runs; everything else is TFX's.
"""

from __future__ import annotations

from tfx.components.evaluator.component import Evaluator
from tfx.dsl.components.base import executor_spec

from components.evaluator.executor import Executor


class ImageEvaluator(Evaluator):
    """TFX's Evaluator (same spec, inputs and outputs); eval_config completed at run time."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
