"""The component graph, built from arguments and nothing else.

ImageExampleGen (or ImportExampleGen over image TFRecords: EXAMPLES)
    -> StatisticsGen -> schema (ImportSchemaGen | SchemaGen) -> ExampleValidator
    -> AnomalyGate (stops the run on anomalies, or warns: ANOMALIES)
    -> Transform (graph only, analyses train) -> [Tuner, TUNE=true]
    -> Trainer (fits train, validates on validation)
    -> Evaluator (eval split only, + latest blessed; the Trainer's stored predictions)
    -> EvaluationReport (report + model card) -> Pusher (the card into assets.extra/)
"""

from __future__ import annotations

import os

from tfx import v1 as tfx

from components import ingest, pusher
from components.anomaly_gate import AnomalyGate, check_mode
from components.eval_config import GateSettings, build_eval_config
from components.image_example_gen import ImageExampleGen
from components.modules import ingest_report
from components.modules.options import TrainingOptions, TuningOptions
from components.modules.weights import WeightsRecord
from components.report.component import EvaluationReport
from pipeline.configs import MODULES_DIR, PipelineConfig, shared_knobs

TRANSFORM_MODULE = os.path.join(MODULES_DIR, "preprocessing.py")
TRAINER_MODULE = os.path.join(MODULES_DIR, "trainer.py")
TUNER_MODULE = os.path.join(MODULES_DIR, "tuner.py")
EVALUATOR_MODULE = os.path.join(MODULES_DIR, "evaluator.py")

# Knobs that PipelineConfig and the Trainer's TrainingOptions share, passed by name.
TRAINING_KNOBS = shared_knobs(TrainingOptions)


def example_gen_and_classes(
    config: PipelineConfig, images_dir: str | tfx.dsl.experimental.RuntimeParameter
) -> tuple:
    """(ExampleGen, Trainer class config) for an image folder or a folder of image TFRecords.

    ImageExampleGen writes the class names and counts into its artifact, where the Trainer
    reads them; the names also come from a listing of the class folders (no photo is read)
    because the Evaluator's config needs the class count when the pipeline is compiled.
    ImportExampleGen's records come with labels.txt (and the ingest report, for counts).
    """
    if config.examples:
        example_gen = tfx.components.ImportExampleGen(
            input_base=config.examples,
            input_config=tfx.proto.Input(
                splits=[
                    tfx.proto.Input.Split(name=split, pattern=f"{split}/*")
                    for split in ingest.SPLITS
                ]
            ),
        )
        return example_gen, ingest_report.class_config_of_folder(config.examples)
    example_gen = ImageExampleGen(images_dir, config.validation_fraction, config.eval_fraction)
    listed = getattr(images_dir, "default", images_dir)  # a RuntimeParameter's default
    return example_gen, {"class_names": ingest.class_names(listed), "class_counts": []}


def create_pipeline(
    config: PipelineConfig,
    images_dir: str | tfx.dsl.experimental.RuntimeParameter,
    weights_record: WeightsRecord,
) -> tfx.dsl.Pipeline:
    """`images_dir`: the listed folder (ignored with EXAMPLES); a RuntimeParameter on Vertex."""
    example_gen, classes = example_gen_and_classes(config, images_dir)
    class_names = classes["class_names"]
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
        splits_config=tfx.proto.SplitsConfig(analyze=["train"]),
    )
    train_args = tfx.proto.TrainArgs(splits=[ingest.TRAIN])
    # The eval split never reaches the Trainer (nor the Tuner): validation drives decisions.
    eval_args = tfx.proto.EvalArgs(splits=[ingest.VALIDATION])
    training_config = {
        # Every TrainingOptions field that is also a pipeline knob, by name: a knob
        # added to both reaches run_fn without being listed here.
        **config.values_for(TrainingOptions),
        "image_size": config.image_size,
        "backbone": config.backbone,
        "weights": weights_record.as_dict(),  # custom_config is JSON
        # ImageExampleGen's report in the examples artifact overrides these in run_fn.
        **classes,
        # Backbone features persist here across runs, keyed by what determines them.
        "feature_cache_dir": config.feature_cache_dir,
        # The split the Evaluator scores: the Trainer stores its predictions for it.
        "evaluator_split": ingest.EVAL,
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
            custom_config={**training_config, **config.values_for(TuningOptions)},
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
    # ExampleValidator only records anomalies; the gate stops the run on them before
    # Transform and training (ANOMALIES=block) or only warns (ANOMALIES=warn).
    gate = AnomalyGate(
        anomalies=example_validator.outputs["anomalies"], mode=check_mode(config.anomalies)
    )
    transform.add_upstream_node(gate)
    trainer.add_upstream_node(gate)
    latest_blessed_model = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=latest_blessed_model.outputs["model"],
        example_splits=[ingest.EVAL],
        eval_config=build_eval_config(
            len(class_names), GateSettings(**config.values_for(GateSettings))
        ),
        # Predictions the Trainer stored are reused, a sample checked against each model.
        module_file=EVALUATOR_MODULE if config.stored_eval_predictions else None,
    )
    report = EvaluationReport(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        evaluation=evaluator.outputs["evaluation"],
        statistics=statistics_gen.outputs["statistics"],
        anomalies=example_validator.outputs["anomalies"],
        model_name=config.model_name,
        eval_split=ingest.EVAL,
    )
    push = pusher.ImagePusher(
        # TFX's Pusher made atomic (a version appears whole or not at all); a model already
        # in the serving directory (an unchanged re-run blessed again) is not copied anew.
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        extra_assets=report.outputs["model_card"],  # into <version>/assets.extra/
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=config.serving_model_dir)
        ),
    ).with_id("Pusher")  # the node id the run summary and ML Metadata queries use
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=[
            example_gen,
            statistics_gen,
            schema_gen,
            example_validator,
            gate,
            transform,
            *([tuner] if tuner else []),
            trainer,
            latest_blessed_model,
            evaluator,
            report,
            push,
        ],
        enable_cache=config.enable_cache,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path
        ),
        beam_pipeline_args=config.beam_args,
    )
