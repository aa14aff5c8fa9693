"""Resolver + Pusher alone, over successive runs sharing one ML Metadata: a retrained model
with different weights gets a new version, an identical one does not, an unblessed one
is never pushed, and the latest-blessed-model Resolver then finds the last pushed model."""

from __future__ import annotations

import filecmp
import os
import shutil

import pytest
from tfx import v1 as tfx

from components.pusher import component as pusher
from tests.components import harness
from tools import samples


def _pusher(model, blessing, serving_dir: str) -> pusher.ImagePusher:
    """The Pusher as pipeline/image_pipeline.py configures it (without a model card)."""
    return pusher.ImagePusher(
        model=model.outputs[harness.IMPORT_KEY],
        model_blessing=blessing.outputs[harness.IMPORT_KEY],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_dir)
        ),
    )


def _same_model(a: str, b: str) -> bool:
    return all(
        filecmp.cmp(os.path.join(a, name), os.path.join(b, name), shallow=False)
        for name in ("saved_model.pb", os.path.join("variables", "variables.index"))
    ) and filecmp.cmp(
        os.path.join(a, "variables", "variables.data-00000-of-00001"),
        os.path.join(b, "variables", "variables.data-00000-of-00001"),
        shallow=False,
    )


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> dict:
    """Four runs of the Pusher: model A blessed; an identical copy of A blessed; B (other
    weights) blessed; C unblessed. Then the Resolver. Returns what each step left."""
    root = tmp_path_factory.mktemp("pusher")
    exports = {
        name: samples.export_untrained_model(str(root / "exports" / name), seed=seed)
        for name, seed in (("a", 0), ("b", 1), ("c", 2))
    }
    # A retrain that produced the very same model (same files, a new Model artifact).
    exports["a_again"] = str(root / "exports" / "a_again")
    shutil.copytree(exports["a"], exports["a_again"])
    serving_dir = str(root / "serving")
    run = harness.LocalRun(str(root / "run"))
    steps = {}
    for name, blessed in (("a", True), ("a_again", True), ("b", True), ("c", False)):
        model = harness.import_model(exports[name], node_id=f"model_{name}")
        model_id = run.run(model)["result"][0].id
        model = harness.import_model(exports[name], node_id=f"model_{name}")
        blessing = harness.import_blessing(str(root / "blessings" / name), blessed, model_id)
        pushed = run.run(_pusher(model, blessing, serving_dir))["pushed_model"][0]
        steps[name] = {
            "model_id": model_id,
            "pushed": pushed.get_int_custom_property("pushed"),
            "version": pushed.get_string_custom_property("pushed_version"),
            "versions": sorted(os.listdir(serving_dir)) if os.path.isdir(serving_dir) else [],
        }
    resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    resolved = run.run(resolver)
    return {"exports": exports, "serving_dir": serving_dir, "steps": steps, "resolved": resolved}


def test_first_blessed_model_is_pushed_as_a_version(history):
    a = history["steps"]["a"]
    assert a["pushed"] == 1 and a["versions"] == [a["version"]]
    assert _same_model(history["exports"]["a"], os.path.join(history["serving_dir"], a["version"]))


def test_identical_model_gets_no_new_version(history):
    a, again = history["steps"]["a"], history["steps"]["a_again"]
    assert again["model_id"] != a["model_id"]  # a new Model artifact ...
    assert again["pushed"] == 1 and again["version"] == a["version"]  # ... recorded as A's
    assert again["versions"] == [a["version"]]


def test_retrained_model_with_other_weights_gets_a_new_version(history):
    a, b = history["steps"]["a"], history["steps"]["b"]
    assert not _same_model(history["exports"]["a"], history["exports"]["b"])
    assert b["pushed"] == 1 and int(b["version"]) > int(a["version"])
    assert b["versions"] == [a["version"], b["version"]]
    assert _same_model(history["exports"]["b"], os.path.join(history["serving_dir"], b["version"]))


def test_unblessed_model_is_never_pushed(history):
    b, c = history["steps"]["b"], history["steps"]["c"]
    assert c["pushed"] == 0
    assert c["versions"] == b["versions"]


def test_resolver_finds_the_latest_blessed_model(history):
    (model,) = history["resolved"]["model"]
    assert model.id == history["steps"]["b"]["model_id"]
