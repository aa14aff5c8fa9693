"""The evaluation report as a person gets it: the files, the numbers, the page in a browser.

The report comes from the EvaluationReport component of a real (small) run
(report_fixture.py beside this test); the page is opened in headless Chromium over the DevTools
protocol: no console error, every image decoded, and a screenshot saved.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import html
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import websocket
from tfx.components.infra_validator import executor as tfx_infra_executor
from tfx.types import standard_artifacts
from tfx.utils import path_utils

from components.evaluation_report import build, model_card
from components.infra_validator import verdict as infra_verdict
from models import features, tflite_export
from models.metrics import worst_errors
from models.options import TFLITE_MIN_AGREEMENT
from pipeline import metadata
from tests.components.evaluation_report import report_fixture
from tools import report as rebuild

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT_ENV = "REPORT_SCREENSHOT"  # optional path to keep the screenshot at


@pytest.fixture(scope="session")
def run(tmp_path_factory) -> report_fixture.EvaluatedRun:
    return report_fixture.evaluated_run(str(tmp_path_factory.getbasetemp() / "report-run"))


def test_report_holds_every_section(run):
    data = report_fixture.report_json(run)
    assert os.path.isfile(os.path.join(run.report_dir, build.INDEX_HTML))
    assert data["class_names"] == list(run.class_names)
    blessing = data["blessing"]
    assert blessing["blessed"] is True and blessing["decided_by"].startswith("blessed")
    accuracy = data["metrics"]["sparse_categorical_accuracy"]["candidate"]
    assert accuracy["lower"] <= accuracy["value"] <= accuracy["upper"]
    assert set(data["roc_pr"]) == set(run.class_names)
    assert set(data["calibration"]) == set(run.class_names)
    assert set(data["per_class"]) == set(run.class_names)
    assert data["data"]["counts"]["eval"] == {
        c: report_fixture.EVAL_PER_CLASS for c in run.class_names
    }
    assert data["data"]["input_size"] == 32
    assert "eval" in data["data"]["anomalies"]  # ExampleValidator's verdict per split
    with open(os.path.join(run.pushed_dir, features.TRAINING_METADATA_FILE)) as f:
        weights = json.load(f)["backbone_weights"]
    assert data["weights"] == weights and weights["pretrained"] is False
    for error in data["worst_errors"]:
        assert error["true_class"] != error["predicted_class"]
        assert base64.b64decode(error["thumbnail_jpeg_base64"])[:2] == b"\xff\xd8"
    confidences = [e["confidence"] for e in data["worst_errors"]]
    assert confidences == sorted(confidences, reverse=True)


def page_text(markup: str) -> str:
    """What index.html shows as text (tags dropped, entities decoded, spaces collapsed)."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", markup)).split())


def _report_inputs(run, **changes) -> build.ReportInputs:
    """The inputs the run's EvaluationReport had (from ML Metadata), with `changes`."""
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
        tflite_evaluation_uri=artifacts["tflite_evaluation"].uri,
        infra_blessing=artifacts["infra_blessing"],
    )
    return dataclasses.replace(inputs, **changes)


def test_report_shows_the_tflite_gate_and_the_infra_verdict(run):
    """The TFLiteEvaluator's and the InfraValidator's verdicts of the run, as numbers in
    report.json and as rows on the page: model.tflite (made to answer the other class) is
    refused and the page says why; model_int8.tflite is blessed."""
    data = report_fixture.report_json(run)
    tflite = data["tflite"]
    assert tflite["ran"] and set(tflite["models"]) == set(tflite_export.MODEL_FILES)
    model_dir = tflite_export.tflite_dir(data["artifacts"]["model"])
    for name, result in tflite["models"].items():
        assert result["size_bytes"] == os.path.getsize(os.path.join(model_dir, name))
    refused = tflite["models"][report_fixture.CORRUPTED_TFLITE]
    assert refused["blessed"] is False and refused["agreement"] == 0.0
    [reason] = refused["refused_because"]
    assert f"TFLITE_MIN_AGREEMENT={TFLITE_MIN_AGREEMENT}" in reason
    int8 = tflite["models"][tflite_export.INT8_MODEL]
    assert int8["blessed"] is True and int8["agreement"] == 1.0
    assert tflite["statement"] == f"refused (not pushed): {report_fixture.CORRUPTED_TFLITE}"
    assert data["infra_validation"] == {
        "ran": True,
        "blessed": True,
        "model_server": "project",
        "failure": None,
        "statement": "passed: the model loaded in project and answered its queries",
    }
    with open(os.path.join(run.report_dir, build.INDEX_HTML)) as f:
        text = page_text(f.read())
    assert "Infra validation: PASSED passed: the model loaded in project" in text
    size = build.file_size(refused["size_bytes"])
    assert f"{report_fixture.CORRUPTED_TFLITE} {size} 0.5000 0.0000 +0.0000 " in text
    assert f"REFUSED: {reason}" in text
    int8_size = build.file_size(int8["size_bytes"])
    assert (
        f"{tflite_export.INT8_MODEL} {int8_size} 0.5000 1.0000 +0.0000 [+0.0000, +0.0000]" in text
    )
    assert f"{int8['latency_ms']:.2f} ms {int8['images_per_second']} blessed" in text


