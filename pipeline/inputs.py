"""What a run needs before the pipeline is compiled: the image folder checked, the weights.

The demo dataset is generated when neither IMAGES nor EXAMPLES is given (creating input,
not ingesting it: the photos are read by ImageExampleGen inside the pipeline). The folder
is listed, not read, so a wrong layout, a single class or undecodable file names stop the
run with a clear message before anything starts. The backbone weights are resolved so their
file and hash become part of the Trainer's cache key.
"""

from __future__ import annotations

import dataclasses
import logging

from components.image_example_gen import ingest
from models import backbones, weights
from pipeline import demo_data
from pipeline.configs import PipelineConfig


@dataclasses.dataclass(frozen=True)
class PreparedInputs:
    images_dir: str  # empty when the run reads EXAMPLES
    weights_record: weights.WeightsRecord


def prepare_inputs(config: PipelineConfig) -> PreparedInputs:
    images_dir = ""
    if not config.examples:
        if config.is_demo:
            images_dir = demo_data.generate_demo_images(
                config.demo_images_dir, config.demo_images_per_class, seed=config.seed
            )
            logging.info("No IMAGES given: using the generated demo dataset in %s", images_dir)
        else:
            images_dir = config.images
        ingest.SplitOptions(config.validation_fraction, config.eval_fraction).check()
        listing = ingest.list_folder(images_dir)
        print(
            f"Image folder {listing.images_dir}: {listing.layout} layout, "
            f"{len(listing.class_names)} classes, {len(listing.files)} files to ingest",
            flush=True,
        )
        images_dir = listing.images_dir
    # Only the demo may fall back to random weights; a user's run must not pass
    # silently without transfer learning.
    record = weights.resolve_weights(
        config.backbone_weights,
        backbones.get_backbone(config.backbone),
        allow_random_fallback=config.is_demo,
    )
    return PreparedInputs(images_dir, record)
