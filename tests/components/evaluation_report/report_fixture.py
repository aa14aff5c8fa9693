"""One small evaluated and pushed model, shared by the report and model card tests.

Real components under LocalDagRunner on the project's own ingest output (24 eval images
at 32 px): StatisticsGen, ExampleValidator, the Evaluator as the pipeline configures it,
the TFLiteEvaluator, the InfraValidator (the project's model server), EvaluationReport and
the ImagePusher (the card into assets.extra/). The model is the project's own export of a
MobileNetV2 with random weights (so the report and card must say RANDOM), with the
Trainer's two TFLite files of the same network, except that model.tflite is replaced by one
that answers the other class (CORRUPTED_TFLITE), so the TFLite gate refuses it and the
report must say why.
Built once per test session into a fixed folder and reused by every test module that asks
for it.

Names that are markup (issue 25, item 7): one class folder is `<b>x`; one eval photo of
the other class, and a broken file in `<b>x`'s train folder (skipped, so listed in the
report), are named `<img src=x onerror=alert(1)>.jpg`. The random model answers `<b>x` for
every photo, so the eval photo is one of the listed worst errors. The report and card must
show every such name as text.
"""

from __future__ import annotations

import dataclasses
import json
import os

from tfx import v1 as tfx
from tfx.orchestration import metadata

from components.evaluation_report import build
from components.evaluation_report.component import EvaluationReport
from components.image_example_gen import ingest
from components.infra_validator import component as infra_validator
from components.infra_validator import executor as infra_executor
from components.pusher import component as pusher
from components.tflite_evaluator.component import TFLiteEvaluator
from models import ingest_report, tflite_export
from models.metrics import eval_config
from pipeline import summary
from pipeline.metadata import latest_run
from tests.components import harness
from tools import ingest as folder_ingest
from tools import samples

MARKUP_CLASS = "<b>x"  # a class folder whose name is an HTML tag
MARKUP_PHOTO = "<img src=x onerror=alert(1)>.jpg"  # a photo whose name is a script
CLASSES = {"hot_dog": (220, 60, 40), MARKUP_CLASS: (40, 90, 220)}
TRAIN_PER_CLASS = 10
EVAL_PER_CLASS = 12
MODEL_NAME = "report_test_model"
CORRUPTED_TFLITE = tflite_export.FLOAT_MODEL  # refused by the TFLite gate


@dataclasses.dataclass(frozen=True)
class EvaluatedRun:
    root: str
    metadata_path: str
    pipeline_name: str
    run_id: str
    report_dir: str  # the EvaluationReport artifact's folder
    card_dir: str  # its ExtraAssets artifact's folder
    pushed_dir: str  # the pushed version
    eval_tfrecord_dir: str  # ingest's eval records
    class_names: tuple[str, ...]


