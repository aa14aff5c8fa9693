"""The compiled Vertex spec, run task by task here (tools/replay_kubeflow.py), twice.

One module-scoped fixture compiles the spec as `make compile-kubeflow` does (default
BACKBONE_WEIGHTS=imagenet: EfficientNet-Lite0, whose weights the Trainer resolves in the
"container" from the locked package; a HOME with no Keras cache) and replays it twice in a
row from a working directory outside the checkout. The first replay pushes a model; the
second's Evaluator gets the first's blessed model from the resolver tasks, answered from the
replay's record. Small on purpose: 2 x 20 generated photos at 64 px, cached features, no
TFLite export and no InfraValidator (each is one more task process per replay).

The resolver filter and the task order have quick tests of their own at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline import kubeflow_v2_runner
from pipeline.configs import REPO_ROOT, PipelineConfig
from tools import replay_kubeflow, samples

LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def _run(command: list[str], env: dict, cwd: str) -> subprocess.CompletedProcess:
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


@pytest.fixture(scope="module")
def replays(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("replay")
    images = root / "images"
    samples.write_bright_and_dark_photos(str(images))
    home = root / "home"
    home.mkdir()
    # uv's cache stays the caller's: the image's venv is built from it, not from PyPI.
    uv_cache = subprocess.run(
        [*replay_kubeflow.host_uv(), "cache", "dir"], capture_output=True, text=True, check=True
    ).stdout.strip()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("BACKBONE_WEIGHTS", "PIPELINE_ROOT")},
        "HOME": str(home),
        "UV_CACHE_DIR": os.environ.get("UV_CACHE_DIR", uv_cache),
        "KERAS_HOME": str(home / ".keras"),
        "IMAGES": str(images),
        "OUTPUT": str(root / "out"),
        "BACKBONE": "efficientnet_lite0",
        "IMAGE_SIZE": "64",
        "EPOCHS": "20",
        "BATCH_SIZE": "8",
        "LEARNING_RATE": "0.01",
        "ACCURACY_THRESHOLD": "0.7",
        "TFLITE_EXPORT": "false",
        "INFRA_VALIDATION": "false",
        "TF_USE_LEGACY_KERAS": "1",
    }
    _run(
        [sys.executable, os.path.join(REPO_ROOT, "pipeline", "kubeflow_v2_runner.py")],
        env,
        REPO_ROOT,
    )
    outside = root / "elsewhere"  # the replays' working directory: not the checkout
    outside.mkdir()
    logs = [
        _run(
            [sys.executable, "-m", "tools.replay_kubeflow"],
            {**env, "PYTHONPATH": REPO_ROOT},
            str(outside),
        ).stdout
        for _ in range(2)
    ]
    config = PipelineConfig.from_env(env)
    state = os.path.join(config.output, replay_kubeflow.STATE_DIR)
    runs = []
    for job in ("replay-1", "replay-2"):
        with open(os.path.join(state, f"{job}.json")) as f:
            runs.append(json.load(f))
    with open(kubeflow_v2_runner.spec_path(config)) as f:
        spec = json.load(f)
    return {"config": config, "state": state, "runs": runs, "logs": logs, "spec": spec}


def _task(run: dict, name: str) -> dict:
    [result] = [r for r in run["results"] if r["name"] == name]
    return result


slow = pytest.mark.slow


@slow
def test_every_task_ran_after_its_dependencies(replays):
    tasks = replays["spec"]["pipelineSpec"]["root"]["dag"]["tasks"]
    for run in replays["runs"]:
        order = [r["name"] for r in run["results"]]
        assert sorted(order) == sorted(tasks)
        for name, task in tasks.items():
            for upstream in task.get("dependentTasks", []):
                assert order.index(upstream) < order.index(name), (upstream, name)
        kinds = {r["name"]: r["kind"] for r in run["results"]}
        assert {n for n, k in kinds.items() if k == "resolver"} == {
            n for n in tasks if n.startswith("latest_blessed_model_resolver-")
        }
    # ImageExampleGen's driver hook ran before its executor, and wrote the output file the
    # executor then read (the fingerprint of the photos).
    logs = os.path.join(replays["state"], "logs", "replay-1")
    assert os.path.getmtime(os.path.join(logs, "ImageExampleGen.driver.log")) <= os.path.getmtime(
        os.path.join(logs, "ImageExampleGen.log")
    )
    with open(os.path.join(logs, "ImageExampleGen.driver.log")) as f:
        assert "Calculated fingerprint" in f.read()


@slow
def test_the_first_replay_pushes_a_model_trained_on_weights_resolved_in_the_image(replays):
    pusher = _task(replays["runs"][0], "Pusher")
    [pushed] = pusher["outputs"]["pushed_model"]
    assert pushed["metadata"]["pushed"] == 1.0
    version_dir = pushed["metadata"]["pushed_destination"]
    assert os.path.dirname(version_dir) == replays["config"].serving_model_dir
    with open(os.path.join(version_dir, "assets.extra", "training_metadata.json")) as f:
        weights = json.load(f)["backbone_weights"]
    # Resolved by the Trainer from the image's own venv (the locked package), not at compile.
    assert weights["sha256"] == LITE0_SHA256 and not weights["deferred"]
    assert weights["path"].startswith(os.path.join(replays["state"], "image", ".venv"))
    # Nothing of the first replay had a baseline.
    evaluator = _task(replays["runs"][0], "Evaluator")
    assert evaluator["executor_input"]["inputs"]["artifacts"]["baseline_model"]["artifacts"] == []


@slow
def test_the_second_evaluator_has_the_first_blessed_model_as_baseline(replays):
    first, second = replays["runs"]
    [first_model] = _task(first, "Trainer")["outputs"]["model"]
    [first_blessing] = _task(first, "Evaluator")["outputs"]["blessing"]
    assert first_blessing["metadata"]["blessed"] == 1.0
    # The resolvers found them in the record of the first replay...
    [blessing] = _task(second, "latest_blessed_model_resolver-model-blessing-resolver")["outputs"][
        "model_blessing"
    ]
    assert blessing["name"] == first_blessing["name"]
    evaluator = _task(second, "Evaluator")
    [baseline] = evaluator["executor_input"]["inputs"]["artifacts"]["baseline_model"]["artifacts"]
    assert (baseline["name"], baseline["uri"]) == (first_model["name"], first_model["uri"])
    # ... and TFX's Evaluator compared against it: its blessing names the baseline.
    [second_blessing] = evaluator["outputs"]["blessing"]
    assert second_blessing["metadata"]["baseline_model_id"] == first_model["name"]
    assert second_blessing["metadata"]["blessed"] == 1.0


@slow
def test_the_replay_prints_its_tasks_and_times(replays):
    for log in replays["logs"]:
        assert "] Trainer: container, " in log and "REPLAYED replay-" in log


# --- quick tests of the replay's own parts ------------------------------------------------


def _record(tmp_path, artifacts: list[dict]) -> replay_kubeflow.Record:
    record = replay_kubeflow.Record(str(tmp_path))
    for artifact in artifacts:
        record.add({"job": "j", "task": "t", "uri": "/u", **artifact})
    return record


def test_the_resolver_filters_answer_the_newest_match(tmp_path):
    """The two queries TFX compiles for LatestBlessedModelStrategy, over a record."""
    record = _record(
        tmp_path,
        [
            {"name": "m1", "schema_title": "tfx.Model", "metadata": {}},
            {
                "name": "b1",
                "schema_title": "tfx.ModelBlessing",
                "metadata": {"blessed": 1.0, "current_model_id": "m1"},
            },
            {"name": "m2", "schema_title": "tfx.Model", "metadata": {}},
            {
                "name": "b2",
                "schema_title": "tfx.ModelBlessing",
                "metadata": {"blessed": 0.0, "current_model_id": "m2"},
            },
        ],
    )
    blessed = 'schema_title="tfx.ModelBlessing" AND state=LIVE AND metadata.blessed.number_value=1'
    assert [a["name"] for a in record.query(blessed)] == ["b1"]
    assert [
        a["name"] for a in record.query('schema_title="tfx.Model" AND state=LIVE AND name="m1"')
    ] == ["m1"]
    assert record.query('schema_title="tfx.Model" AND name="m9"') == []
    # A filter this replay cannot evaluate stops it, rather than resolving nothing.
    with pytest.raises(replay_kubeflow.ReplayError, match="only `=` clauses"):
        record.query("create_time > 5")
    with pytest.raises(replay_kubeflow.ReplayError, match="'uri' is not understood"):
        record.query('uri="/u"')


def test_tasks_are_ordered_by_dependencies_and_producers():
    tasks = {
        "c": {"dependentTasks": ["b"]},
        "b": {"inputs": {"artifacts": {"x": {"taskOutputArtifact": {"producerTask": "a"}}}}},
        "a": {},
        "r": {},
    }
    assert replay_kubeflow.task_order(tasks) == ["a", "b", "c", "r"]
    with pytest.raises(replay_kubeflow.ReplayError, match="cycle"):
        replay_kubeflow.task_order({"a": {"dependentTasks": ["b"]}, "b": {"dependentTasks": ["a"]}})


def test_the_image_is_read_from_the_dockerfile():
    image = replay_kubeflow.Image.read()
    assert image.workdir == "/pipeline"
    copied = [source for kind, words in image.steps if kind == "copy" for source in words]
    assert {"uv.lock", "components", "models", "pipeline"} <= set(copied)
    assert [kind for kind, _ in image.steps].count("sync") == 2
    assert ("PYTHONPATH", "/pipeline") in image.env
