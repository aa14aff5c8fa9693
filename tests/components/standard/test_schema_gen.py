"""ImportSchemaGen and SchemaGen alone: the features every record has, and the label domain."""

from __future__ import annotations

import os

from tensorflow_metadata.proto.v0 import schema_pb2
from tfx import v1 as tfx
from tfx.utils import io_utils

from models import features
from pipeline.configs import COMMITTED_SCHEMA
from tests.components import harness
from tests.components.conftest import COLOURS

RAW_FEATURES = {
    features.IMAGE_KEY: schema_pb2.BYTES,
    features.IMAGE_FORMAT_KEY: schema_pb2.BYTES,
    features.HEIGHT_KEY: schema_pb2.INT,
    features.WIDTH_KEY: schema_pb2.INT,
    features.LABEL_KEY: schema_pb2.INT,
    features.LABEL_TEXT_KEY: schema_pb2.BYTES,
    features.SOURCE_PATH_KEY: schema_pb2.BYTES,
}


def _read(schema_artifact) -> schema_pb2.Schema:
    return io_utils.SchemaReader().read(os.path.join(schema_artifact.uri, "schema.pbtxt"))


def _features(schema: schema_pb2.Schema) -> dict[str, schema_pb2.Feature]:
    return {feature.name: feature for feature in schema.feature}


def test_import_schema_gen_has_every_feature_and_a_label_domain_from_zero(tmp_path):
    component = tfx.components.ImportSchemaGen(schema_file=COMMITTED_SCHEMA)
    found = _features(_read(harness.LocalRun(str(tmp_path)).run(component)["schema"][0]))
    assert {name: f.type for name, f in found.items()} == RAW_FEATURES
    assert found[features.LABEL_KEY].int_domain.min == 0
    assert list(found[features.IMAGE_FORMAT_KEY].string_domain.value) == [
        "jpeg",
        "png",
        "gif",
        "bmp",
    ]
    assert all(f.presence.min_fraction == 1.0 for f in found.values())


def test_schema_gen_infers_every_feature_and_the_class_names(tmp_path, statistics):
    imported = harness.import_output(statistics, "statistics")
    component = tfx.components.SchemaGen(statistics=imported.outputs[harness.IMPORT_KEY])
    schema = _read(harness.LocalRun(str(tmp_path)).run(component)["schema"][0])
    found = _features(schema)
    assert {name: f.type for name, f in found.items()} == RAW_FEATURES
    assert all(f.presence.min_fraction == 1.0 for f in found.values())
    # The label's domain as inferred from two classes: indices 0 and 1 (a bool domain),
    # and the class names seen, as a string domain of their own.
    assert found[features.LABEL_KEY].HasField("bool_domain")
    assert found[features.LABEL_TEXT_KEY].domain == features.LABEL_TEXT_KEY
    domains = {domain.name: list(domain.value) for domain in schema.string_domain}
    assert sorted(domains[features.LABEL_TEXT_KEY]) == sorted(COLOURS)
    assert domains[features.IMAGE_FORMAT_KEY] == ["png"]
