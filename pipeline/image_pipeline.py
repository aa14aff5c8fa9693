"""The component graph, built from arguments and nothing else.

ImageExampleGen (or ImportExampleGen over image TFRecords: EXAMPLES)
    -> StatisticsGen -> schema (ImportSchemaGen | SchemaGen) -> ExampleValidator
    -> AnomalyGate (stops the run on anomalies, or warns: ANOMALIES)
    -> Transform (graph only, analyses train) -> [Tuner, TUNE=true]
    -> Trainer (fits train, validates on validation)
    -> Evaluator (eval split only, + latest blessed; the Trainer's stored predictions)
    -> EvaluationReport (report + model card) -> Pusher (the card into assets.extra/)
    (the Evaluator's per-class metrics are for the classes ImageExampleGen ingested)
    Trainer -> TFLiteEvaluator (TFLITE_EXPORT=true: the TFLite files vs the SavedModel)
        -> EvaluationReport, Pusher
    InfraValidator (the candidate loaded and queried in a model server)
        -> EvaluationReport, Pusher
"""

from __future__ import annotations

import hashlib
import os

# Not `from tfx import v1 as tfx`: tfx.v1 imports its Google Cloud extensions, and with
# them google.cloud.aiplatform, ~10 s of every run's start for a local pipeline. These are
# the modules tfx.v1 re-exports; tests/pipeline/test_startup.py keeps aiplatform out.
from tfx.components.example_gen.import_example_gen.component import ImportExampleGen
from tfx.components.example_validator.component import ExampleValidator
from tfx.components.schema_gen.component import SchemaGen
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.components.statistics_gen.component import StatisticsGen
from tfx.components.trainer.component import Trainer
from tfx.components.transform.component import Transform
from tfx.components.tuner.component import Tuner
from tfx.dsl.components.common.resolver import Resolver
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import (
    LatestBlessedModelStrategy,
)
from tfx.orchestration import metadata
from tfx.orchestration.data_types import RuntimeParameter
from tfx.orchestration.pipeline import Pipeline
from tfx.proto import example_gen_pb2, pusher_pb2, trainer_pb2, transform_pb2
from tfx.types import standard_artifacts
from tfx.types.channel import Channel

from components.anomaly_gate.component import AnomalyGate
from components.anomaly_gate.executor import check_mode
from components.evaluation_report.component import EvaluationReport
from components.evaluator.component import ImageEvaluator
from components.image_example_gen import ingest
from components.image_example_gen.component import ImageExampleGen
from components.infra_validator import component as infra_validator
from components.pusher.component import ImagePusher
from components.tflite_evaluator.component import TFLiteEvaluator
from models import ingest_report
from models.metrics.eval_config import GateSettings, build_eval_config
from models.options import TrainingOptions, TuningOptions
from models.weights import WeightsRecord
from pipeline.configs import MODULES_DIR, PipelineConfig, shared_knobs

TRANSFORM_MODULE = os.path.join(MODULES_DIR, "preprocessing.py")
TRAINER_MODULE = os.path.join(MODULES_DIR, "trainer.py")
TUNER_MODULE = os.path.join(MODULES_DIR, "tuner.py")
EVALUATOR_MODULE = os.path.join(MODULES_DIR, "evaluator.py")
MODULES_PACKAGE = "models"  # MODULES_DIR, as the installed project imports it

# Knobs that PipelineConfig and the Trainer's TrainingOptions share, passed by name.
TRAINING_KNOBS = shared_knobs(TrainingOptions)


