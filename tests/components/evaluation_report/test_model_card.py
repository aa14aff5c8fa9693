"""The model card: Model Card Toolkit's own JSON schema accepts it, and it says what matters.

Runs with model-card-toolkit 2.0.0 installed over its stale TFMA / absl / jsonschema pins
(pyproject's uv overrides): the card is scaffolded by the toolkit from the Evaluator's
and StatisticsGen's ML Metadata artifacts, and rendered by its own HTML template.
"""

from __future__ import annotations

import html
import json
import os

import jsonschema
import pytest
from model_card_toolkit.utils import validation

from components.evaluation_report import build, model_card
from tests.components.evaluation_report import report_fixture


@pytest.fixture(scope="session")
def run(tmp_path_factory) -> report_fixture.EvaluatedRun:
    return report_fixture.evaluated_run(str(tmp_path_factory.getbasetemp() / "report-run"))


def card_json(run) -> dict:
    with open(os.path.join(run.card_dir, build.MODEL_CARD_JSON)) as f:
        return json.load(f)


def validate(card: dict) -> None:
    """The toolkit's own validation with its own schema file (v0.0.2).

    MCT's schema writes its references as "#definitions/graphic"; jsonschema >= 4.18
    rejects that form (InvalidAnchor) on any card with graphics, so the lock keeps
    jsonschema < 4.18 (pyproject's uv overrides), where MCT's function works as written.
    """
    validation.validate_json_schema(card)


def test_card_validates_against_the_toolkits_schema(run):
    card = card_json(run)
    assert validation.get_latest_schema_version() == "0.0.2"
    validate(card)  # raises on any violation
    broken = {**card, "model_details": {**card["model_details"], "name": 42}}
    with pytest.raises(jsonschema.ValidationError, match="42"):
        validate(broken)
    misplaced = {**card, "considerations": {"limitations": "not a list"}}
    with pytest.raises(jsonschema.ValidationError):
        validate(misplaced)


def test_card_holds_details_data_metrics_and_considerations(run):
    card = card_json(run)
    report = report_fixture.report_json(run)
    details = card["model_details"]
    assert details["name"] == report_fixture.MODEL_NAME
    assert details["version"]["name"]
    sha256 = report["weights"]["sha256"] or "none (no weights file)"  # random: no file
    assert f"SHA-256 {sha256}" in details["overview"]
    assert "mobilenet_v2" in details["overview"]
    datasets = {d["name"]: d["description"] for d in card["model_parameters"]["data"]}
    assert f"{2 * report_fixture.EVAL_PER_CLASS} images" in datasets["eval split"]
    metrics = {
        (m["type"], m["slice"]): m for m in card["quantitative_analysis"]["performance_metrics"]
    }
    accuracy = metrics[("accuracy", "overall")]
    assert float(accuracy["value"]) == pytest.approx(
        report["blessing"]["candidate"]["value"], abs=1e-4
    )
    assert float(accuracy["confidence_interval"]["lower_bound"]) <= float(accuracy["value"])
    for name in run.class_names:
        assert ("recall", f"label_text={name}") in metrics
    limitations = [item["description"] for item in card["considerations"]["limitations"]]
    assert limitations[0].startswith("RANDOM BACKBONE WEIGHTS")
    assert limitations[1].startswith("Small eval set: 24 examples")


