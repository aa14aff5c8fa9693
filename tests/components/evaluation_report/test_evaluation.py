"""One reader per artifact: a report build (report, model card, gate) and the run summary
read the Evaluator's output once each, counted at TFMA's own file readers."""

from __future__ import annotations

import collections
import time

import pytest
from tensorflow_model_analysis.writers import eval_config_writer
from tensorflow_model_analysis.writers import metrics_plots_and_validations_writer as writer

from components.evaluation_report import build, component
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
    assert dict(loads) == {name: 1 for name in READERS}  # before: 3 metrics, 2 eval configs
