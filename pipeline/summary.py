"""Read what a run did back from ML Metadata and report it.

Per component: state (COMPLETE / CACHED / FAILED) and wall time; the eval split's
metrics and the blessing gate (candidate, baseline, their paired difference with its
95 % interval, each rule and which one decided); the pushed version's path; the ingest
counts; which backbone weights were used (loudly, when they were random). Printed and
written to OUTPUT/run_summary.json. The run's evaluation report is published to
OUTPUT/report/.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import tempfile
import time

import tensorflow as tf
from tfx.components.evaluator import constants as evaluator_constants
from tfx.utils import path_utils

from components.artifact_types import EvaluationReport, TFLiteEvaluation
from components.evaluation_report import gate
from components.evaluation_report.evaluation import BASELINE_MODEL, Evaluation
from components.infra_validator import verdict as infra_verdict
from components.pusher.executor import TFLITE_SUFFIX, copy_tree
from components.tflite_evaluator.executor import blessed_files, read_evaluation
from models import ingest_report, stored_predictions, training_metadata
from models.atomic_files import write_text_atomically
from models.metrics.eval_config import ACCURACY_METRIC
from models.weights import log_loud_warning
from pipeline.configs import PipelineConfig
from pipeline.inputs import PreparedInputs
from pipeline.metadata import component_executions, latest_run, open_store

EXIT_NOT_PUSHED = 3
TUNER_RESULTS_FILE = "tuner_results.json"  # TFX Tuner executor's file in TunerResults
SKIPPED_SHOWN = 10  # skipped files listed in the summary; the report has them all


def _custom(artifact, key: str):
    value = artifact.custom_properties.get(key)
    if value is None:
        return None
    return value.string_value or value.int_value


def eval_metrics(evaluation: Evaluation) -> dict:
    """Overall metrics of the eval split: {name: value}, e.g. auc_macro, recall_class_1."""
    metrics = {}
    for entry in evaluation.overall_entries:
        key = entry.key
        if key.model_name == BASELINE_MODEL:
            continue  # the candidate's metrics (and its diffs vs the baseline) only
        name = key.name
        if key.sub_key.HasField("class_id"):
            name += f"_class_{key.sub_key.class_id.value}"
        if key.aggregation_type.macro_average:
            name += "_macro"
        if key.is_diff:
            name += "_diff_vs_baseline"
        if entry.value.HasField("double_value"):
            metrics[name] = entry.value.double_value.value
    return metrics


def tuner_summary(tuner_results_uri: str) -> dict:
    """The Tuner's trials (TFX writes them best first: trial_id, score, hyperparameters),
    read through gfile: the artifact may be in a bucket."""
    with tf.io.gfile.GFile(os.path.join(tuner_results_uri, TUNER_RESULTS_FILE)) as f:
        trials = json.load(f)
    return {"trials": len(trials), "best": trials[0] if trials else None, "all": trials}


def ingest_summary(components: dict, config: PipelineConfig) -> dict:
    """The ExampleGen's node and its ingest report (from its artifact, or beside EXAMPLES)."""
    for node, component in components.items():
        examples = component["outputs"].get("Examples")
        if examples:
            uri = examples[0].uri
            report = ingest_report.read_report(uri)
            if report is None and config.examples:
                uri, report = config.examples, ingest_report.read_report(config.examples)
            if report is None:
                return {"component": node, "report": None}
            return {
                "component": node,
                "report": os.path.join(uri, ingest_report.REPORT_FILE),
                "counts": report["counts"],
                "skipped": len(report["skipped"]),
                "skipped_files": report["skipped"][:SKIPPED_SHOWN],
                "converted": len(report.get("converted", [])),
                "warnings": report.get("warnings", []),
            }
    return {"component": None, "report": None}


