"""The model card that travels with every pushed model, made by Model Card Toolkit.

Fed much as MCT's TFX integration (tfx-addons' ModelCardGenerator) feeds it: StatisticsGen's
ML Metadata artifact goes in through `Source(tfdv=TfdvSource(example_statistics_artifacts=
...))` and MCT scaffolds the card (dataset graphics) from it; the evaluation goes through
the two calls MCT's scaffold makes for a `TfmaSource` (tfx_util.annotate_eval_result_metrics,
graphics.annotate_eval_result_plots), given the EvalResult of the report's one reader of the
Evaluator's output (evaluation.py), so the evaluation is not read again. We then fill what
only this pipeline knows: the backbone, the weights' source and SHA-256, the data counts,
the accuracy with its 95 % interval per class, the TFLite files' gate (accuracy, agreement
with the SavedModel and their paired difference as performance metrics; size, latency and
verdict as tradeoffs), the InfraValidator's verdict, and the considerations, RANDOM backbone
weights first when they were used. Written as the toolkit's JSON (schema v0.0.2) and its
rendered HTML (MCT's Jinja2 template, autoescaped: class names are shown as text).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import model_card_toolkit as mct
import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2
from model_card_toolkit.utils import graphics as mct_graphics
from model_card_toolkit.utils import source as mct_source
from model_card_toolkit.utils import tfx_util as mct_tfx_util

from components.evaluation_report.build import (
    MODEL_CARD_HTML,
    MODEL_CARD_JSON,
    file_size,
    wilson_interval,
)
from components.evaluation_report.evaluation import Evaluation
from models import features

# The features whose per-split histograms the card shows: class balance, image sizes and
# formats. The toolkit draws one matplotlib figure (~1 s) per feature and split; the
# others (the encoded bytes, the per-photo path, the label index beside its name) say
# nothing a reader can use, and drawing them doubled the report's time.
CARD_FEATURES = (
    features.LABEL_TEXT_KEY,
    features.HEIGHT_KEY,
    features.WIDTH_KEY,
    features.IMAGE_FORMAT_KEY,
)
CARD_METRICS = ["sparse_categorical_accuracy", "example_count"]  # MCT's graphics of these
SMALL_EVAL_SET = 200  # fewer eval examples than this: intervals are wide, say so
IMBALANCE_RATIO = 1.5  # largest / smallest class count above this: say so


def considerations(report: dict) -> list[str]:
    """Limitations, most important first."""
    limitations = []
    weights = report["weights"]
    if not weights.get("pretrained", True):
        limitations.append(
            "RANDOM BACKBONE WEIGHTS: this model was trained on a randomly initialised, "
            "frozen backbone, not on pretrained ImageNet weights. It is not transfer "
            "learning; its accuracy says little about what a pretrained backbone would do."
        )
    infra = report.get("infra_validation") or {}
    if infra.get("ran") and not infra["blessed"]:
        limitations.append(
            f"FAILED INFRA VALIDATION, NOT PUSHED: {infra['statement']}. Do not serve this model."
        )
    eval_counts = report["blessing"]["class_counts"]
    total = sum(eval_counts.values())
    accuracy = report.get("accuracy_wilson") or report["blessing"]["candidate"]
    if total < SMALL_EVAL_SET:
        limitations.append(
            f"Small eval set: {total} examples, so the accuracy is known only to within "
            f"[{accuracy['lower']:.3f}, {accuracy['upper']:.3f}] (95% Wilson interval)."
        )
    counts = [c for c in eval_counts.values() if c > 0]
    if counts and max(counts) / min(counts) > IMBALANCE_RATIO:
        limitations.append(
            "Class imbalance in the eval split ("
            + ", ".join(f"{k}: {v}" for k, v in eval_counts.items())
            + f"); the majority-class rate is {report['blessing']['majority_rate']:.3f}, so "
            "look at per-class recall, not only accuracy."
        )
    limitations.append(
        "Only the classes it was trained on exist for this model: any other image gets "
        "one of them, with no 'unknown' answer."
    )
    return limitations


def tflite_tradeoffs(report: dict) -> list[str]:
    """One line per TFLite file: size, latency, accuracy against the SavedModel's, verdict."""
    tflite = report["tflite"]
    if not tflite["ran"] or not tflite["models"]:
        return [f"TFLite models: {tflite['statement']}."]
    saved = tflite["saved_model"]
    lines = []
    for name, m in tflite["models"].items():
        verdict = (
            "blessed: shipped beside the SavedModel when the model is pushed"
            if m["blessed"]
            else "REFUSED, not shipped: " + "; ".join(m["refused_because"])
        )
        lines.append(
            f"TFLite {name}: {file_size(m['size_bytes'])} (SavedModel "
            f"{file_size(saved['size_bytes'])}), {m['latency_ms']:.2f} ms per image on one "
            f"thread of the evaluating machine; accuracy {m['accuracy']:.4f} against the "
            f"SavedModel's {saved['accuracy']:.4f}, agreement {m['agreement']:.4f} on "
            f"{tflite['examples']} {tflite['eval_split']} photos. {verdict}."
        )
    return lines


