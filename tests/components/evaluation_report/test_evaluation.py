"""One reader per artifact: a report build (report, model card, gate) and the run summary
read the Evaluator's output once each, counted at TFMA's own file readers."""

from __future__ import annotations

import collections
import json
import os
import time

import pytest
import tensorflow as tf
from tensorflow_model_analysis.writers import eval_config_writer
from tensorflow_model_analysis.writers import metrics_plots_and_validations_writer as writer

from components.evaluation_report import build, component
from models import ingest_report
from pipeline import metadata, summary
from tests.components.evaluation_report import report_fixture
from tools import report as rebuild

# TFMA's lowest-level readers of an Evaluator output: tfma.load_metrics / load_plots /
# load_validation_result / load_eval_result all go through these.
READERS = {
    "eval config": (eval_config_writer, "load_eval_run"),
    "metrics": (writer, "load_and_deserialize_metrics"),
    "plots": (writer, "load_and_deserialize_plots"),
    "validation result": (writer, "load_and_deserialize_validation_result"),
}


@pytest.fixture(scope="session")
def run(tmp_path_factory) -> report_fixture.EvaluatedRun:
    return report_fixture.evaluated_run(str(tmp_path_factory.getbasetemp() / "report-run"))


@pytest.fixture
def loads(monkeypatch) -> collections.Counter:
    """Counts the calls of each of TFMA's readers while the test runs."""
    counts: collections.Counter = collections.Counter()
    for name, (module, attribute) in READERS.items():
        original = getattr(module, attribute)

        def counted(*args, _original=original, _name=name, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, attribute, counted)
    return counts


def test_a_report_build_reads_the_evaluation_once(run, tmp_path, loads):
    store = metadata.open_store(run.metadata_path)
    context = store.get_context_by_type_and_name("pipeline_run", run.run_id)
    _, artifacts = metadata.node_inputs(store, context, rebuild.REPORT_NODE)
    inputs = build.ReportInputs(
        pipeline_run=run.run_id,
        evaluation_uri=artifacts["evaluation"].uri,
        model_uri=artifacts["model"].uri,
        examples_uri=artifacts["examples"].uri,
        eval_split="eval",
        anomalies_uri=artifacts["anomalies"].uri,
        ingest_report={},
    )
    started = time.perf_counter()
    data = component.write_all(
        inputs, report_fixture.MODEL_NAME, artifacts.get("statistics"), str(tmp_path / "report")
    )
    print(f"report build: {time.perf_counter() - started:.1f} s; loads {dict(loads)}")
    assert data["blessing"]["blessed"] is True
    # Before the one reader: eval config 6, metrics 4, plots 4, validation result 2
    # (gate, report and Model Card Toolkit each read for themselves).
    assert dict(loads) == {name: 1 for name in READERS}


def test_the_run_summary_reads_the_evaluation_once(run, loads):
    store = metadata.open_store(run.metadata_path)
    components = metadata.component_executions(
        store, store.get_context_by_type_and_name("pipeline_run", run.run_id)
    )
    found = summary.evaluation_summary(components)
    assert found["gate"]["blessed"] is True and found["blessed"] is True
    assert found["eval_metrics"]["example_count"] == 2 * report_fixture.EVAL_PER_CLASS
    # Before: metrics 2, validation result 2 (summary and gate each read for themselves).
    assert dict(loads) == {name: 1 for name in READERS}


def _copy_tree(source: str, target: str) -> None:
    """A local folder into TF's filesystem at target (ram:// paths are plain keys: no "./")."""
    for folder, _, files in tf.io.gfile.walk(source):
        relative = os.path.relpath(folder, source)
        destination = target if relative == "." else f"{target}/{relative}"
        tf.io.gfile.makedirs(destination)
        for name in files:
            tf.io.gfile.copy(os.path.join(folder, name), f"{destination}/{name}", overwrite=True)


def test_the_report_reads_and_writes_through_tf_io_gfile(run, tmp_path):
    """Every artifact on TF's in-memory filesystem (ram://, as a bucket would be: no local
    path works there): the report and the card are built from them and written there."""
    store = metadata.open_store(run.metadata_path)
    context = store.get_context_by_type_and_name("pipeline_run", run.run_id)
    _, artifacts = metadata.node_inputs(store, context, rebuild.REPORT_NODE)
    root = f"ram://report-{os.getpid()}"  # gone with the process
    uris = {}
    for name in ("evaluation", "model", "examples", "anomalies", "tflite_evaluation"):
        uris[name] = f"{root}/{name}"
        _copy_tree(artifacts[name].uri, uris[name])
    inputs = build.ReportInputs(
        pipeline_run=run.run_id,
        evaluation_uri=uris["evaluation"],
        model_uri=uris["model"],
        examples_uri=uris["examples"],
        eval_split="eval",
        anomalies_uri=uris["anomalies"],
        ingest_report=ingest_report.read_report(uris["examples"]) or {},
        tflite_evaluation_uri=uris["tflite_evaluation"],
        infra_blessing=artifacts["infra_blessing"],
    )
    data = component.write_all(
        inputs,
        report_fixture.MODEL_NAME,
        artifacts.get("statistics"),
        f"{root}/report",
        f"{root}/card",
    )
    original = report_fixture.report_json(run)
    as_json = json.loads(json.dumps(data))  # tuples as lists, as in report.json
    for key in (
        "blessing",
        "metrics",
        "confusion_matrix",
        "per_class",
        "worst_errors",
        "data",
        "tflite",
        "infra_validation",
    ):
        assert as_json[key] == original[key], key
    assert sorted(tf.io.gfile.listdir(f"{root}/report")) == sorted(
        [build.INDEX_HTML, build.REPORT_JSON, build.MODEL_CARD_HTML, build.MODEL_CARD_JSON]
    )
    assert sorted(tf.io.gfile.listdir(f"{root}/card")) == [
        build.MODEL_CARD_HTML,
        build.MODEL_CARD_JSON,
    ]
    with tf.io.gfile.GFile(f"{root}/report/{build.INDEX_HTML}") as f:
        assert "Evaluation report" in f.read()