def test_a_failed_infra_validation_and_steps_not_run_are_said(run, tmp_path):
    """A blessing refused by the InfraValidator (marked by TFX's executor function and
    the project's verdict writer, as executor.py does) shows FAILED and the reason, in the
    report and the card's limitations; without a TFLiteEvaluator or an InfraValidator (their
    knobs off) the report and the card say "not run"."""
    blessing = standard_artifacts.InfraBlessing()
    blessing.uri = str(tmp_path / "blessing")
    os.makedirs(blessing.uri)
    tfx_infra_executor._mark_not_blessed(blessing)
    failure = "the model was not loaded within max_loading_time_seconds=1 (took too long)"
    infra_verdict.record(blessing, "project", failure)
    data, figures = build.build_report_data(
        _report_inputs(run, infra_blessing=blessing.mlmd_artifact, tflite_evaluation_uri=None)
    )
    text = page_text(build.render_html(data, figures))
    assert f"Infra validation: FAILED FAILED in project: {failure}; the model is not pushed" in text
    assert f"TFLite models {build.TFLITE_NOT_RUN}" in text
    limitations = model_card.considerations(data)
    assert any(t.startswith("FAILED INFRA VALIDATION") and failure in t for t in limitations)
    assert model_card.tflite_tradeoffs(data) == [f"TFLite models: {build.TFLITE_NOT_RUN}."]

    data, figures = build.build_report_data(
        _report_inputs(run, infra_blessing=None, tflite_evaluation_uri=None)
    )
    text = page_text(build.render_html(data, figures))
    assert f"Infra validation: NOT RUN {build.INFRA_NOT_RUN}" in text
    assert f"TFLite models {build.TFLITE_NOT_RUN}" in text
    assert not any("INFRA" in t for t in model_card.considerations(data))


def test_confusion_matrix_matches_the_pushed_models_own_predictions(run):
    """TFMA's MultiClassConfusionMatrixPlot, as the report shows it, against the pushed
    SavedModel's answers on ingest's eval records (read here without TFX or TFMA)."""
    files = sorted(
        os.path.join(run.eval_tfrecord_dir, n) for n in os.listdir(run.eval_tfrecord_dir)
    )
    records = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    model = tf.saved_model.load(run.pushed_dir)
    answers = model.signatures[features.TF_EXAMPLE_SIGNATURE](
        **{features.TF_EXAMPLE_INPUT_KEY: tf.constant(records)}
    )
    predicted = answers[features.CLASS_INDEX_KEY].numpy()
    probabilities = answers[features.PROBABILITIES_KEY].numpy()
    labels = np.array(
        [
            tf.train.Example.FromString(r).features.feature["label"].int64_list.value[0]
            for r in records
        ]
    )
    expected = {
        true: {
            pred: int(np.sum((labels == i) & (predicted == j)))
            for j, pred in enumerate(run.class_names)
        }
        for i, true in enumerate(run.class_names)
    }
    data = report_fixture.report_json(run)
    assert data["confusion_matrix"]["counts"] == expected
    assert len(records) == 2 * report_fixture.EVAL_PER_CLASS
    wrong = int(np.sum(labels != predicted))
    assert len(data["worst_errors"]) == min(wrong, worst_errors.WORST_ERRORS)
    # The listed errors are exactly the K most confident wrong predictions of that model
    # (computed by the Evaluator's metric, not by the report running the model).
    assert wrong > 0  # the random-weights model does make mistakes here
    paths = [
        tf.train.Example.FromString(r).features.feature["source_path"].bytes_list.value[0].decode()
        for r in records
    ]
    mistakes = {
        paths[i]: (
            run.class_names[labels[i]],
            run.class_names[predicted[i]],
            float(probabilities[i, predicted[i]]),
        )
        for i in np.flatnonzero(labels != predicted)
    }
    listed = data["worst_errors"]
    for error in listed:
        true, pred, confidence = mistakes[error["path"]]
        assert (error["true_class"], error["predicted_class"]) == (true, pred)
        assert error["confidence"] == pytest.approx(confidence, abs=1e-4)
    expected = sorted((c for *_, c in mistakes.values()), reverse=True)[: len(listed)]
    assert [e["confidence"] for e in listed] == pytest.approx(expected, abs=1e-4)
    unlisted = set(mistakes) - {e["path"] for e in listed}
    assert all(mistakes[p][2] <= listed[-1]["confidence"] + 1e-4 for p in unlisted)


