"""ExampleValidator alone: clean records give no anomaly; records breaking the committed
schema (an example without its image in train, a label below the label domain in eval)
give exactly those anomalies."""

from __future__ import annotations

from components.anomaly_gate import executor as anomaly_gate
from models import features
from tests.components.conftest import validate


def test_clean_data_has_no_anomaly(tmp_path, statistics):
    anomalies = validate(statistics, str(tmp_path))
    assert anomaly_gate.read_anomalies(anomalies) == []
    blessed = anomalies.get_json_value_custom_property("blessed")
    assert blessed == {"train": 1, "validation": 1, "eval": 1}


def test_missing_image_and_label_out_of_domain_are_the_anomalies(broken_anomalies, dataset):
    found = {(a.split, a.feature): a for a in anomaly_gate.read_anomalies(broken_anomalies)}
    assert sorted(found) == [("eval", features.LABEL_KEY), ("train", features.IMAGE_KEY)]
    # All train examples but one have an image; the schema wants every one to.
    assert "FEATURE_TYPE_LOW_FRACTION_PRESENT" in found["train", features.IMAGE_KEY].reasons
    present = 1 - 1 / dataset.total("train")
    assert f"actual = {present:.6f}" in found["train", features.IMAGE_KEY].description
    # The schema's label domain starts at 0.
    assert found["eval", features.LABEL_KEY].reasons == ("INT_TYPE_SMALL_INT",)
    blessed = broken_anomalies.get_json_value_custom_property("blessed")
    assert blessed == {"train": 0, "validation": 1, "eval": 0}
