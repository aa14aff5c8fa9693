"""Run one TFX component alone with TFX's LocalDagRunner, upstream artifacts from fixtures.

A component test builds the component under test exactly as the pipeline does, feeds it
artifacts made by the test through `tfx.dsl.Importer` nodes (the `import_*` functions
below), runs that small pipeline in a folder of its own with its own SQLite ML Metadata,
and reads the component's output artifacts back from ML Metadata:

    examples = harness.import_examples(harness.ingest_images(tmp, {...}).output_dir)
    statistics_gen = tfx.components.StatisticsGen(examples=examples.outputs["result"])
    run = harness.LocalRun(tmp / "run")
    outputs = run.run(statistics_gen)           # {"statistics": [Artifact]}

Importer nodes and any other upstream node (a Resolver, say) are found through the
component's input channels, so only the component under test is passed. Runs of one
`LocalRun` share its ML Metadata, like successive runs of one pipeline: a second run sees
the first one's artifacts (the Pusher and Resolver tests rely on that).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping

import numpy as np
from ml_metadata.proto import metadata_store_pb2
from tfx import types
from tfx import v1 as tfx
from tfx.dsl.components.base import base_node
from tfx.orchestration import metadata
from tfx.types import artifact_utils, channel_utils, standard_artifacts

from components.image_example_gen import ingest
from models import ingest_report, tflite_export
from pipeline.configs import COMMITTED_SCHEMA, DEFAULT_BEAM_PIPELINE_ARGS
from tools import ingest as folder_ingest
from tools import samples

PIPELINE_NAME = "component-test"
IMPORT_KEY = "result"  # the Importer's output key: importer.outputs[IMPORT_KEY]
SPLITS = ingest.SPLITS


# --- Fixture data -------------------------------------------------------------------


def ingest_images(
    root: str,
    images: Mapping[str, Mapping[str, Iterable[bytes]]],
    image_format: str = "png",
    options: ingest.SplitOptions | None = None,
) -> folder_ingest.IngestResult:
    """Write {split: {class: [encoded image]}} as an image folder and ingest it.

    `split` is "train" or "test" (ingest's folder names); the records are made by the
    project's own ingest, so they are exactly what ImportExampleGen reads in a run.
    """
    images_dir = os.path.join(root, "images")
    for split, classes in images.items():
        for class_name, encoded_images in classes.items():
            folder = os.path.join(images_dir, split, class_name)
            os.makedirs(folder, exist_ok=True)
            for index, encoded in enumerate(encoded_images):
                with open(os.path.join(folder, f"{index:03d}.{image_format}"), "wb") as f:
                    f.write(encoded)
    return folder_ingest.ingest(
        images_dir, os.path.join(root, "data"), options or ingest.SplitOptions()
    )


def coloured_images(count: int, color: tuple[int, int, int], size: int = 32, seed: int = 0):
    """`count` PNGs of one colour plus noise: two colours make two separable classes."""
    return [
        samples.image_bytes(size, size, "png", seed=seed + i, color=color) for i in range(count)
    ]


# --- Importers: upstream artifacts from files the test made ---------------------------


def import_artifact(
    node_id: str,
    artifact_type: type[types.Artifact],
    uri: str,
    properties: Mapping[str, str | int] | None = None,
    custom_properties: Mapping[str, str | int] | None = None,
) -> tfx.dsl.Importer:
    """An Importer node registering `uri` as an artifact; its output is `.outputs["result"]`.

    An unchanged uri with unchanged properties is the same artifact in a later run.
    """
    return tfx.dsl.Importer(
        source_uri=uri,
        artifact_type=artifact_type,
        properties=dict(properties or {}),
        custom_properties=dict(custom_properties or {}),
    ).with_id(node_id)


def import_output(artifact: types.Artifact, node_id: str) -> tfx.dsl.Importer:
    """An artifact another LocalRun produced (a fixture's StatisticsGen or Transform
    output, say), imported with its properties (split_names, span, ...)."""
    properties = {}
    for name, value in artifact.mlmd_artifact.properties.items():
        kind = value.WhichOneof("value")
        if kind in ("string_value", "int_value"):
            properties[name] = getattr(value, kind)
    return import_artifact(node_id, type(artifact), artifact.uri, properties=properties)


def import_examples(tfrecord_dir: str, node_id: str = "examples") -> tfx.dsl.Importer:
    """Examples from ingest's `<split>/` record folders, laid out as ExampleGen lays them
    out (`Split-<name>/`, with ingest's report beside) with the split_names property."""
    uri = os.path.join(os.path.dirname(os.path.abspath(tfrecord_dir)), "examples_artifact")
    splits = [s for s in SPLITS if os.path.isdir(os.path.join(tfrecord_dir, s))]
    for split in splits:
        target = os.path.join(uri, f"Split-{split}")
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(os.path.join(tfrecord_dir, split), target)
    report = os.path.join(tfrecord_dir, ingest_report.REPORT_FILE)
    if os.path.isfile(report):  # ImageExampleGen keeps it there; the Trainer reads it
        shutil.copyfile(report, os.path.join(uri, ingest_report.REPORT_FILE))
    return import_artifact(
        node_id,
        standard_artifacts.Examples,
        uri,
        properties={"split_names": artifact_utils.encode_split_names(splits)},
    )


def import_schema(
    work_dir: str, schema_file: str = COMMITTED_SCHEMA, node_id: str = "schema"
) -> tfx.dsl.Importer:
    """A Schema artifact (a folder holding schema.pbtxt, copied into work_dir), by default
    the committed schema that ImportSchemaGen imports in a run."""
    uri = os.path.join(work_dir, f"{node_id}_artifact")
    os.makedirs(uri, exist_ok=True)
    shutil.copyfile(schema_file, os.path.join(uri, "schema.pbtxt"))
    return import_artifact(node_id, standard_artifacts.Schema, uri)


def import_transform_graph(transform_dir: str, node_id: str = "transform_graph"):
    """A TransformGraph from a tf.Transform output folder (transform_fn/, metadata)."""
    return import_artifact(node_id, standard_artifacts.TransformGraph, transform_dir)


def import_model(
    serving_model_dir: str, node_id: str = "model", tflite_dir: str | None = None
) -> tfx.dsl.Importer:
    """A Model artifact around an exported SavedModel, in the Trainer's layout
    (`<uri>/Format-Serving/`), which is where the Pusher and Evaluator look; `tflite_dir`:
    TFLite files to put where the Trainer puts them (`<uri>/Format-TFLite/`)."""
    uri = os.path.join(os.path.dirname(os.path.abspath(serving_model_dir)), f"{node_id}_artifact")
    target = os.path.join(uri, "Format-Serving")
    if not os.path.isdir(target):
        shutil.copytree(serving_model_dir, target)
    if tflite_dir and not os.path.isdir(tflite_export.tflite_dir(uri)):
        shutil.copytree(tflite_dir, tflite_export.tflite_dir(uri))
    return import_artifact(node_id, standard_artifacts.Model, uri)


def import_blessing(
    uri: str, blessed: bool, model_id: int, node_id: str = "blessing"
) -> tfx.dsl.Importer:
    """A ModelBlessing as the Evaluator records one: `blessed` and the blessed model's id
    (`current_model_id`, which the latest-blessed-model Resolver matches on)."""
    os.makedirs(uri, exist_ok=True)
    marker = "BLESSED" if blessed else "NOT_BLESSED"
    open(os.path.join(uri, marker), "w").close()
    return import_artifact(
        node_id,
        standard_artifacts.ModelBlessing,
        uri,
        custom_properties={"blessed": int(blessed), "current_model_id": int(model_id)},
    )


def constant_answer_tflite(path: str, image_size: int, num_classes: int, answer: int) -> None:
    """A TFLite model with the Trainer's input (uint8 [1, size, size, 3] pixels) and output
    (float32 probabilities) that gives class `answer` for every photo: a wrong model file
    for the TFLite gate to refuse."""
    import tensorflow as tf

    logits = tf.constant(np.eye(num_classes, dtype=np.float32)[answer] * 10.0)

    @tf.function(input_signature=[tf.TensorSpec([1, image_size, image_size, 3], tf.uint8)])
    def probabilities(pixels):
        brightness = tf.reduce_mean(tf.cast(pixels, tf.float32), axis=[1, 2, 3], keepdims=True)
        return tf.nn.softmax(logits[tf.newaxis] + 0.0 * brightness[:, :, 0, 0], axis=-1)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [probabilities.get_concrete_function()], probabilities
    )
    with open(path, "wb") as f:
        f.write(converter.convert())


# --- Running ------------------------------------------------------------------------


def upstream_nodes(node: base_node.BaseNode) -> list[base_node.BaseNode]:
    """`node` and every node it reads from, found through its input channels."""
    found: dict[str, base_node.BaseNode] = {}
    pending = [node]
    while pending:
        current = pending.pop()
        if current.id in found:
            continue
        found[current.id] = current
        for channel in current.inputs.values():
            try:
                singles = channel_utils.get_individual_channels(channel)
            except NotImplementedError:  # a Resolver's query channels: no producer node
                singles = []
            for single in singles:
                producer = getattr(single, "producer_component", None)
                if producer is not None:
                    pending.append(producer)
        pending.extend(current.upstream_nodes)
    return list(found.values())


class LocalRun:
    """A pipeline root and SQLite ML Metadata for running single components."""

    def __init__(self, root: str, pipeline_name: str = PIPELINE_NAME):
        self.root = str(root)
        self.pipeline_name = pipeline_name
        self.pipeline_root = os.path.join(self.root, "pipeline_root")
        self.metadata_path = os.path.join(self.root, "metadata.sqlite")
        os.makedirs(self.root, exist_ok=True)

    def run(
        self, component: base_node.BaseNode, enable_cache: bool = False
    ) -> dict[str, list[types.Artifact]]:
        """Run `component` and its upstream nodes; return its outputs as ML Metadata has them.

        Output keys with no artifact (a Pusher that did not push still has one) map to [].
        Exceptions from the component's executor propagate, as in a pipeline run.
        """
        tfx.orchestration.LocalDagRunner().run(
            tfx.dsl.Pipeline(
                pipeline_name=self.pipeline_name,
                pipeline_root=self.pipeline_root,
                components=upstream_nodes(component),
                enable_cache=enable_cache,
                metadata_connection_config=self.connection_config(),
                beam_pipeline_args=list(DEFAULT_BEAM_PIPELINE_ARGS),
            )
        )
        return self.outputs(component.id)

    def connection_config(self) -> metadata_store_pb2.ConnectionConfig:
        return tfx.orchestration.metadata.sqlite_metadata_connection_config(self.metadata_path)

    def outputs(self, node_id: str) -> dict[str, list[types.Artifact]]:
        """The output artifacts of the latest execution of `node_id`, by output key."""
        with metadata.Metadata(self.connection_config()) as m:
            store = m.store
            context = store.get_context_by_type_and_name("node", f"{self.pipeline_name}.{node_id}")
            if context is None:
                raise LookupError(f"{node_id} never ran in {self.metadata_path}")
            executions = store.get_executions_by_context(context.id)
            latest = max(executions, key=lambda e: e.id)
            by_key: dict[str, list[int]] = {}
            for event in store.get_events_by_execution_ids([latest.id]):
                if event.type in (
                    metadata_store_pb2.Event.OUTPUT,
                    metadata_store_pb2.Event.DECLARED_OUTPUT,
                    metadata_store_pb2.Event.INTERNAL_OUTPUT,  # what a Resolver resolved
                ):
                    by_key.setdefault(event.path.steps[0].key, []).append(event.artifact_id)
            result = {}
            for key, ids in by_key.items():
                mlmd_artifacts = store.get_artifacts_by_id(ids)
                types_by_id = {
                    t.id: t
                    for t in store.get_artifact_types_by_id(
                        list({a.type_id for a in mlmd_artifacts})
                    )
                }
                result[key] = [
                    artifact_utils.deserialize_artifact(types_by_id[a.type_id], a)
                    for a in mlmd_artifacts
                ]
            return result

    def execution_state(self, node_id: str) -> str:
        """COMPLETE, CACHED, FAILED, ... of the latest execution of `node_id`."""
        with metadata.Metadata(self.connection_config()) as m:
            context = m.store.get_context_by_type_and_name(
                "node", f"{self.pipeline_name}.{node_id}"
            )
            latest = max(m.store.get_executions_by_context(context.id), key=lambda e: e.id)
            return metadata_store_pb2.Execution.State.Name(latest.last_known_state)
