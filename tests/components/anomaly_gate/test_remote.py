"""The anomaly gate reads ExampleValidator's anomalies from any artifact URI (gs:// on Vertex;
ram:// here) through TFX's fileio, with no local file call on the URI."""

from __future__ import annotations

import uuid

import pytest
import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.types import standard_artifacts

from components.anomaly_gate import executor as anomaly_gate
from tests.components.no_local_io import forbid_local_io


def test_gate_blocks_on_anomalies_stored_under_a_uri():
    root = f"ram://anomalies-{uuid.uuid4().hex}"
    proto = anomalies_pb2.Anomalies()
    proto.anomaly_info["label"].description = "Unexpected string values: dog"
    proto.anomaly_info["label"].reason.add(
        type=anomalies_pb2.AnomalyInfo.ENUM_TYPE_UNEXPECTED_STRING_VALUES
    )
    tf.io.gfile.makedirs(f"{root}/Split-eval")
    with tf.io.gfile.GFile(f"{root}/Split-eval/{anomaly_gate.ANOMALIES_FILE}", "wb") as f:
        f.write(proto.SerializeToString())
    anomalies = standard_artifacts.ExampleAnomalies()
    anomalies.uri = root
    anomalies.split_names = '["eval"]'
    with forbid_local_io(), pytest.raises(anomaly_gate.AnomaliesFound, match="split eval: label"):
        anomaly_gate.gate(anomalies, anomaly_gate.BLOCK)
    tf.io.gfile.rmtree(root)
