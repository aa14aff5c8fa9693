"""The component graph, built from arguments and nothing else.

ImportExampleGen -> StatisticsGen -> schema (ImportSchemaGen | SchemaGen) -> ExampleValidator
                 -> Transform (graph only) -> [Tuner, TUNE=true] -> Trainer
                 -> Evaluator (+ latest blessed) -> Pusher
"""

from __future__ import annotations

import dataclasses
import os

from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec

from components import pusher
from components.eval_config import build_eval_config
from components.modules.trainer import TrainingOptions
from components.modules.tuner import TuningOptions
from pipeline.configs import MODULES_DIR, PipelineConfig

TRANSFORM_MODULE = os.path.join(MODULES_DIR, "preprocessing.py")
TRAINER_MODULE = os.path.join(MODULES_DIR, "trainer.py")
TUNER_MODULE = os.path.join(MODULES_DIR, "tuner.py")

# Knobs that PipelineConfig and the Trainer's TrainingOptions share, passed by name.
TRAINING_KNOBS = tuple(
    field.name
    for field in dataclasses.fields(TrainingOptions)
    if field.name in {f.name for f in dataclasses.fields(PipelineConfig)}
)

# In-process DirectRunner: one worker keeps peak memory at one copy of the model.
# The container image names where remote Beam workers find TFX (TFX's own image); without
# any such dependency flag, every Beam component would first copy TFX's installed tree and
# build an sdist of it to stage (seconds each), which the in-process runner never reads.
BEAM_PIPELINE_ARGS = [
    "--direct_running_mode=in_memory",
    "--direct_num_workers=1",
    "--sdk_container_image=gcr.io/tfx-oss-public/tfx:1.16.0",
]


def create_pipeline(
    config: PipelineConfig,
    tfrecord_dir: str,
    class_names: list[str],
    weights_record: dict,
    class_counts: list[int] | None = None,
) -> tfx.dsl.Pipeline:
    """`class_counts`: training examples per class, in class_names order (for CLASS_WEIGHTS)."""
    example_gen = tfx.components.ImportExampleGen(
        input_base=tfrecord_dir,
        input_config=tfx.proto.Input(
            splits=[
                tfx.proto.Input.Split(name="train", pattern="train/*"),
                tfx.proto.Input.Split(name="eval", pattern="eval/*"),
            ]
        ),
    )
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    if config.schema == "infer":
        schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"])
    else:
        schema_gen = tfx.components.ImportSchemaGen(schema_file=config.schema)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        module_file=TRANSFORM_MODULE,
        custom_config={"image_size": config.image_size, "backbone": config.backbone},
        # The Trainer applies the graph in its input pipeline: materialising would
        # write ~600 KB of float32 pixels per 224x224 image for no gain.
        materialize=False,
        disable_statistics=True,
    )
    train_args = tfx.proto.TrainArgs(splits=["train"])
    eval_args = tfx.proto.EvalArgs(splits=["eval"])
    training_config = {
        # Every TrainingOptions field that is also a pipeline knob, by name: a knob
        # added to both reaches run_fn without being listed here.
        **{name: getattr(config, name) for name in TRAINING_KNOBS},
        "image_size": config.image_size,
        "backbone": config.backbone,
        "weights": weights_record,
        "class_names": list(class_names),
        "class_counts": [int(c) for c in class_counts] if class_counts else [],
        # Backbone features persist here across runs, keyed by what determines them.
        "feature_cache_dir": config.feature_cache_dir,
    }
    tuner = None
    if config.tune:
        # Searches the head on the cached features, on the Trainer's own splits.
        tuner = tfx.components.Tuner(
            module_file=TUNER_MODULE,
            examples=example_gen.outputs["examples"],
            transform_graph=transform.outputs["transform_graph"],
            schema=schema_gen.outputs["schema"],
            train_args=train_args,
            eval_args=eval_args,
            custom_config={
                **training_config,
                **{f.name: getattr(config, f.name) for f in dataclasses.fields(TuningOptions)},
            },
        )
    trainer = tfx.components.Trainer(
        module_file=TRAINER_MODULE,
        examples=example_gen.outputs["examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        hyperparameters=tuner.outputs["best_hyperparameters"] if tuner else None,
        train_args=train_args,
        eval_args=eval_args,
        custom_config=training_config,
    )
    latest_blessed_model = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=latest_blessed_model.outputs["model"],
        eval_config=build_eval_config(
            len(class_names), config.accuracy_threshold, config.accuracy_max_drop
        ),
    )
    push = tfx.components.Pusher(
        # TFX's Pusher, except that a model already in the serving directory (an
        # unchanged re-run blessed again) is recorded as that version, not copied anew.
        custom_executor_spec=executor_spec.ExecutorClassSpec(pusher.Executor),
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=config.serving_model_dir)
        ),
    )
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=[
            example_gen,
            statistics_gen,
            schema_gen,
            example_validator,
            transform,
            *([tuner] if tuner else []),
            trainer,
            latest_blessed_model,
            evaluator,
            push,
        ],
        enable_cache=config.enable_cache,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path
        ),
        beam_pipeline_args=BEAM_PIPELINE_ARGS,
    )
