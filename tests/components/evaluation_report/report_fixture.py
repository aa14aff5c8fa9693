"""One small evaluated and pushed model, shared by the report and model card tests.

Real components under LocalDagRunner on the project's own ingest output (24 eval images
at 32 px): StatisticsGen, ExampleValidator, the Evaluator as the pipeline configures it,
EvaluationReport and the ImagePusher (the card into assets.extra/). The model is the
project's own export of a MobileNetV2 with random weights (so the report and card must
say RANDOM). Built once per test session into a fixed folder and reused by every test
module that asks for it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

from tfx import v1 as tfx
from tfx.orchestration import metadata

from components.evaluation_report import build
from components.evaluation_report.component import EvaluationReport
from components.image_example_gen import ingest
from components.pusher import component as pusher
from models.metrics import eval_config
from pipeline.metadata import latest_run
from tests.components import harness
from tools import samples

CLASSES = {"hot_dog": (220, 60, 40), "not_hot_dog": (40, 90, 220)}
EVAL_PER_CLASS = 12
MODEL_NAME = "report_test_model"


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
    ingested = harness.ingest_images(
        root,
        {
            "train": {c: harness.coloured_images(10, rgb) for c, rgb in CLASSES.items()},
            "test": {
                c: harness.coloured_images(EVAL_PER_CLASS, rgb, seed=50)
                for c, rgb in CLASSES.items()
            },
        },
    )
    model_dir = samples.export_untrained_model(
        os.path.join(root, "export"), tuple(ingested.class_names), image_size=32, seed=3
    )
    examples = harness.import_examples(ingested.tfrecord_dir)
    # ImageExampleGen keeps ingest's report in its Examples artifact; so does this one.
    shutil.copyfile(
        ingested.report_path,
        os.path.join(
            os.path.dirname(os.path.abspath(ingested.tfrecord_dir)),
            "examples_artifact",  # harness.import_examples' artifact folder
            os.path.basename(ingested.report_path),
        ),
    )
    statistics_gen = tfx.components.StatisticsGen(examples=examples.outputs[harness.IMPORT_KEY])
    schema = harness.import_schema(root)
    validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"],
        schema=schema.outputs[harness.IMPORT_KEY],
    )
    model = harness.import_model(model_dir)
    evaluator = tfx.components.Evaluator(
        examples=examples.outputs[harness.IMPORT_KEY],
        model=model.outputs[harness.IMPORT_KEY],
        eval_config=eval_config.build_eval_config(
            list(ingested.class_names),
            # Random weights: the gate is tested elsewhere; here the model must be pushed.
            eval_config.GateSettings(0.0, 0.0, 0.01, beat_majority_class=False),
        ),
    )
    report = EvaluationReport(
        examples=examples.outputs[harness.IMPORT_KEY],
        model=model.outputs[harness.IMPORT_KEY],
        evaluation=evaluator.outputs["evaluation"],
        statistics=statistics_gen.outputs["statistics"],
        anomalies=validator.outputs["anomalies"],
        model_name=MODEL_NAME,
    )
    run = harness.LocalRun(os.path.join(root, "run"))
    push = pusher.ImagePusher(
        model=model.outputs[harness.IMPORT_KEY],
        model_blessing=evaluator.outputs["blessing"],
        extra_assets=report.outputs["model_card"],
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
        eval_tfrecord_dir=os.path.join(ingested.tfrecord_dir, ingest.EVAL),
        class_names=tuple(ingested.class_names),
    )
    with open(done, "w") as f:
        json.dump(dataclasses.asdict(result), f)
    return result


def report_json(run: EvaluatedRun) -> dict:
    with open(os.path.join(run.report_dir, build.REPORT_JSON)) as f:
        return json.load(f)
