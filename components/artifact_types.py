"""Artifact types this pipeline adds to TFX's standard ones.

ExtraAssets: a folder of files that belong beside a pushed SavedModel in its
`assets.extra/` folder (which TF Serving ignores), such as the model card. The Pusher
copies them into the version before the version becomes visible.
"""

from tfx.types import artifact


class ExtraAssets(artifact.Artifact):
    TYPE_NAME = "ImageTransferExtraAssets"
