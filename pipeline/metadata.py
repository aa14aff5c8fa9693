"""The one reader of ML Metadata on the launching machine: the store, a pipeline's runs, a
run's executions with their state, time and artifacts, a node's input artifacts.

The summary after a run, `make report` and the benches read runs through these, never
through their own queries.
"""

from __future__ import annotations

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration.metadata import sqlite_metadata_connection_config

_STATE = metadata_store_pb2.Execution.State


def open_store(metadata_path: str) -> metadata_store.MetadataStore:
    """The run's SQLite ML Metadata store (local: it lives on the launching machine)."""
    return metadata_store.MetadataStore(sqlite_metadata_connection_config(metadata_path))


def latest_run(store: metadata_store.MetadataStore, pipeline_name: str):
    """The newest pipeline_run context of this pipeline, or None."""
    runs = [
        c
        for c in store.get_contexts_by_type("pipeline_run")
        if any(p.name == pipeline_name for p in store.get_parent_contexts_by_context(c.id))
    ]
    return max(runs, key=lambda c: c.create_time_since_epoch, default=None)


def component_executions(store: metadata_store.MetadataStore, run_context) -> dict:
    """node id -> {state, seconds, outputs: {artifact type name: [artifacts]}}."""
    node_type = store.get_context_type("node").id
    executions = store.get_executions_by_context(run_context.id)
    events = store.get_events_by_execution_ids([e.id for e in executions])
    outputs: dict[int, list[int]] = {}
    for event in events:
        if event.type in (
            metadata_store_pb2.Event.OUTPUT,
            metadata_store_pb2.Event.DECLARED_OUTPUT,
        ):
            outputs.setdefault(event.execution_id, []).append(event.artifact_id)
    artifact_ids = sorted({a for ids in outputs.values() for a in ids})
    artifacts = {a.id: a for a in store.get_artifacts_by_id(artifact_ids)}
    type_names = {t.id: t.name for t in store.get_artifact_types()}
    result = {}
    for execution in sorted(executions, key=lambda e: e.create_time_since_epoch):
        node_id = _node_id(store, execution, node_type)
        by_type: dict[str, list] = {}
        for artifact_id in outputs.get(execution.id, []):
            artifact = artifacts[artifact_id]
            by_type.setdefault(type_names[artifact.type_id], []).append(artifact)
        result[node_id] = {
            "state": _STATE.Name(execution.last_known_state),
            "seconds": round(
                (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000,
                1,
            ),
            "outputs": by_type,
        }
    return result


class RunNotFound(LookupError):
    """No such run (or node execution) in ML Metadata; the message says which."""


def run_context(store: metadata_store.MetadataStore, pipeline_name: str, run_id: str):
    for context in store.get_contexts_by_type("pipeline_run"):
        if context.name == run_id and any(
            p.name == pipeline_name for p in store.get_parent_contexts_by_context(context.id)
        ):
            return context
    raise RunNotFound(f"no run {run_id!r} of pipeline {pipeline_name!r} in ML Metadata")


def node_inputs(store: metadata_store.MetadataStore, run_context, node_id: str):
    """(execution, {input key: artifact}) of the run's execution of node `node_id`."""
    node_type = store.get_context_type("node").id
    for execution in store.get_executions_by_context(run_context.id):
        if _node_id(store, execution, node_type) != node_id:
            continue
        events = [
            e
            for e in store.get_events_by_execution_ids([execution.id])
            if e.type == metadata_store_pb2.Event.INPUT
        ]
        artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
        return execution, {e.path.steps[0].key: artifacts[e.artifact_id] for e in events}
    raise RunNotFound(
        f"run {run_context.name!r} has no {node_id} execution (a run made before the "
        "component existed, or one that failed before it)"
    )


def _node_id(store: metadata_store.MetadataStore, execution, node_type: int) -> str:
    """The pipeline node an execution belongs to (its node context is `<pipeline>.<node>`)."""
    nodes = [c for c in store.get_contexts_by_execution(execution.id) if c.type_id == node_type]
    return nodes[0].name.split(".", 1)[-1] if nodes else str(execution.id)


def latest_blessed_model(store: metadata_store.MetadataStore, pipeline_name: str):
    """(Model artifact, its pushed version or "") of the newest model the Evaluator blessed
    in pipeline `pipeline_name`, or (None, "") when it has blessed none."""
    pipelines = [c for c in store.get_contexts_by_type("pipeline") if c.name == pipeline_name]
    if not pipelines:
        return None, ""
    blessing_type = store.get_artifact_type("ModelBlessing").id
    blessings = [
        a
        for a in store.get_artifacts_by_context(pipelines[0].id)
        if a.type_id == blessing_type
        and a.custom_properties.get("blessed")
        and a.custom_properties["blessed"].int_value == 1
        and "current_model_id" in a.custom_properties
    ]
    if not blessings:
        return None, ""
    newest = max(blessings, key=lambda a: (a.create_time_since_epoch, a.id))
    [model] = store.get_artifacts_by_id([newest.custom_properties["current_model_id"].int_value])
    return model, pushed_version(store, model.id)


def pushed_version(store: metadata_store.MetadataStore, model_id: int) -> str:
    """The version a Pusher published the model as ("" if none did)."""
    consumers = [
        e.execution_id
        for e in store.get_events_by_artifact_ids([model_id])
        if e.type == metadata_store_pb2.Event.INPUT
    ]
    outputs = [
        e.artifact_id
        for e in store.get_events_by_execution_ids(consumers)
        if e.type == metadata_store_pb2.Event.OUTPUT
    ]
    pushed_type = store.get_artifact_type("PushedModel").id
    for artifact in store.get_artifacts_by_id(outputs):
        props = artifact.custom_properties
        if artifact.type_id == pushed_type and props.get("pushed") and props["pushed"].int_value:
            return props["pushed_version"].string_value
    return ""