def tflite_metrics(report: dict) -> list[mct.PerformanceMetric]:
    """Accuracy and agreement with the SavedModel (95 % Wilson intervals from the counts)
    and the paired accuracy difference (its 95 % interval), sliced `<file>, <split> split`."""
    tflite = report["tflite"]
    if not tflite["ran"]:
        return []
    metrics = []
    for name, m in tflite["models"].items():
        where = f"{name}, {tflite['eval_split']} split"
        count = tflite["examples"]
        difference = m["difference"]
        metrics += [
            _metric("TFLite accuracy", wilson_interval(round(m["accuracy"] * count), count), where),
            _metric(
                "TFLite agreement with the SavedModel",
                wilson_interval(round(m["agreement"] * count), count),
                where,
            ),
            _metric(
                "TFLite accuracy difference vs SavedModel (paired)",
                {"value": difference["mean"], **difference},
                where,
            ),
        ]
    return metrics


def _metric(name: str, interval: dict, slice_name: str) -> mct.PerformanceMetric:
    return mct.PerformanceMetric(
        type=name,
        value=f"{interval['value']:.4f}",
        slice=slice_name,
        confidence_interval=mct.ConfidenceInterval(
            lower_bound=f"{interval['lower']:.4f}", upper_bound=f"{interval['upper']:.4f}"
        ),
    )


def build_model_card(
    report: dict,
    model_name: str,
    evaluation: Evaluation,
    statistics: metadata_store_pb2.Artifact | None,
    output_dir: str,
) -> mct.ModelCard:
    """Write model_card.json and model_card.html into output_dir; return the card.
    `statistics`: StatisticsGen's ML Metadata artifact, which Model Card Toolkit reads."""
    source = mct_source.Source(
        tfdv=mct_source.TfdvSource(
            example_statistics_artifacts=[statistics], features_include=list(CARD_FEATURES)
        )
        if statistics is not None
        else None,
    )
    # MCT's own work files (its proto, its template output) stay on the local disk.
    work_dir = tempfile.mkdtemp(prefix="model_card_")
    try:
        toolkit = mct.ModelCardToolkit(output_dir=work_dir, source=source)
        card = toolkit.scaffold_assets()
        eval_result = mct_tfx_util.filter_metrics(evaluation.eval_result(), CARD_METRICS)
        mct_tfx_util.annotate_eval_result_metrics(card, eval_result)
        mct_graphics.annotate_eval_result_plots(card, eval_result)
        weights = report["weights"]
        details = card.model_details
        details.name = model_name
        details.version.name = report["pipeline_run"]
        pretrained = "(pretrained)" if weights.get("pretrained") else "(RANDOM, NOT PRETRAINED)"
        details.overview = (
            f"Image classifier over {len(report['class_names'])} classes "
            f"({', '.join(report['class_names'])}): a frozen {report['backbone']} backbone and a "
            f"dense head, input {report['data']['input_size']} px. Backbone weights: "
            f"{weights.get('source')} {pretrained}"
            f", SHA-256 {weights.get('sha256') or 'none (no weights file)'}."
        )
        if report.get("backbone_statement"):  # package and version, and the demo's fallback
            details.overview += " " + report["backbone_statement"]
        details.references = [
            mct.Reference(reference="evaluation report: OUTPUT/report/index.html of that run")
        ]
        params = card.model_parameters
        params.model_architecture = f"{report['backbone']} (frozen) + dense softmax head"
        params.input_format = "encoded image bytes (JPEG, PNG, GIF, BMP), any size"
        params.output_format = "probabilities per class, class_index, class_name"
        counts = report["data"]["counts"]
        params.data = [
            mct.Dataset(
                name=f"{split} split",
                description=f"{sum(per_class.values())} images: "
                + ", ".join(f"{k} {v}" for k, v in per_class.items()),
                graphics=existing.graphics if existing else mct.GraphicsCollection(),
            )
            for (split, per_class), existing in zip(
                counts.items(), list(params.data) + [None] * len(counts)
            )
        ]
        blessing = report["blessing"]
        analysis = card.quantitative_analysis
        # Accuracy with its Wilson interval from the counts (stays in [0, 1]).
        accuracy = report.get("accuracy_wilson") or blessing["candidate"]
        analysis.performance_metrics = [_metric("accuracy", accuracy, "overall")] + [
            _metric("recall", interval, f"label_text={name}")
            for name, interval in blessing["class_recall"].items()
        ]
        if blessing["difference"]:
            analysis.performance_metrics.append(
                _metric(
                    "accuracy difference vs last blessed model", blessing["difference"], "overall"
                )
            )
        card.considerations.limitations = [
            mct.Limitation(description=text) for text in considerations(report)
        ]
        card.considerations.use_cases = [
            mct.UseCase(
                description="Sorting photos into the classes above, with a person reviewing "
                "low-confidence answers; see the evaluation report before relying on it."
            )
        ]
        analysis.performance_metrics += tflite_metrics(report)
        card.considerations.tradeoffs = [
            mct.Tradeoff(description=text)
            for text in [
                f"Blessing: {blessing['decided_by']}",
                f"Infra validation: {report['infra_validation']['statement']}.",
                *tflite_tradeoffs(report),
            ]
        ]
        toolkit.update_model_card(card)
        toolkit.export_format(output_file=MODEL_CARD_HTML)
        tf.io.gfile.makedirs(output_dir)
        tf.io.gfile.copy(
            os.path.join(work_dir, "model_cards", MODEL_CARD_HTML),
            os.path.join(output_dir, MODEL_CARD_HTML),
            overwrite=True,
        )
        with tf.io.gfile.GFile(os.path.join(output_dir, MODEL_CARD_JSON), "w") as f:
            f.write(json.dumps(json.loads(card.to_json()), indent=2))
        return card
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
