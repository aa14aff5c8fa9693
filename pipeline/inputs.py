"""What a run needs before the pipeline is compiled: the image folder checked, the weights.

The demo dataset is generated when neither IMAGES nor EXAMPLES is given (creating input,
not ingesting it: the photos are read by ImageExampleGen inside the pipeline). The folder
is listed, not read, so a wrong layout, a single class or undecodable file names stop the
run with a clear message before anything starts. The backbone weights are resolved so their
file and hash become part of the Trainer's cache key.

No random weights where real ones can be had: when the demo asks for a backbone whose
ImageNet file is absent (ResNet50 without internet), it runs EfficientNet-Lite0 with the
ImageNet weights packaged in the lock file instead, and says so; only when even those are
missing does it fall back to random weights. The backbone is decided here, before the
pipeline is built, because the Transform graph's preprocessing depends on it.

A packaged (Vertex) compile (prepare_packaged_inputs) reads neither: the photos and the
weights belong to the run, in the container. IMAGES is passed on as it is given (the spec's
run-time parameter), and the weights are deferred to the Trainer (weights.deferred_record).
"""

from __future__ import annotations

import dataclasses
import logging

from components.image_example_gen import ingest
from models import backbones, weights
from pipeline import demo_data
from pipeline.configs import PipelineConfig

# The demo's backbone when the one asked for has no ImageNet file here.
PACKAGED_FALLBACK_BACKBONE = "efficientnet_lite0"


@dataclasses.dataclass(frozen=True)
class PreparedInputs:
    images_dir: str  # empty when the run reads EXAMPLES
    weights_record: weights.WeightsRecord
    # The configuration to build the pipeline from: the caller's, with BACKBONE replaced
    # when the demo substituted a pretrained backbone (weights_record.substitution says why).
    config: PipelineConfig | None = None


def _images_dir(config: PipelineConfig) -> str:
    """IMAGES, or the generated demo folder when neither IMAGES nor EXAMPLES is given ("" with
    EXAMPLES), after checking the split fractions."""
    if config.examples:
        return ""
    if config.is_demo:
        images_dir = demo_data.generate_demo_images(
            config.demo_images_dir, config.demo_images_per_class, seed=config.seed
        )
        logging.info("No IMAGES given: using the generated demo dataset in %s", images_dir)
    else:
        images_dir = config.images
    ingest.SplitOptions(config.validation_fraction, config.eval_fraction).check()
    return images_dir


def prepare_inputs(config: PipelineConfig) -> PreparedInputs:
    images_dir = _images_dir(config)
    if not config.examples:
        listing = ingest.list_folder(images_dir)
        print(
            f"Image folder {listing.images_dir}: {listing.layout} layout, "
            f"{len(listing.class_names)} classes, {len(listing.files)} files to ingest",
            flush=True,
        )
        images_dir = listing.images_dir
    record, config = resolve_backbone(config)
    return PreparedInputs(images_dir, record, config)


def prepare_packaged_inputs(config: PipelineConfig) -> PreparedInputs:
    """What a compile for containers needs: no listing of IMAGES, no weights file. Only the
    demo (no IMAGES, no EXAMPLES) writes its generated photos here, for a local replay."""
    images_dir = _images_dir(config)
    backbone = backbones.get_backbone(config.backbone)
    return PreparedInputs(
        images_dir, weights.deferred_record(config.backbone_weights, backbone), config
    )


def resolve_backbone(config: PipelineConfig) -> tuple[weights.WeightsRecord, PipelineConfig]:
    """The weights a run uses, and the config with the backbone that goes with them.

    Only the demo may substitute a backbone or fall back to random weights; a user's run
    with weights that cannot be had stops with the error saying where to put the file.
    """
    backbone = backbones.get_backbone(config.backbone)
    if not config.is_demo or config.backbone_weights != weights.IMAGENET:
        return weights.resolve_weights(config.backbone_weights, backbone), config
    try:
        return weights.resolve_weights(weights.IMAGENET, backbone), config
    except weights.WeightsError as exc:
        missing = str(exc).splitlines()[0]
        if backbone.name == PACKAGED_FALLBACK_BACKBONE:
            return weights.resolve_weights(weights.IMAGENET, backbone, True), config
        try:
            record = weights.resolve_weights(
                weights.IMAGENET, backbones.get_backbone(PACKAGED_FALLBACK_BACKBONE)
            )
        except weights.WeightsError:
            return weights.resolve_weights(weights.IMAGENET, backbone, True), config
    reason = (
        f"The demo uses {record.backbone} with its packaged ImageNet weights "
        f"({record.package} {record.package_version}) instead of {backbone.name}, whose "
        f"ImageNet weights are not here: {missing} "
        f"Set BACKBONE_WEIGHTS=random to train {backbone.name} on random weights instead."
    )
    logging.warning("%s", reason)
    print(f"NOTE: {reason}", flush=True)
    record = dataclasses.replace(record, substitution=reason)
    return record, dataclasses.replace(config, backbone=record.backbone)