def test_card_gives_the_tflite_gate_and_the_infra_verdict(run):
    """The TFLite files' accuracy, agreement and paired difference as the card's metrics;
    their sizes, latency and verdicts (model.tflite refused, with the reason) and the
    InfraValidator's verdict as its tradeoffs; all on the rendered card."""
    card = card_json(run)
    tflite = report_fixture.report_json(run)["tflite"]
    metrics = {
        (m["type"], m["slice"]): m for m in card["quantitative_analysis"]["performance_metrics"]
    }
    for name, result in tflite["models"].items():
        where = f"{name}, eval split"
        accuracy = metrics[("TFLite accuracy", where)]
        assert float(accuracy["value"]) == pytest.approx(result["accuracy"], abs=1e-4)
        interval = accuracy["confidence_interval"]
        assert (
            float(interval["lower_bound"]) <= result["accuracy"] <= float(interval["upper_bound"])
        )
        agreement = metrics[("TFLite agreement with the SavedModel", where)]
        assert float(agreement["value"]) == pytest.approx(result["agreement"], abs=1e-4)
        difference = metrics[("TFLite accuracy difference vs SavedModel (paired)", where)]
        assert float(difference["confidence_interval"]["upper_bound"]) == pytest.approx(
            result["difference"]["upper"], abs=1e-4
        )
    tradeoffs = [t["description"] for t in card["considerations"]["tradeoffs"]]
    infra = "Infra validation: passed: the model loaded in project and answered its queries."
    assert infra in tradeoffs
    refused = tflite["models"][report_fixture.CORRUPTED_TFLITE]
    [line] = [t for t in tradeoffs if t.startswith(f"TFLite {report_fixture.CORRUPTED_TFLITE}:")]
    assert build.file_size(refused["size_bytes"]) in line and "agreement 0.0000" in line
    assert line.endswith("REFUSED, not shipped: " + refused["refused_because"][0] + ".")
    [line] = [t for t in tradeoffs if t.startswith("TFLite model_int8.tflite:")]
    assert line.endswith("blessed: shipped beside the SavedModel when the model is pushed.")
    with open(os.path.join(run.card_dir, build.MODEL_CARD_HTML)) as f:
        page = html.unescape(f.read())
    assert infra in page and "REFUSED, not shipped: agrees with the SavedModel" in page
    assert f"TFLite agreement with the SavedModel, {report_fixture.CORRUPTED_TFLITE}" in page


def test_card_plots_only_the_features_a_reader_can_use(run):
    """Class balance, sizes and formats per split; no histogram of the encoded bytes, the
    per-photo paths or the label index (each plot costs about a second to draw)."""
    card = card_json(run)
    plotted = {
        d["name"]: sorted(g["name"] for g in d.get("graphics", {}).get("collection", []))
        for d in card["model_parameters"]["data"]
    }
    expected = sorted(f"counts | {name}" for name in model_card.CARD_FEATURES)
    assert plotted["train split"] == expected
    assert all(names in ([], expected) for names in plotted.values())


def test_card_is_rendered_and_travels_with_the_report(run):
    with open(os.path.join(run.card_dir, build.MODEL_CARD_HTML)) as f:
        page = f.read()
    assert "RANDOM BACKBONE WEIGHTS" in page and report_fixture.MODEL_NAME in page
    assert os.path.isfile(os.path.join(run.report_dir, build.MODEL_CARD_HTML))
    # The Pusher copied it into the pushed version's assets.extra/.
    for name in (build.MODEL_CARD_JSON, build.MODEL_CARD_HTML):
        pushed = os.path.join(run.pushed_dir, "assets.extra", name)
        with open(pushed, "rb") as f, open(os.path.join(run.card_dir, name), "rb") as g:
            assert f.read() == g.read()


def test_considerations_name_imbalance_after_random_weights():
    report = {
        "weights": {"pretrained": False},
        "blessing": {
            "class_counts": {"a": 400, "b": 100},
            "candidate": {"value": 0.8, "lower": 0.76, "upper": 0.84},
            "majority_rate": 0.8,
        },
    }
    limitations = model_card.considerations(report)
    assert limitations[0].startswith("RANDOM")
    assert limitations[1].startswith("Class imbalance")  # 500 examples: not small
    report["weights"]["pretrained"] = True
    report["blessing"]["class_counts"] = {"a": 250, "b": 250}
    assert not any(
        t.startswith(("RANDOM", "Class imbalance", "Small"))
        for t in model_card.considerations(report)
    )