def test_the_report_is_built_without_loading_the_model(run, tmp_path):
    """No SavedModel in the model artifact (only its training metadata): the report is
    built all the same, worst errors included."""
    store = metadata.open_store(run.metadata_path)
    context = store.get_context_by_type_and_name("pipeline_run", run.run_id)
    execution, artifacts = metadata.node_inputs(store, context, rebuild.REPORT_NODE)
    model_copy = tmp_path / "model"
    shutil.copytree(artifacts["model"].uri, model_copy)
    serving = Path(path_utils.serving_model_dir(str(model_copy)))
    (serving / "saved_model.pb").unlink()
    shutil.rmtree(serving / "variables")
    inputs = build.ReportInputs(
        pipeline_run=run.run_id,
        evaluation_uri=artifacts["evaluation"].uri,
        model_uri=str(model_copy),
        examples_uri=artifacts["examples"].uri,
        eval_split="eval",
        anomalies_uri=artifacts["anomalies"].uri,
        ingest_report={},
    )
    data, figures = build.build_report_data(inputs)
    original = report_fixture.report_json(run)
    assert data["worst_errors"] == original["worst_errors"] and data["worst_errors"]
    assert data["confusion_matrix"] == original["confusion_matrix"]
    assert "confusion_matrix" in figures


def test_make_report_rebuilds_a_past_run_from_ml_metadata(run, tmp_path):
    output = tmp_path / "report"
    output.mkdir()
    (output / "stale.txt").write_text("from an older report")
    data = rebuild.rebuild(
        run.metadata_path, run.pipeline_name, run.run_id, str(output), report_fixture.MODEL_NAME
    )
    assert data["pipeline_run"] == run.run_id
    assert sorted(os.listdir(output)) == sorted(
        [build.INDEX_HTML, build.REPORT_JSON, build.MODEL_CARD_HTML, build.MODEL_CARD_JSON]
    )
    original = report_fixture.report_json(run)
    with open(output / build.REPORT_JSON) as f:
        rebuilt = json.load(f)
    assert rebuilt["confusion_matrix"] == original["confusion_matrix"]
    assert rebuilt["blessing"] == original["blessing"]
    # The TFLite gate and the infra verdict come from the run's inputs in ML Metadata too.
    assert rebuilt["tflite"] == original["tflite"] and rebuilt["tflite"]["ran"]
    assert rebuilt["infra_validation"] == original["infra_validation"]
    with pytest.raises(rebuild.RunNotFound, match="no run 'nope'"):
        rebuild.rebuild(run.metadata_path, run.pipeline_name, "nope", str(output), "m")


class _Page:
    """One Chromium page over the DevTools protocol (websocket-client)."""

    def __init__(self, url: str):
        self.socket = websocket.create_connection(url, timeout=60)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(event)
            self.events.append(json.loads(self.socket.recv()))


@contextlib.contextmanager
def headless_chromium(profile: str):
    """A headless Chromium with a fresh profile; yields its DevTools HTTP address."""
    process = subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",  # Chromium picks a free port and writes it below
            "--window-size=1200,900",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert process.poll() is None, "chromium exited"
            assert time.monotonic() < deadline, "chromium did not start"
            time.sleep(0.2)
        yield f"http://127.0.0.1:{int(port_file.read_text().split()[0])}"
    finally:
        process.terminate()
        process.wait(timeout=30)


# What markup smuggled in through a file or class name would have made of the page:
# elements with an event handler, images not embedded by the report (`<img src=x>`),
# and bold elements opened by the `<b>x` class name (the report's own <b> hold a class
# name shown as text, "<b>x", or a warning).
INJECTED = """JSON.stringify({
  handlers: Array.from(document.querySelectorAll("*")).filter(
    e => Array.from(e.attributes).some(a => a.name.startsWith("on"))).map(e => e.outerHTML),
  foreign_images: Array.from(document.images).filter(
    i => !i.getAttribute("src").startsWith("data:")).map(i => i.outerHTML),
  opened_bold: Array.from(document.querySelectorAll("b")).filter(
    b => b.textContent.startsWith("x")).map(b => b.outerHTML),
})"""


