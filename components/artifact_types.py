"""Artifact types this pipeline adds to TFX's standard ones.

ExtraAssets: a folder of files that belong beside a pushed SavedModel in its
`assets.extra/` folder (which TF Serving ignores), such as the model card. The Pusher
copies them into the version before the version becomes visible.
"""

from tfx.types import artifact


class ExtraAssets(artifact.Artifact):
    # <namespace>.<Title>: the only form KubeflowV2DagRunner accepts for a custom type.
    TYPE_NAME = "image_transfer.ExtraAssets"


class EvaluationReport(artifact.Artifact):
    """A folder with the evaluation report (index.html, report.json) and the model card."""

    TYPE_NAME = "image_transfer.EvaluationReport"


class TFLiteEvaluation(artifact.Artifact):
    """The TFLite models' evaluation against the SavedModel (tflite_evaluation.json) and
    which of them passed their gate (components/tflite_evaluator/)."""

    TYPE_NAME = "image_transfer.TFLiteEvaluation"


class Predictions(artifact.Artifact):
    """Batch inference's answers: predictions.jsonl, predictions.csv and summary.json
    (counts in / out / skipped, the skipped files), components/predictions_writer/."""

    TYPE_NAME = "image_transfer.Predictions"
