"""The anomaly gate after ExampleValidator: blocks the run on anomalies (ANOMALIES=block,
the default) naming each one, only warns under ANOMALIES=warn, and lets clean data
through; a blocked `make run` exits with code 2 and the message, not a traceback."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from components.anomaly_gate import executor as anomaly_gate
from components.anomaly_gate.component import AnomalyGate
from models import features
from pipeline.configs import COMMITTED_SCHEMA, REPO_ROOT
from tests.components import harness
from tests.components.conftest import COLOURS, validate


def _gate_run(anomalies, root: str, **kwargs) -> tuple[harness.LocalRun, object]:
    imported = harness.import_output(anomalies, "anomalies")
    node = AnomalyGate(anomalies=imported.outputs[harness.IMPORT_KEY], **kwargs)
    return harness.LocalRun(root), node


def test_gate_blocks_the_run_naming_each_anomaly(tmp_path, broken_anomalies):
    run, node = _gate_run(broken_anomalies, str(tmp_path))  # block is the default
    with pytest.raises(anomaly_gate.AnomaliesFound) as error:
        run.run(node)
    message = str(error.value)
    assert f"split train: {features.IMAGE_KEY}: " in message
    assert f"split eval: {features.LABEL_KEY}: " in message
    assert "ANOMALIES=warn" in message
    assert run.execution_state(node.id) == "FAILED"


def test_gate_only_warns_when_told(tmp_path, broken_anomalies, caplog):
    run, node = _gate_run(broken_anomalies, str(tmp_path), mode=anomaly_gate.WARN)
    with caplog.at_level(logging.WARNING):
        run.run(node)
    assert run.execution_state(node.id) == "COMPLETE"
    assert f"split eval: {features.LABEL_KEY}: " in caplog.text
    assert "training goes on" in caplog.text


def test_gate_lets_clean_data_through(tmp_path, statistics):
    anomalies = validate(statistics, str(tmp_path / "validator"))
    run, node = _gate_run(anomalies, str(tmp_path / "gate"))
    run.run(node)
    assert run.execution_state(node.id) == "COMPLETE"


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="ANOMALIES='stop': use block or warn"):
        anomaly_gate.check_mode("stop")


@pytest.mark.slow  # a pipeline run up to the gate: ingest, ExampleGen, statistics, validation
def test_blocked_run_exits_2_with_the_message(tmp_path):
    images = {name: harness.coloured_images(8, colour, size=32) for name, colour in COLOURS.items()}
    for name, encoded in images.items():
        os.makedirs(tmp_path / "images" / name)
        for index, data in enumerate(encoded):
            (tmp_path / "images" / name / f"{index}.png").write_bytes(data)
    # A user's schema asking for photos at least 1000 px tall; these are 32 px.
    with open(COMMITTED_SCHEMA) as f:
        schema = f.read()
    height_domain = 'name: "height"\n  type: INT\n  presence { min_fraction: 1.0 min_count: 1 }\n'
    assert height_domain in schema
    schema = schema.replace(
        height_domain + "  shape { }\n  int_domain { min: 1 }",
        height_domain + "  shape { }\n  int_domain { min: 1000 }",
    )
    assert "min: 1000" in schema
    (tmp_path / "schema.pbtxt").write_text(schema)
    env = {
        **os.environ,
        "HOME": str(tmp_path / "home"),
        "PYTHONPATH": REPO_ROOT,
        "IMAGES": str(tmp_path / "images"),
        "OUTPUT": str(tmp_path / "output"),
        "SCHEMA": str(tmp_path / "schema.pbtxt"),
        "VALIDATION_FRACTION": "0.3",  # of a bare <class>/ folder, as EVAL_FRACTION
        "EVAL_FRACTION": "0.3",
        "IMAGE_SIZE": "32",
        "BACKBONE": "mobilenet_v2",
        "BACKBONE_WEIGHTS": "random",
        "TF_USE_LEGACY_KERAS": "1",
    }
    result = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "pipeline", "local_runner.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "ERROR: ExampleValidator found data that breaks the schema:" in result.stderr
    assert "split train: height: Unexpectedly small value: 32." in result.stderr
    assert "ANOMALIES=warn" in result.stderr
    assert "Traceback" not in result.stderr
    # Nothing was trained or pushed.
    assert not os.path.exists(tmp_path / "output" / "pipeline_root" / "Trainer")
    assert not os.path.exists(tmp_path / "output" / "serving")