def open_page(devtools: str, path: str, screenshot: str) -> dict:
    """Load a file in the browser's page; return its console/JS errors, its images
    (alt, decoded or not), title, text and any injected elements (INJECTED), and save a
    full-page screenshot."""
    with urllib.request.urlopen(f"{devtools}/json/list", timeout=30) as response:
        target = next(t for t in json.load(response) if t["type"] == "page")
    page = _Page(target["webSocketDebuggerUrl"])
    for domain in ("Page", "Runtime", "Log"):
        page.call(f"{domain}.enable")
    page.call("Page.navigate", url=f"file://{os.path.abspath(path)}")
    page.wait_for("Page.loadEventFired")
    images = page.call(
        "Runtime.evaluate",
        expression="JSON.stringify(Array.from(document.images).map("
        "i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0})))",
        returnByValue=True,
    )["result"]["value"]
    title = page.call("Runtime.evaluate", expression="document.title", returnByValue=True)
    text = page.call("Runtime.evaluate", expression="document.body.innerText", returnByValue=True)[
        "result"
    ]["value"]
    injected = page.call("Runtime.evaluate", expression=INJECTED, returnByValue=True)

    height = page.call("Page.getLayoutMetrics")["cssContentSize"]["height"]
    shot = page.call(
        "Page.captureScreenshot",
        format="png",
        captureBeyondViewport=True,
        clip={"x": 0, "y": 0, "width": 1200, "height": min(height, 8000), "scale": 1},
    )
    Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
    errors = [
        e
        for e in page.events
        if e.get("method") == "Runtime.exceptionThrown"
        or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
        or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
    ]
    dialogs = [e for e in page.events if e.get("method") == "Page.javascriptDialogOpening"]
    page.socket.close()
    return {
        "errors": errors,
        "images": json.loads(images),
        "title": title["result"]["value"],
        "text": text,
        "injected": json.loads(injected["result"]["value"]),
        "dialogs": dialogs,
    }


def test_report_renders_in_chromium_without_errors(run, tmp_path):
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: run `make setup` (installs Debian's chromium)")
    screenshot = tmp_path / "report.png"
    with headless_chromium(tempfile.mkdtemp(dir=tmp_path)) as devtools:
        page = open_page(devtools, os.path.join(run.report_dir, build.INDEX_HTML), str(screenshot))
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(screenshot, os.environ[SCREENSHOT_ENV])
    assert page["errors"] == []
    assert "Evaluation report" in page["title"]
    # Five figures (confusion matrix, per-class bars, ROC, PR, calibration) and thumbnails.
    assert len(page["images"]) >= 5 + 1
    assert [i for i in page["images"] if not i["ok"]] == []
    assert screenshot.stat().st_size > 20_000
    # The serving checks are on the page as a reader sees it (innerText: rendered, shown).
    assert "Infra validation: PASSED" in page["text"]
    rows = [r for r in page["text"].splitlines() if ".tflite" in r and "\t" in r]
    assert [r.split("\t")[0] for r in rows] == list(tflite_export.MODEL_FILES), rows
    assert rows[0].split("\t")[-1].startswith("REFUSED: agrees with the SavedModel on 0.0000")
    assert rows[1].split("\t")[-1] == "blessed"


def test_file_and_class_names_that_are_markup_are_shown_as_text(run, tmp_path):
    """Issue 25: a class folder `<b>x` and a photo `<img src=x onerror=alert(1)>.jpg`
    (a real one among the eval split's worst errors, a broken one in train: skipped and
    listed) in a real run. In Chromium neither the report nor the model card gains an
    element from them, no script runs, and the names are on the page, character for
    character."""
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: run `make setup` (installs Debian's chromium)")
    data = report_fixture.report_json(run)
    assert report_fixture.MARKUP_CLASS in data["class_names"]  # report.json keeps them raw
    skipped = f"train/{report_fixture.MARKUP_CLASS}/{report_fixture.MARKUP_PHOTO}"
    assert [s["path"] for s in data["data"]["skipped"]] == [skipped]
    eval_photo = f"test/hot_dog/{report_fixture.MARKUP_PHOTO}"
    assert eval_photo in [e["path"] for e in data["worst_errors"]], "see report_fixture.py"
    with headless_chromium(tempfile.mkdtemp(dir=tmp_path)) as devtools:
        report = open_page(
            devtools, os.path.join(run.report_dir, build.INDEX_HTML), str(tmp_path / "r.png")
        )
        card = open_page(
            devtools, os.path.join(run.report_dir, build.MODEL_CARD_HTML), str(tmp_path / "c.png")
        )
    for page in (report, card):
        assert page["injected"] == {"handlers": [], "foreign_images": [], "opened_bold": []}
        assert page["dialogs"] == []
        assert report_fixture.MARKUP_CLASS in page["text"]
    assert report["errors"] == []
    assert skipped in report["text"]
    assert eval_photo in report["text"]
    assert f"true hot_dog, predicted {report_fixture.MARKUP_CLASS}" in report["text"]
