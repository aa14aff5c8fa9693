"""Everything a run needs before the pipeline is compiled: images, records, weights.

The demo dataset is generated when no IMAGES folder is given; the folder is ingested
into TFRecords (unchanged files keep their mtime, so caching survives a re-run); the
backbone weights are resolved so their file and hash become part of the Trainer's
cache key.
"""

from __future__ import annotations

import dataclasses
import logging

from components import demo_data, ingest
from components.modules import backbones, weights
from pipeline.configs import PipelineConfig


@dataclasses.dataclass(frozen=True)
class PreparedInputs:
    images_dir: str
    ingest: ingest.IngestResult
    weights_record: dict


def prepare_inputs(config: PipelineConfig) -> PreparedInputs:
    if config.is_demo:
        images_dir = demo_data.generate_demo_images(
            config.demo_images_dir, config.demo_images_per_class, seed=config.seed
        )
        logging.info("No IMAGES given: using the generated demo dataset in %s", images_dir)
    else:
        images_dir = config.images
    result = ingest.ingest(images_dir, config.data_dir, config.eval_fraction)
    print(ingest.format_summary(result), flush=True)
    # Only the demo may fall back to random weights; a user's run must not pass
    # silently without transfer learning.
    record = weights.resolve_weights(
        config.backbone_weights,
        backbones.get_backbone(config.backbone),
        allow_random_fallback=config.is_demo,
    )
    return PreparedInputs(images_dir, result, record)
