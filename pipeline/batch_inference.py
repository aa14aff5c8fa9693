"""Batch inference over a folder of new photos: `make predict-folder IMAGES=<dir> OUTPUT=<dir>`.

A pipeline of its own, `<PIPELINE_NAME>-batch-inference`, in the training pipeline's ML
Metadata (OUTPUT/metadata.sqlite), so every prediction's lineage reaches the model, its
training run and the photos:

    ImageExampleGen (unlabelled mode: any nesting, same decoding and skip report)
    model: MODEL=<pushed version dir> -> PushedModelImport (a Model artifact of it), or by
           default the training pipeline's latest blessed Model (resolved from ML Metadata
           here, since channels do not reach across pipelines) -> Importer
    -> ImageBulkInferrer (TFX's BulkInferrer, classify signature through tfx-bsl's
       RunInference; no photo bytes in its logs) -> PredictionsWriter
       (OUTPUT/predictions/predictions.jsonl + predictions.csv + summary.json)

Any Beam runner through BEAM_PIPELINE_ARGS. Uncached: the photos are the point of each run,
and TFX fingerprints only the folder's top level.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import sys  # noqa: E402

from tfx.dsl.components.common.importer import Importer  # noqa: E402
from tfx.orchestration import metadata  # noqa: E402
from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner  # noqa: E402
from tfx.orchestration.pipeline import Pipeline  # noqa: E402
from tfx.proto import bulk_inferrer_pb2  # noqa: E402
from tfx.types import standard_artifacts  # noqa: E402

from components.bulk_inferrer.component import ImageBulkInferrer  # noqa: E402
from components.image_example_gen.component import ImageExampleGen  # noqa: E402
from components.image_example_gen.ingest import IngestError  # noqa: E402
from components.image_example_gen.unlabelled import UNLABELLED  # noqa: E402
from components.predictions_writer.component import PredictionsWriter  # noqa: E402
from components.pushed_model_import.component import PushedModelImport  # noqa: E402
from models import features  # noqa: E402
from pipeline import metadata as mlmd  # noqa: E402
from pipeline.configs import PipelineConfig  # noqa: E402

SUFFIX = "-batch-inference"


class NoModel(LookupError):
    """Nothing to classify with; the message says what to run or pass."""


def batch_pipeline_name(config: PipelineConfig) -> str:
    return config.pipeline_name + SUFFIX


def model_node(config: PipelineConfig):
    """(node whose output "model"/"result" is the Model, the key, the version for the files)."""
    if config.model:
        node = PushedModelImport(pushed_model_dir=config.model)
        return node, "model", os.path.basename(config.model.rstrip("/"))
    model, version = (None, "")
    if os.path.exists(config.metadata_path):
        store = mlmd.open_store(config.metadata_path)
        model, version = mlmd.latest_blessed_model(store, config.pipeline_name)
    if model is None:
        raise NoModel(
            f"No blessed model of pipeline {config.pipeline_name!r} in {config.metadata_path}: "
            "train one first (make run with the same OUTPUT), or pass MODEL=<pushed version "
            "folder>."
        )
    # reimport=False: the Importer finds this very artifact in ML Metadata (lineage intact).
    node = Importer(
        source_uri=model.uri, artifact_type=standard_artifacts.Model, reimport=False
    ).with_id("blessed_model_importer")
    return node, "result", version or f"model-artifact-{model.id}"


def create_batch_pipeline(config: PipelineConfig, images_dir: str) -> Pipeline:
    example_gen = ImageExampleGen(images_dir, unlabelled=True)
    model, key, version = model_node(config)
    inferrer = ImageBulkInferrer(
        examples=example_gen.outputs["examples"],
        model=model.outputs[key],
        data_spec=bulk_inferrer_pb2.DataSpec(example_splits=[UNLABELLED]),
        model_spec=bulk_inferrer_pb2.ModelSpec(model_signature_name=[features.CLASSIFY_SIGNATURE]),
    )
    writer = PredictionsWriter(
        inference_result=inferrer.outputs["inference_result"],
        examples=example_gen.outputs["examples"],
        model_version=version,
        output_dir=config.predictions_dir,
    )
    return Pipeline(
        pipeline_name=batch_pipeline_name(config),
        pipeline_root=config.pipeline_root,
        components=[example_gen, model, inferrer, writer],
        enable_cache=False,
        metadata_connection_config=metadata.sqlite_metadata_connection_config(config.metadata_path),
        beam_pipeline_args=config.beam_args,
    )


def main() -> int:
    config = PipelineConfig.from_env()
    if not config.images:
        print("ERROR: IMAGES=<folder of photos> is required.", file=sys.stderr)
        return 2
    try:
        pipeline = create_batch_pipeline(config, os.path.abspath(config.images))
        BeamDagRunner().run(pipeline)
    except (NoModel, IngestError, ValueError) as exc:
        print(f"\nERROR: {exc}", file=sys.stderr)
        return 2
    print(f"Predictions: {os.path.join(config.predictions_dir, 'predictions.jsonl')} (and .csv)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