def evaluation_summary(components: dict) -> dict:
    """The Evaluator's metrics, blessing and the gate's rules."""
    evaluator = components.get("Evaluator", {}).get("outputs", {})
    summary = {}
    if evaluator.get("ModelEvaluation"):
        evaluation = Evaluation.load(evaluator["ModelEvaluation"][0].uri)
        summary["eval_metrics"] = eval_metrics(evaluation)
        summary["gate"] = gate.read_gate(evaluation).as_dict()
    if evaluator.get("ModelBlessing"):
        summary["blessed"] = bool(_custom(evaluator["ModelBlessing"][0], "blessed"))
    blessing = evaluator.get("ModelBlessing")
    baseline_uri = (
        _custom(blessing[0], evaluator_constants.ARTIFACT_PROPERTY_BASELINE_MODEL_URI_KEY)
        if blessing
        else None
    )
    if baseline_uri:  # how many of the baseline's predictions its own Trainer stored
        stored = stored_predictions.read(baseline_uri)
        summary["baseline_stored_predictions"] = len(stored.digests) if stored else 0
    return summary


INFRA_VALIDATOR_NODE = "InfraValidator"  # the node id image_pipeline.py gives it


def infra_validation_summary(components: dict) -> dict:
    """The InfraValidator's verdict: blessed, by which model server, and why not
    (components/infra_validator/verdict.py: the executor records it on the blessing)."""
    blessing = components.get(INFRA_VALIDATOR_NODE, {}).get("outputs", {}).get("InfraBlessing")
    if not blessing:
        return {}
    return {"infra_validation": infra_verdict.read(blessing[0])}


def push_summary(components: dict) -> dict:
    """Whether the Pusher pushed, and where."""
    pushed = components.get("Pusher", {}).get("outputs", {}).get("PushedModel")
    was_pushed = bool(pushed and _custom(pushed[0], "pushed"))
    return {
        "pushed": was_pushed,
        "pushed_path": _custom(pushed[0], "pushed_destination") if was_pushed else None,
    }


def tflite_summary(components: dict, pushed_path: str | None) -> dict:
    """The TFLite gate's numbers per file and where the blessed files were pushed."""
    evaluated = (
        components.get("TFLiteEvaluator", {}).get("outputs", {}).get(TFLiteEvaluation.TYPE_NAME)
    )
    if not evaluated:
        return {}
    evaluation = read_evaluation(evaluated[0].uri)
    pushed = pushed_path + TFLITE_SUFFIX if pushed_path and blessed_files(evaluation) else None
    return {"tflite": {**evaluation, "pushed_path": pushed}}


def _tflite_lines(tflite: dict) -> list[str]:
    saved = tflite["saved_model"]
    lines = [
        f"tflite (vs SavedModel accuracy {saved['accuracy']:.4f}, {tflite['examples']} photos):"
    ]
    for name, m in tflite["models"].items():
        verdict = "blessed" if m["blessed"] else "REFUSED: " + "; ".join(m["refused_because"])
        lines.append(
            f"  {name:18s} accuracy {m['accuracy']:.4f} agreement {m['agreement']:.4f} "
            f"{m['size_bytes'] / 1e6:.1f} MB {m['latency_ms']:.1f} ms/image  {verdict}"
        )
    if tflite.get("pushed_path"):
        lines.append(f"  pushed to {tflite['pushed_path']}")
    return lines


def not_pushed_reason(summary: dict) -> str:
    """Why the Pusher did not push: the InfraValidator's failure, else the Evaluator's gate."""
    infra = summary.get("infra_validation") or {}
    if infra and not infra["blessed"]:
        return (
            f"the model failed infra validation in {infra['model_server']}: "
            f"{infra['failure'] or 'see the InfraValidator log'}"
        )
    if summary.get("blessed") is False:
        return "the model did not pass the Evaluator's thresholds"
    return "the Pusher did not run or did not push (see the component states above)"