def evaluated_run(root: str) -> EvaluatedRun:
    done = os.path.join(root, "run.json")
    if os.path.exists(done):
        with open(done) as f:
            return EvaluatedRun(**json.load(f))
    os.makedirs(root, exist_ok=True)
    ingested = _ingest_images_with_markup_names(root)
    tflite_dir = os.path.join(root, "tflite")
    model_dir = samples.export_untrained_model(
        os.path.join(root, "export"),
        tuple(ingested.class_names),
        image_size=32,
        seed=3,
        tflite_dir=tflite_dir,
        tflite_train_files=(os.path.join(ingested.output_dir, ingest.TRAIN, "*"),),
    )
    # The random model answers a tie (0.5, 0.5) for every photo, argmax `<b>x` (its
    # features are all zero: no weight can be corrupted to change that); this file in
    # model.tflite's place answers hot_dog instead: agreement 0, refused.
    harness.constant_answer_tflite(
        os.path.join(tflite_dir, CORRUPTED_TFLITE),
        32,
        len(ingested.class_names),
        ingested.class_names.index("hot_dog"),
    )
    # ImageExampleGen keeps ingest's report in its Examples artifact; so does this one.
    examples = harness.import_examples(ingested.output_dir)
    statistics_gen = tfx.components.StatisticsGen(examples=examples.outputs[harness.IMPORT_KEY])
    schema = harness.import_schema(root)
    validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"],
        schema=schema.outputs[harness.IMPORT_KEY],
    )
    model = harness.import_model(model_dir, tflite_dir=tflite_dir)
    evaluator = tfx.components.Evaluator(
        examples=examples.outputs[harness.IMPORT_KEY],
        model=model.outputs[harness.IMPORT_KEY],
        eval_config=eval_config.build_eval_config(
            list(ingested.class_names),
            # Random weights: the gate is tested elsewhere; here the model must be pushed.
            eval_config.GateSettings(0.0, 0.0, 0.01, beat_majority_class=False),
        ),
    )
    tflite = TFLiteEvaluator(
        examples=examples.outputs[harness.IMPORT_KEY],
        model=model.outputs[harness.IMPORT_KEY],
        eval_split=ingest.EVAL,
    )
    infra = infra_validator.build(
        model=model.outputs[harness.IMPORT_KEY],
        examples=examples.outputs[harness.IMPORT_KEY],
        split=ingest.EVAL,
        max_loading_seconds=120,
        model_server=infra_executor.PROJECT,
    ).with_id(summary.INFRA_VALIDATOR_NODE)
    report = EvaluationReport(
        examples=examples.outputs[harness.IMPORT_KEY],
        model=model.outputs[harness.IMPORT_KEY],
        evaluation=evaluator.outputs["evaluation"],
        statistics=statistics_gen.outputs["statistics"],
        anomalies=validator.outputs["anomalies"],
        model_name=MODEL_NAME,
        tflite_evaluation=tflite.outputs["evaluation"],
        infra_blessing=infra.outputs["blessing"],
    )
    run = harness.LocalRun(os.path.join(root, "run"))
    push = pusher.ImagePusher(
        model=model.outputs[harness.IMPORT_KEY],
        model_blessing=evaluator.outputs["blessing"],
        extra_assets=report.outputs["model_card"],
        infra_blessing=infra.outputs["blessing"],
        tflite_evaluation=tflite.outputs["evaluation"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=os.path.join(root, "serving", MODEL_NAME)
            )
        ),
    ).with_id("Pusher")
    pushed = run.run(push)["pushed_model"][0]
    report_outputs = run.outputs(report.id)
    with metadata.Metadata(run.connection_config()) as m:
        run_id = latest_run(m.store, run.pipeline_name).name
    result = EvaluatedRun(
        root=root,
        metadata_path=run.metadata_path,
        pipeline_name=run.pipeline_name,
        run_id=run_id,
        report_dir=report_outputs["report"][0].uri,
        card_dir=report_outputs["model_card"][0].uri,
        pushed_dir=pushed.get_string_custom_property("pushed_destination"),
        eval_tfrecord_dir=os.path.join(ingested.output_dir, ingest.EVAL),
        class_names=tuple(ingested.class_names),
    )
    with open(done, "w") as f:
        json.dump(dataclasses.asdict(result), f)
    return result


def _ingest_images_with_markup_names(root: str) -> folder_ingest.IngestResult:
    """The photo folder ({train,test}/<class>/), every class separable by its colour."""
    images_dir = os.path.join(root, "images")
    for split, count, seed in (("train", TRAIN_PER_CLASS, 0), ("test", EVAL_PER_CLASS, 50)):
        for class_name, rgb in CLASSES.items():
            folder = os.path.join(images_dir, split, class_name)
            os.makedirs(folder, exist_ok=True)
            for index, encoded in enumerate(harness.coloured_images(count, rgb, seed=seed)):
                name = f"{index:03d}.png"
                if class_name != MARKUP_CLASS and split == "test" and index == 0:
                    name, encoded = MARKUP_PHOTO, samples.image_bytes(32, 32, "jpeg", 7, rgb)
                with open(os.path.join(folder, name), "wb") as f:
                    f.write(encoded)
    with open(os.path.join(images_dir, "train", MARKUP_CLASS, MARKUP_PHOTO), "wb") as f:
        f.write(b"not a photo")  # skipped by ingest, listed by name in the report
    ingested = folder_ingest.ingest(images_dir, os.path.join(root, "data"))
    assert len(ingested.skipped) == 1, ingested.skipped
    assert os.path.isfile(os.path.join(ingested.output_dir, ingest_report.REPORT_FILE))
    return ingested


def report_json(run: EvaluatedRun) -> dict:
    with open(os.path.join(run.report_dir, build.REPORT_JSON)) as f:
        return json.load(f)
