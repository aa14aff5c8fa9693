"""Artifact types this pipeline adds to TFX's standard ones.

ExtraAssets: a folder of files that belong beside a pushed SavedModel in its
`assets.extra/` folder (which TF Serving ignores), such as the model card. The Pusher
copies them into the version before the version becomes visible.
"""

from tfx.types import artifact


class ExtraAssets(artifact.Artifact):
    TYPE_NAME = "ImageTransferExtraAssets"


class EvaluationReport(artifact.Artifact):
    """A folder with the evaluation report (index.html, report.json) and the model card."""

    TYPE_NAME = "ImageTransferEvaluationReport"