def training_summary(components: dict, config: PipelineConfig) -> dict:
    """What the exported model's metadata says of its weights and features, and the Tuner's."""
    summary = {}
    trained = components.get("Trainer", {}).get("outputs", {}).get("Model")
    if trained:
        serving_dir = path_utils.serving_model_dir(trained[0].uri)
        metadata = training_metadata.read_training_metadata(serving_dir)
        summary["model_metadata_backbone_weights"] = metadata.get("backbone_weights")
        summary["stored_eval_predictions"] = metadata.get("stored_eval_predictions")
        # The store's size on disk as the Trainer left it (training_metadata.json).
        summary["feature_cache"] = {
            "size_bytes": 0,
            **metadata.get("feature_cache", {}),
            "dir": config.feature_cache_dir,
        }
    tuner_results = components.get("Tuner", {}).get("outputs", {}).get("TunerResults")
    if tuner_results:
        summary["tuner"] = tuner_summary(tuner_results[0].uri)
    return summary


def report_run(config: PipelineConfig, inputs: PreparedInputs, started_at: float) -> int:
    store = open_store(config.metadata_path)
    run = latest_run(store, config.pipeline_name)
    if run is None or run.create_time_since_epoch < started_at * 1000 - 1000:
        print("Pipeline compiled; no run was started by this process (tfx pipeline create).")
        return 0
    components = component_executions(store, run)
    summary = {
        "pipeline_run": run.name,
        "output": config.output,
        "images_dir": inputs.images_dir,
        "demo_dataset": config.is_demo,
        "ingest": ingest_summary(components, config),
        "backbone_weights": inputs.weights_record.as_dict(),
        "components": {
            node: {"state": c["state"], "seconds": c["seconds"]} for node, c in components.items()
        },
        "wall_seconds": round(time.time() - started_at, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    summary.update(evaluation_summary(components))
    summary.update(infra_validation_summary(components))
    report = (
        components.get("EvaluationReport", {}).get("outputs", {}).get(EvaluationReport.TYPE_NAME)
    )
    if report:
        publish(report[0].uri, config.report_dir)
        summary["report"] = os.path.join(config.report_dir, "index.html")
    summary.update(push_summary(components))
    summary.update(tflite_summary(components, summary["pushed_path"]))
    if not summary["pushed"]:
        summary["not_pushed_reason"] = not_pushed_reason(summary)
    summary.update(training_summary(components, config))
    # `make run` can only exit 0 or 2 (make's code for any failed recipe): scripts read this.
    summary["exit_code"] = 0 if summary["pushed"] else EXIT_NOT_PUSHED
    write_text_atomically(config.summary_path, json.dumps(summary, indent=2, sort_keys=True))
    print(format_summary(summary, config))
    if not inputs.weights_record.pretrained:
        log_loud_warning(inputs.weights_record.warning)
    return 0 if summary["pushed"] else EXIT_NOT_PUSHED


def _stored_predictions_line(stored: dict, baseline_count: int | None) -> str:
    """What the Evaluator scored: the Trainer's stored eval predictions, or the models."""
    if not stored.get("count"):
        return (
            f"eval predictions: none stored ({stored.get('reason')}); the Evaluator ran "
            "every eval photo through the model"
        )
    line = (
        f"eval predictions: {stored['count']} stored by the Trainer "
        f"({stored['backbone_images']} images through the backbone)"
    )
    if baseline_count is not None:
        line += f"; baseline: {baseline_count} stored"
    return line + (
        "; the Evaluator checked a sample of the candidate's against its model (the "
        "baseline's were checked when it was the candidate)"
    )


def format_summary(summary: dict, config: PipelineConfig) -> str:
    lines = ["", "=" * 78, f"Run {summary['pipeline_run']}  (summary: {config.summary_path})"]
    lines.append(f"{'component':32s} {'state':10s} {'seconds':>8s}")
    for node, c in summary["components"].items():
        lines.append(f"{node:32s} {c['state']:10s} {c['seconds']:8.1f}")
    lines.append(f"wall {summary['wall_seconds']:.0f} s, peak RSS {summary['peak_rss_mb']} MB")
    if summary.get("tflite"):
        lines.extend(_tflite_lines(summary["tflite"]))
    ingested = summary["ingest"]
    if ingested.get("counts"):
        lines.append(
            f"ingest ({ingested['component']}): "
            + "; ".join(
                f"{split} {sum(c.values())} ({', '.join(f'{k}={v}' for k, v in c.items())})"
                for split, c in ingested["counts"].items()
            )
            + f"; skipped {ingested['skipped']} (report: {ingested['report']})"
        )
        for entry in ingested["skipped_files"]:
            lines.append(f"  skipped {entry['path']}: {entry['reason']}")
        if ingested["skipped"] > len(ingested["skipped_files"]):
            lines.append(f"  ... and {ingested['skipped'] - len(ingested['skipped_files'])} more")
        lines.extend(f"  warning: {w}" for w in ingested["warnings"])
    weights = summary["backbone_weights"]
    if weights["pretrained"]:
        origin = weights["path"]
        if weights.get("package"):
            origin = f"from {weights['package']} {weights['package_version']} ({origin})"
        lines.append(
            f"backbone: {weights['backbone']} {weights['source']} weights "
            f"{origin} (sha256 {weights['sha256'][:16]}...)"
        )
        if weights.get("substitution"):
            lines.append(f"  {weights['substitution']}")
    else:
        lines.append(f"backbone: {weights['backbone']} RANDOM WEIGHTS - NOT TRANSFER LEARNING")
    metrics = summary.get("eval_metrics", {})
    if metrics:
        shown = {k: v for k, v in metrics.items() if "_class_" not in k}
        lines.append("eval split: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(shown.items())))
        lines.append(f"eval accuracy: {metrics.get(ACCURACY_METRIC, float('nan')):.4f}")
    if "gate" in summary:
        lines.extend(gate.format_gate(summary["gate"]))
    cache = summary.get("feature_cache")
    if cache and cache.get("used"):
        lines.append(
            f"feature cache: {'reused, no backbone pass' if cache['reused'] else 'computed'} "
            f"({cache['backbone_images']} images through the backbone); "
            f"{cache['size_bytes'] / 1e6:.1f} MB on disk in {cache['dir']}"
        )
    stored = summary.get("stored_eval_predictions")
    if stored:
        lines.append(_stored_predictions_line(stored, summary.get("baseline_stored_predictions")))
    tuner = summary.get("tuner")
    if tuner and tuner["best"]:
        best = {k: v for k, v in tuner["best"].items() if k != "trial_id"}
        lines.append(f"tuner: {tuner['trials']} trials; best {best}")
    lines.append(f"blessed: {summary.get('blessed')}")
    infra = summary.get("infra_validation")
    if infra:
        lines.append(
            f"infra validation ({infra['model_server']}): "
            + ("passed" if infra["blessed"] else f"FAILED: {infra['failure']}")
        )
    if summary.get("report"):
        lines.append(f"evaluation report: {summary['report']}")
    if summary["pushed"]:
        lines.append(f"PUSHED MODEL: {summary['pushed_path']}")
    else:
        lines.append(
            f"NOT PUSHED: {summary.get('not_pushed_reason') or not_pushed_reason(summary)}."
        )
    lines.append("=" * 78)
    return "\n".join(lines)


def publish(source_dir: str, output_dir: str) -> None:
    """Make output_dir (local: the launching machine's) a copy of source_dir; a reader sees
    the old or the new report, never a half-written one (copy beside it, then swap by
    renames)."""
    output_dir = os.path.abspath(output_dir)
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    fresh = tempfile.mkdtemp(prefix=".report-new-", dir=parent)
    copy_tree(source_dir, fresh)  # through gfile: the artifact may be in a bucket
    old = None
    if os.path.exists(output_dir):
        old = tempfile.mkdtemp(prefix=".report-old-", dir=parent)
        os.rename(output_dir, os.path.join(old, "report"))
    os.chmod(fresh, 0o755)
    os.rename(fresh, output_dir)
    if old:
        shutil.rmtree(old, ignore_errors=True)