def code_fingerprint() -> str:
    """SHA-256 of the code Transform, Tuner, Trainer and Evaluator run: every .py file under
    models/ (the module files, their helpers and the Evaluator's metrics in models/metrics/),
    by relative path and content. A new file there is in the key without being listed."""
    paths = sorted(
        os.path.relpath(os.path.join(folder, name), MODULES_DIR)
        for folder, _, names in os.walk(MODULES_DIR)
        for name in names
        if name.endswith(".py")
    )
    digest = hashlib.sha256()
    for path in paths:
        with open(os.path.join(MODULES_DIR, path), "rb") as source:
            content = source.read()
        digest.update(f"{path}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def user_code(module_file: str, function: str | None, packaged: bool) -> dict:
    """The arguments that name `function` of `module_file` (one of models/) to a
    TFX component (`function` None: the Evaluator's module_path).

    packaged (the Kubeflow/Vertex runner): module_file, which TFX builds into a wheel in the
    pipeline root at compile time and pip-installs in every executor that loads it, so a
    task runs the code of the checkout that compiled it. Otherwise the installed project's
    import path: `uv sync` installs the project (editable) where a local run runs, which
    skips the wheels' build (~0.5 s each) and installs (~1.5 s each; the Evaluator installs
    its wheel three times). The cache key then holds code_fingerprint() in custom_config
    instead of the wheel's version.
    """
    if packaged:
        return {"module_file": module_file}
    module = os.path.splitext(os.path.basename(module_file))[0]
    if function is None:
        return {"module_path": f"{MODULES_PACKAGE}.{module}"}
    return {function: f"{MODULES_PACKAGE}.{module}.{function}"}


def example_gen_and_classes(
    config: PipelineConfig, images_dir: str | RuntimeParameter, packaged: bool = False
) -> tuple:
    """(ExampleGen, Trainer class config) for an image folder or a folder of image TFRecords.

    ImageExampleGen writes the class names and counts into its artifact, where the Trainer
    and the Evaluator (components/evaluator/) read them at run time: the pipeline is built
    without knowing them (a Vertex compile reads no photo, and the same spec runs on
    another snapshot). ImportExampleGen's records come with labels.txt (and the ingest
    report, for counts), read here.
    """
    if config.examples:
        example_gen = ImportExampleGen(
            input_base=config.examples,
            input_config=example_gen_pb2.Input(
                splits=[
                    example_gen_pb2.Input.Split(name=split, pattern=f"{split}/*")
                    for split in ingest.SPLITS
                ]
            ),
        )
        return example_gen, ingest_report.class_config_of_folder(config.examples)
    example_gen = ImageExampleGen(
        images_dir,
        config.validation_fraction,
        config.eval_fraction,
        layout=images_layout(config, images_dir) if packaged else config.images_layout,
    )
    return example_gen, {"class_names": [], "class_counts": []}


def images_layout(config: PipelineConfig, images_dir: str | RuntimeParameter) -> str:
    """The layout a packaged compile names for ImageExampleGen's fingerprinted glob:
    IMAGES_LAYOUT, else the local folder's own (its top level listed, no photo read), else
    flat (`<class>/<file>`), whose glob also matches a split folder's class folders."""
    if config.images_layout:
        return config.images_layout
    listed = getattr(images_dir, "default", images_dir)  # a RuntimeParameter's default
    if listed and "://" not in listed and os.path.isdir(listed):
        return ""  # ImageExampleGen lists it
    return "flat"


def create_pipeline(
    config: PipelineConfig,
    images_dir: str | RuntimeParameter,
    weights_record: WeightsRecord,
    package_modules: bool = False,
) -> Pipeline:
    """`images_dir`: the listed folder (ignored with EXAMPLES); a RuntimeParameter on Vertex.
    `package_modules`: ship the module files as TFX's wheels (see user_code)."""
    fingerprint = {} if package_modules else {"code_fingerprint": code_fingerprint()}
    example_gen, classes = example_gen_and_classes(config, images_dir, package_modules)
    statistics_gen = StatisticsGen(examples=example_gen.outputs["examples"])
    if config.schema == "infer":
        schema_gen = SchemaGen(statistics=statistics_gen.outputs["statistics"])
    else:
        schema_gen = ImportSchemaGen(schema_file=config.schema)
    example_validator = ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    transform = Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        **user_code(TRANSFORM_MODULE, "preprocessing_fn", package_modules),
        custom_config={"image_size": config.image_size, "backbone": config.backbone, **fingerprint},
        # The Trainer applies the graph in its input pipeline: materialising would
        # write ~600 KB of float32 pixels per 224x224 image for no gain.
        materialize=False,
        disable_statistics=True,
        splits_config=transform_pb2.SplitsConfig(analyze=["train"]),
    )
    train_args = trainer_pb2.TrainArgs(splits=[ingest.TRAIN])
    # The eval split never reaches the Trainer (nor the Tuner): validation drives decisions.
    eval_args = trainer_pb2.EvalArgs(splits=[ingest.VALIDATION])
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
        "tflite": config.tflite_export,  # also write model.tflite and model_int8.tflite
        **fingerprint,
    }
    tuner = None
    if config.tune:
        # Searches the head on the cached features, on the Trainer's own splits.
        tuner = Tuner(
            **user_code(TUNER_MODULE, "tuner_fn", package_modules),
            examples=example_gen.outputs["examples"],
            transform_graph=transform.outputs["transform_graph"],
            schema=schema_gen.outputs["schema"],
            train_args=train_args,
            eval_args=eval_args,
            custom_config={**training_config, **config.values_for(TuningOptions)},
        )
    trainer = Trainer(
        **user_code(TRAINER_MODULE, "run_fn", package_modules),
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
    latest_blessed_model = Resolver(
        strategy_class=LatestBlessedModelStrategy,
        model=Channel(type=standard_artifacts.Model),
        model_blessing=Channel(type=standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    # TFX's Evaluator; its per-class metrics and gate are for the ingested classes.
    evaluator = ImageEvaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=latest_blessed_model.outputs["model"],
        example_splits=[ingest.EVAL],
        eval_config=build_eval_config(
            classes["class_names"], GateSettings(**config.values_for(GateSettings))
        ),
        # Predictions the Trainer stored are reused, a sample of the candidate's checked.
        # Its code is in the Trainer's fingerprint: a change to it makes a new model.
        **(
            user_code(EVALUATOR_MODULE, None, package_modules)
            if config.stored_eval_predictions
            else {}
        ),
    ).with_id("Evaluator")  # the node id the run summary and ML Metadata queries use
    # The TFLite files against the SavedModel on the eval split: the Pusher takes those passing.
    tflite = (
        TFLiteEvaluator(
            examples=example_gen.outputs["examples"],
            model=trainer.outputs["model"],
            eval_split=ingest.EVAL,
            min_agreement=config.tflite_min_agreement,
            max_drop=config.tflite_max_drop,
        )
        if config.tflite_export
        else None
    )
    # The candidate loaded in a model server process and sent Classify requests from the
    # eval split; the Pusher pushes only what it blessed (INFRA_VALIDATION=false: skipped).
    infra = None
    if config.infra_validation:
        infra = infra_validator.build(
            model=trainer.outputs["model"],
            examples=example_gen.outputs["examples"],
            split=ingest.EVAL,
            max_loading_seconds=config.infra_validation_timeout,
        ).with_id("InfraValidator")  # the node id the run summary reads
    # The report and model card also show the TFLite gate and the infra verdict (when run).
    report = EvaluationReport(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        evaluation=evaluator.outputs["evaluation"],
        statistics=statistics_gen.outputs["statistics"],
        anomalies=example_validator.outputs["anomalies"],
        model_name=config.model_name,
        eval_split=ingest.EVAL,
        tflite_evaluation=tflite.outputs["evaluation"] if tflite else None,
        infra_blessing=infra.outputs["blessing"] if infra else None,
    )
    push = ImagePusher(
        # TFX's Pusher made atomic (a version appears whole or not at all); a model already
        # in the serving directory (an unchanged re-run blessed again) is not copied anew.
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        infra_blessing=infra.outputs["blessing"] if infra else None,
        extra_assets=report.outputs["model_card"],  # into <version>/assets.extra/
        tflite_evaluation=tflite.outputs["evaluation"] if tflite else None,
        push_destination=pusher_pb2.PushDestination(
            filesystem=pusher_pb2.PushDestination.Filesystem(
                base_directory=config.serving_model_dir
            )
        ),
        keep_versions=config.keep_versions,
    ).with_id("Pusher")  # the node id the run summary and ML Metadata queries use
    return Pipeline(
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
            *([tflite] if tflite else []),
            *([infra] if infra else []),
            push,
        ],
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata.sqlite_metadata_connection_config(config.metadata_path),
        beam_pipeline_args=config.beam_args,
    )
