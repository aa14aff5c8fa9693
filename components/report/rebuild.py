"""Rebuild a past run's evaluation report from ML Metadata, and publish a report folder.

Every input of the EvaluationReport component is recorded in ML Metadata with the run
(its input artifacts and parameters, also for a cached execution),
so any run that had the component can be rebuilt as it was, with today's report code.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration.metadata import sqlite_metadata_connection_config

from components.modules import ingest_report
from components.report import build, component

REPORT_NODE = "EvaluationReport"


class RunNotFound(LookupError):
    pass


def _run_context(store: metadata_store.MetadataStore, pipeline_name: str, run_id: str):
    for context in store.get_contexts_by_type("pipeline_run"):
        if context.name == run_id and any(
            p.name == pipeline_name for p in store.get_parent_contexts_by_context(context.id)
        ):
            return context
    raise RunNotFound(f"no run {run_id!r} of pipeline {pipeline_name!r} in ML Metadata")


def report_execution_inputs(store: metadata_store.MetadataStore, run_context):
    """(execution, {input key: artifact}) of the run's EvaluationReport execution."""
    node_type = store.get_context_type("node").id
    for execution in store.get_executions_by_context(run_context.id):
        nodes = [c for c in store.get_contexts_by_execution(execution.id) if c.type_id == node_type]
        if not nodes or nodes[0].name.split(".", 1)[-1] != REPORT_NODE:
            continue
        events = [
            e
            for e in store.get_events_by_execution_ids([execution.id])
            if e.type == metadata_store_pb2.Event.INPUT
        ]
        artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
        return execution, {e.path.steps[0].key: artifacts[e.artifact_id] for e in events}
    raise RunNotFound(
        f"run {run_context.name!r} has no {REPORT_NODE} execution (a run made before the "
        "report existed, or one that failed before the Evaluator)"
    )


def rebuild(
    metadata_path: str, pipeline_name: str, run_id: str, output_dir: str, model_name: str
) -> dict:
    """Build run_id's report and model card into output_dir (published atomically)."""
    if not os.path.isfile(metadata_path):
        raise RunNotFound(f"no ML Metadata at {metadata_path}")
    store = metadata_store.MetadataStore(sqlite_metadata_connection_config(metadata_path))
    execution, artifacts = report_execution_inputs(
        store, _run_context(store, pipeline_name, run_id)
    )
    properties = execution.custom_properties
    inputs = build.ReportInputs(
        pipeline_run=run_id,
        evaluation_uri=artifacts["evaluation"].uri,
        model_uri=artifacts["model"].uri,
        examples_uri=artifacts["examples"].uri,
        eval_split=properties["eval_split"].string_value or "eval",
        anomalies_uri=artifacts["anomalies"].uri if "anomalies" in artifacts else None,
        ingest_report=ingest_report.read_report(artifacts["examples"].uri) or {},
    )
    staging = tempfile.mkdtemp(prefix=".report-", dir=os.path.dirname(os.path.abspath(output_dir)))
    try:
        data = component.write_all(
            inputs, model_name, artifacts["evaluation"], artifacts.get("statistics"), staging
        )
        publish(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return data


def publish(source_dir: str, output_dir: str) -> None:
    """Make output_dir a copy of source_dir; a reader sees the old or the new report,
    never a half-written one (copy beside it, then swap by renames)."""
    output_dir = os.path.abspath(output_dir)
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    fresh = tempfile.mkdtemp(prefix=".report-new-", dir=parent)
    shutil.copytree(source_dir, fresh, dirs_exist_ok=True)
    old = None
    if os.path.exists(output_dir):
        old = tempfile.mkdtemp(prefix=".report-old-", dir=parent)
        os.rename(output_dir, os.path.join(old, "report"))
    os.chmod(fresh, 0o755)
    os.rename(fresh, output_dir)
    if old:
        shutil.rmtree(old, ignore_errors=True)
