"""EvaluationReport: the pipeline component after the Evaluator.

It writes the evaluation report (index.html, report.json) and the model card into its
`report` artifact, and the model card alone into its `model_card` artifact (type
ExtraAssets), which the Pusher copies into the pushed version's `assets.extra/`. As a
component it has lineage in ML Metadata and is cached like the rest of the pipeline.

The TFLite evaluation and the InfraValidator's blessing are optional inputs: the pipeline
passes them when TFLITE_EXPORT / INFRA_VALIDATION put those components in the run (the
report then waits for them, as the Pusher does); without them the report and the card say
"not run".
"""

import os

import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from components.artifact_types import EvaluationReport as EvaluationReportArtifact
from components.artifact_types import ExtraAssets, TFLiteEvaluation
from components.evaluation_report import build, model_card
from components.evaluation_report.evaluation import Evaluation
from models import ingest_report
from models.crash_points import crash_point


def write_all(
    inputs: build.ReportInputs,
    model_name: str,
    statistics: metadata_store_pb2.Artifact | None,
    report_dir: str,
    card_dir: str | None = None,
) -> dict:
    """Report and model card into report_dir (card also into card_dir); returns report.json's
    content. The Evaluator's output is read once, here; `statistics`: StatisticsGen's ML
    Metadata artifact, which Model Card Toolkit reads."""
    evaluation = Evaluation.load(inputs.evaluation_uri)
    data, figures = build.build_report_data(inputs, evaluation)
    model_card.build_model_card(data, model_name, evaluation, statistics, report_dir)
    build.write_report(data, figures, report_dir)
    crash_point("EvaluationReport")  # report written, model card not yet copied
    if card_dir:
        tf.io.gfile.makedirs(card_dir)
        for name in (build.MODEL_CARD_JSON, build.MODEL_CARD_HTML):
            tf.io.gfile.copy(
                os.path.join(report_dir, name), os.path.join(card_dir, name), overwrite=True
            )
    return data


@component
def EvaluationReport(  # noqa: N802 (a TFX component is named like a class)
    examples: InputArtifact[standard_artifacts.Examples],
    model: InputArtifact[standard_artifacts.Model],
    evaluation: InputArtifact[standard_artifacts.ModelEvaluation],
    statistics: InputArtifact[standard_artifacts.ExampleStatistics],
    anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
    report: OutputArtifact[EvaluationReportArtifact],
    model_card: OutputArtifact[ExtraAssets],
    model_name: Parameter[str],
    eval_split: Parameter[str] = "eval",
    tflite_evaluation: InputArtifact[TFLiteEvaluation] = None,
    infra_blessing: InputArtifact[standard_artifacts.InfraBlessing] = None,
):
    """Ingest's report (counts, skipped files) is read from the Examples artifact."""
    inputs = build.ReportInputs(
        # The run id is not visible to a component; `make report RUN=<id>` shows it.
        pipeline_run="evaluation " + "/".join(evaluation.uri.rstrip("/").split("/")[-3:]),
        evaluation_uri=evaluation.uri,
        model_uri=model.uri,
        examples_uri=examples.uri,
        eval_split=eval_split,
        anomalies_uri=anomalies.uri,
        ingest_report=ingest_report.read_report(examples.uri) or {},
        tflite_evaluation_uri=tflite_evaluation.uri if tflite_evaluation else None,
        infra_blessing=infra_blessing.mlmd_artifact if infra_blessing else None,
    )
    write_all(inputs, model_name, statistics.mlmd_artifact, report.uri, model_card.uri)
