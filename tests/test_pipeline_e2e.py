"""End-to-end: the real pipeline under BeamDagRunner (and the `tfx` CLI) on a tiny folder.

Each run is a subprocess of `pipeline/local_runner.py`, exactly what `make run` starts;
the assertions read ML Metadata, the run summary and the pushed SavedModel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import tensorflow as tf
import tf_keras

from components import demo_data
from pipeline.configs import REPO_ROOT, PipelineConfig
from pipeline.summary import EXIT_NOT_PUSHED, _store, component_executions, latest_run
from tests import factories

pytestmark = pytest.mark.slow

COMPONENTS = {
    "ImportExampleGen",
    "StatisticsGen",
    "ImportSchemaGen",
    "ExampleValidator",
    "AnomalyGate",
    "Transform",
    "Trainer",
    "latest_blessed_model_resolver",
    "Evaluator",
    "Pusher",
}
PYTHON = sys.executable


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    """A flat <dir>/<class>/* folder with one broken file, and a backbone weights file."""
    root = tmp_path_factory.mktemp("e2e")
    images = root / "images"
    for class_name in demo_data.CLASS_NAMES:
        (images / class_name).mkdir(parents=True)
        for index in range(20):
            demo_data.demo_image(class_name, index, seed=7).save(
                images / class_name / f"{index:03d}.jpg", "JPEG"
            )
    (images / "hot_dog" / "empty.jpg").write_bytes(b"")
    weights_file = root / "resnet50_notop.h5"
    # Random weights written as a file: exercises BACKBONE_WEIGHTS=<path> end to end.
    tf_keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    ).save_weights(str(weights_file))
    env = {
        **os.environ,
        "HOME": str(root / "home"),  # Beam and the tfx CLI write under $HOME
        "IMAGES": str(images),
        "OUTPUT": str(root / "output"),
        "IMAGE_SIZE": "32",
        "EPOCHS": "2",
        "BATCH_SIZE": "8",
        "BACKBONE_WEIGHTS": str(weights_file),
        "MODEL_NAME": "hotdog",
        "PIPELINE_NAME": "e2e-test",
        # The thresholds' mechanics are under test, not the accuracy of random features.
        "ACCURACY_THRESHOLD": "0.0",
        "TF_USE_LEGACY_KERAS": "1",
    }
    return {
        "root": root,
        "images": images,
        "env": env,
        "config": PipelineConfig.from_env(env),
        "weights": weights_file,
    }


def run_pipeline(env: dict, *args: str) -> subprocess.CompletedProcess:
    command = args or (PYTHON, os.path.join(REPO_ROOT, "pipeline", "local_runner.py"))
    return subprocess.run(
        command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900
    )


def latest_components(config: PipelineConfig) -> dict:
    store = _store(config)
    return component_executions(store, latest_run(store, config.pipeline_name))


def summary(config: PipelineConfig) -> dict:
    with open(config.summary_path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def first_run(workspace) -> subprocess.CompletedProcess:
    result = run_pipeline(workspace["env"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def test_first_run_executes_every_component_and_pushes(workspace, first_run):
    config = workspace["config"]
    components = latest_components(config)
    assert set(components) == COMPONENTS
    assert {c["state"] for c in components.values()} == {"COMPLETE"}
    run = summary(config)
    assert run["blessed"] is True and run["pushed"] is True
    assert run["pushed_path"].startswith(config.serving_model_dir + os.sep)
    assert f"PUSHED MODEL: {run['pushed_path']}" in first_run.stdout
    counts = run["ingest"]["counts"]
    for class_name in demo_data.CLASS_NAMES:  # 20 valid images each, ~20 % held out
        assert counts["train"][class_name] + counts["eval"][class_name] == 20
        assert 3 <= counts["eval"][class_name] <= 4
    assert run["ingest"]["skipped"] == 1
    assert 0.0 <= run["eval_metrics"]["sparse_categorical_accuracy"] <= 1.0
    assert run["eval_metrics"]["example_count"] == sum(counts["eval"].values())
    assert run["backbone_weights"]["source"] == "file"
    assert run["model_metadata_backbone_weights"]["sha256"] == run["backbone_weights"]["sha256"]


def test_pushed_model_answers_raw_image_bytes(workspace, first_run):
    version_dir = summary(workspace["config"])["pushed_path"]
    model = tf.saved_model.load(version_dir)
    images = [factories.image_bytes(90, 60, "jpeg", seed=1), factories.image_bytes(30, 50, "png")]
    outputs = model.signatures["serving_default"](image_bytes=tf.constant(images))
    probabilities = outputs["probabilities"].numpy()
    assert probabilities.shape == (2, 2)
    assert probabilities.sum(axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)
    assert set(outputs["class_name"].numpy()) <= {b"hot_dog", b"not_hot_dog"}


def test_unchanged_rerun_is_served_from_cache(workspace, first_run):
    config = workspace["config"]
    first_push = summary(config)["pushed_path"]
    versions_before = sorted(os.listdir(config.serving_model_dir))
    result = run_pipeline(workspace["env"])
    assert result.returncode == 0, result.stderr[-3000:]
    states = {node: c["state"] for node, c in latest_components(config).items()}
    # The Evaluator runs again: its baseline went from none to the blessed model. Nothing
    # is retrained, and the Pusher records the existing version instead of copying it.
    for node in COMPONENTS - {"latest_blessed_model_resolver", "Evaluator", "Pusher"}:
        assert states[node] == "CACHED", states
    assert sorted(os.listdir(config.serving_model_dir)) == versions_before
    assert summary(config)["pushed_path"] == first_push
    third = run_pipeline(workspace["env"])  # now the baseline is unchanged too
    assert third.returncode == 0, third.stderr[-3000:]
    states = {node: c["state"] for node, c in latest_components(config).items()}
    for node in COMPONENTS - {"latest_blessed_model_resolver"}:
        assert states[node] == "CACHED", states


def test_tfx_cli_runs_the_same_pipeline(workspace, first_run):
    config = workspace["config"]
    env = {**workspace["env"], "BEAM_HOME": str(workspace["root"] / "beam_home")}
    tfx_cli = os.path.join(os.path.dirname(PYTHON), "tfx")
    runner = os.path.join(REPO_ROOT, "pipeline", "local_runner.py")
    created = run_pipeline(
        env, tfx_cli, "pipeline", "create", "--engine=beam", f"--pipeline_path={runner}"
    )
    assert created.returncode == 0, created.stdout[-2000:] + created.stderr[-3000:]
    run_before = latest_run(_store(config), config.pipeline_name).name
    started = run_pipeline(
        env, tfx_cli, "run", "create", "--engine=beam", f"--pipeline_name={config.pipeline_name}"
    )
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-3000:]
    run_after = latest_run(_store(config), config.pipeline_name).name
    assert run_after != run_before
    assert set(latest_components(config)) == COMPONENTS


def test_impossible_threshold_blocks_the_push(workspace, first_run):
    config = workspace["config"]
    versions_before = sorted(os.listdir(config.serving_model_dir))
    result = run_pipeline({**workspace["env"], "ACCURACY_THRESHOLD": "1.01"})
    assert result.returncode == EXIT_NOT_PUSHED, result.stderr[-3000:]
    assert "NOT PUSHED" in result.stdout
    states = {node: c["state"] for node, c in latest_components(config).items()}
    assert states["Evaluator"] == "COMPLETE" and states["Trainer"] == "CACHED"
    run = summary(config)
    assert run["blessed"] is False and run["pushed"] is False
    assert sorted(os.listdir(config.serving_model_dir)) == versions_before


def test_user_folder_without_weights_file_fails_clearly(workspace):
    env = {
        **workspace["env"],
        "BACKBONE_WEIGHTS": str(workspace["root"] / "missing.h5"),
        "OUTPUT": str(workspace["root"] / "output-missing"),
    }
    result = run_pipeline(env)
    assert result.returncode == 2
    assert "missing.h5" in result.stderr and "no such file" in result.stderr
    shutil.rmtree(env["OUTPUT"], ignore_errors=True)
