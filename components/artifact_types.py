"""Artifact types this pipeline adds to TFX's standard ones.

ExtraAssets: a folder of files that belong beside a pushed SavedModel in its
`assets.extra/` folder (which TF Serving ignores), such as the model card. The Pusher
copies them into the version before the version becomes visible.
"""

from tfx.types import artifact

# The types' names: "<namespace>.<Title>" is the only form KubeflowV2DagRunner accepts for a
# custom type (compiler_utils._SCHEMA_TITLE_RE), and TFX's Kubeflow V2 entrypoint imports the
# name as a class path when it reads an artifact of the type (kubeflow_v2_entrypoint_utils.
# _retrieve_class_path). So the namespace is this package, which re-exports the classes
# (components/__init__.py); a name of another namespace fails every task that reads the type
# on Vertex ("Could not import image_transfer.ExtraAssets": tools/replay_kubeflow.py found it).
NAMESPACE = "components"


class ExtraAssets(artifact.Artifact):
    TYPE_NAME = f"{NAMESPACE}.ExtraAssets"


class EvaluationReport(artifact.Artifact):
    """A folder with the evaluation report (index.html, report.json) and the model card."""

    TYPE_NAME = f"{NAMESPACE}.EvaluationReport"


class TFLiteEvaluation(artifact.Artifact):
    """The TFLite models' evaluation against the SavedModel (tflite_evaluation.json) and
    which of them passed their gate (components/tflite_evaluator/)."""

    TYPE_NAME = f"{NAMESPACE}.TFLiteEvaluation"


class Predictions(artifact.Artifact):
    """Batch inference's answers: predictions.jsonl, predictions.csv and summary.json
    (counts in / out / skipped, the skipped files), components/predictions_writer/."""

    TYPE_NAME = f"{NAMESPACE}.Predictions"
