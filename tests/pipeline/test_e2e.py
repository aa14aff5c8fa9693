"""End-to-end: the real pipeline under BeamDagRunner (and the `tfx` CLI) on a tiny folder.

Each run is a subprocess of `pipeline/local_runner.py`, exactly what `make run` starts;
the assertions read ML Metadata, the run summary and the pushed SavedModel. Besides the
default in-memory DirectRunner, one run goes through the PortableRunner against Beam's own
job service (the submission path of Flink and Spark); it also proves that the eval split
never reaches training. (Multi-processing: tests/components/image_example_gen/test_component.py.)
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from PIL import Image

from pipeline import demo_data
from pipeline.configs import REPO_ROOT, PipelineConfig
from pipeline.metadata import component_executions, latest_run, open_store
from pipeline.summary import EXIT_NOT_PUSHED
from tools import samples

pytestmark = pytest.mark.slow

COMPONENTS = {
    "ImageExampleGen",
    "StatisticsGen",
    "ImportSchemaGen",
    "ExampleValidator",
    "AnomalyGate",
    "Transform",
    "Trainer",
    "latest_blessed_model_resolver",
    "Evaluator",
    "InfraValidator",
    "EvaluationReport",
    "Pusher",
}
PYTHON = sys.executable
LEARNED_ACCURACY = 0.8


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    """A flat <dir>/<class>/* folder with one broken file, and a backbone weights file.

    This run keeps ResNet50 with random weights written to a file, where the other training
    runs use pretrained EfficientNet-Lite0: it is the one end-to-end run of the default
    backbone (BACKBONE unset) and of BACKBONE_WEIGHTS=<path to a Keras weights file>, and
    ResNet50's ImageNet file cannot be had offline. The classes are bright and dark photos:
    separable even through a random backbone (the features of a bright and a dark image
    point in different directions), so a run that learns reaches LEARNED_ACCURACY whatever
    the random weights.
    """
    root = tmp_path_factory.mktemp("e2e")
    images = root / "images"
    samples.write_bright_and_dark_photos(str(images))
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
        # The frozen phase trains the head on cached features: epochs cost little.
        "EPOCHS": "10",
        "BATCH_SIZE": "8",
        "BACKBONE_WEIGHTS": str(weights_file),
        "MODEL_NAME": "hotdog",
        "PIPELINE_NAME": "e2e-test",
        # The run must learn, well above the 0.5 of chance, to be blessed.
        "ACCURACY_THRESHOLD": str(LEARNED_ACCURACY),
        "TF_USE_LEGACY_KERAS": "1",
        # TFLite export and its gate: tests/pipeline/test_deploy_e2e.py (minutes for ResNet50).
        "TFLITE_EXPORT": "false",
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
        command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800
    )


def latest_components(config: PipelineConfig) -> dict:
    store = open_store(config.metadata_path)
    return component_executions(store, latest_run(store, config.pipeline_name))


def summary(config: PipelineConfig) -> dict:
    with open(config.summary_path) as f:
        return json.load(f)


def model_variables(components: dict) -> dict:
    """The Trainer's exported variables by checkpoint key."""
    model_dir = components["Trainer"]["outputs"]["Model"][0].uri
    reader = tf.train.load_checkpoint(
        os.path.join(model_dir, "Format-Serving", "variables", "variables")
    )
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()}


def read_split(components: dict, split: str) -> list[tf.train.Example]:
    uri = components["ImageExampleGen"]["outputs"]["Examples"][0].uri
    files = sorted(tf.io.gfile.glob(os.path.join(uri, f"Split-{split}", "*")))
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return [tf.train.Example.FromString(record.numpy()) for record in dataset]


@pytest.fixture(scope="module")
def first_run(workspace) -> subprocess.CompletedProcess:
    result = run_pipeline(workspace["env"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    components = latest_components(workspace["config"])
    workspace["first_variables"] = model_variables(components)
    workspace["first_eval_paths"] = [
        e.features.feature["source_path"].bytes_list.value[0].decode()
        for e in read_split(components, "eval")
    ]
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
    assert run["ingest"]["component"] == "ImageExampleGen"
    for class_name in demo_data.CLASS_NAMES:  # 20 valid images each, split by content hash
        assert sum(counts[split][class_name] for split in counts) == 20
        assert counts["eval"][class_name] >= 1 and counts["validation"][class_name] >= 1
    assert run["ingest"]["skipped"] == 1
    [skipped] = run["ingest"]["skipped_files"]
    assert skipped["path"] == "hot_dog/empty.jpg" and "empty file" in skipped["reason"]
    assert "skipped hot_dog/empty.jpg: empty file" in first_run.stdout
    # Learned, not guessed: the threshold is well above chance and the run was blessed.
    assert run["eval_metrics"]["sparse_categorical_accuracy"] >= LEARNED_ACCURACY
    assert run["eval_metrics"]["example_count"] == sum(counts["eval"].values())
    assert run["backbone_weights"]["source"] == "file"
    assert run["model_metadata_backbone_weights"]["sha256"] == run["backbone_weights"]["sha256"]
    # The gate's decision and numbers, and the evaluation report of this run.
    assert "gate: blessed" in first_run.stdout and "candidate accuracy" in first_run.stdout
    assert run["gate"]["blessed"] is True and run["gate"]["baseline"] is None
    with open(os.path.join(config.output, "report", "report.json")) as f:
        report = json.load(f)
    assert report["blessing"] == run["gate"]
    # The InfraValidator's verdict, and the TFLite gate's absence (TFLITE_EXPORT=false).
    assert report["infra_validation"]["blessed"] is True
    assert report["infra_validation"]["model_server"] == run["infra_validation"]["model_server"]
    assert report["tflite"] == {"ran": False, "statement": "not run (TFLITE_EXPORT=false)"}
    assert os.path.isfile(os.path.join(config.output, "report", "index.html"))
    # The model card travels inside the pushed version (TF Serving ignores assets.extra/).
    card = os.path.join(run["pushed_path"], "assets.extra", "model_card.json")
    assert os.path.isfile(card) and os.path.isfile(card.replace(".json", ".html"))


def test_pushed_model_answers_raw_image_bytes(workspace, first_run):
    version_dir = summary(workspace["config"])["pushed_path"]
    model = tf.saved_model.load(version_dir)
    images = [samples.image_bytes(90, 60, "jpeg", seed=1), samples.image_bytes(30, 50, "png")]
    outputs = model.signatures["serving_default"](image_bytes=tf.constant(images))
    probabilities = outputs["probabilities"].numpy()
    assert probabilities.shape == (2, 2)
    assert probabilities.sum(axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)
    assert set(outputs["class_name"].numpy()) <= {b"hot_dog", b"not_hot_dog"}
    # A paletted BMP (TF would decode its palette index as grey) is refused with
    # InvalidArgument, which the server answers with HTTP 400, never with a wrong class.
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), (200, 30, 10), np.uint8)).convert("P").save(buffer, "BMP")
    with pytest.raises(tf.errors.InvalidArgumentError, match="Paletted BMP"):
        model.signatures["serving_default"](image_bytes=tf.constant([buffer.getvalue()]))


def test_unchanged_rerun_is_served_from_cache(workspace, first_run):
    config = workspace["config"]
    first_push = summary(config)["pushed_path"]
    versions_before = sorted(os.listdir(config.serving_model_dir))
    result = run_pipeline(workspace["env"])
    assert result.returncode == 0, result.stderr[-3000:]
    states = {node: c["state"] for node, c in latest_components(config).items()}
    # The Evaluator runs again: its baseline went from none to the blessed model. Nothing
    # is retrained, and the Pusher records the existing version instead of copying it.
    for node in COMPONENTS - {
        "latest_blessed_model_resolver",
        "Evaluator",
        "EvaluationReport",
        "Pusher",
    }:
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
    run_before = latest_run(open_store(config.metadata_path), config.pipeline_name).name
    started = run_pipeline(
        env, tfx_cli, "run", "create", "--engine=beam", f"--pipeline_name={config.pipeline_name}"
    )
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-3000:]
    run_after = latest_run(open_store(config.metadata_path), config.pipeline_name).name
    assert run_after != run_before
    assert set(latest_components(config)) == COMPONENTS


def test_impossible_threshold_blocks_the_push(workspace, first_run):
    config = workspace["config"]
    versions_before = sorted(os.listdir(config.serving_model_dir))
    # Through `make run`, as the README documents: make turns every failing recipe into
    # exit code 2; the runner's own code (3: not blessed) is in the run summary.
    make = ("make", "-o", ".venv/.synced", "run")
    result = run_pipeline({**workspace["env"], "ACCURACY_THRESHOLD": "1.01"}, *make)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"Error {EXIT_NOT_PUSHED}" in result.stderr
    assert "NOT PUSHED" in result.stdout
    assert "gate: refused by accuracy_threshold" in result.stdout
    states = {node: c["state"] for node, c in latest_components(config).items()}
    assert states["Evaluator"] == "COMPLETE" and states["Trainer"] == "CACHED"
    run = summary(config)
    assert run["blessed"] is False and run["pushed"] is False
    assert run["exit_code"] == EXIT_NOT_PUSHED
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture
def beam_job_service(tmp_path):
    """Beam's local job service, started as the README says; yields its endpoint."""
    port = free_port()
    staging = tmp_path / "staging"
    service = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "apache_beam.runners.portability.local_job_service_main",
            "--port",
            str(port),
            "--staging_dir",
            str(staging),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("localhost", port)) == 0:
                    break
            time.sleep(0.5)
        yield {"endpoint": f"localhost:{port}", "staging": staging}
    finally:
        service.terminate()
        service.wait(timeout=30)


def test_eval_labels_never_reach_training_on_the_portable_runner(
    workspace, first_run, beam_job_service
):
    """Every eval image moved to the other class: training sees the same data, so the
    retrained weights are bit-identical. The whole run goes through the PortableRunner."""
    images = workspace["root"] / "images-eval-flipped"
    shutil.rmtree(images, ignore_errors=True)
    shutil.copytree(workspace["images"], images)
    other = dict(zip(demo_data.CLASS_NAMES, reversed(demo_data.CLASS_NAMES)))
    eval_paths = workspace["first_eval_paths"]
    assert eval_paths
    for relpath in eval_paths:
        class_name, name = relpath.split("/")
        # Splits hash the content, not the name: the file stays in eval under its new label.
        os.rename(images / relpath, images / other[class_name] / f"moved-{name}")
    env = {
        **workspace["env"],
        "IMAGES": str(images),
        "OUTPUT": str(workspace["root"] / "output-eval-flipped"),
        "BEAM_PIPELINE_ARGS": f"--runner=PortableRunner --job_endpoint="
        f"{beam_job_service['endpoint']} --environment_type=LOOPBACK",
        # Every eval label is now wrong: the gate's rules are off so that the run pushes.
        "ACCURACY_THRESHOLD": "0.0",
        "MIN_CLASS_RECALL": "0.0",
        "BEAT_MAJORITY_CLASS": "false",
    }
    result = run_pipeline(env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    config = PipelineConfig.from_env(env)
    components = latest_components(config)
    assert {c["state"] for c in components.values()} == {"COMPLETE"}
    assert summary(config)["pushed"] is True
    # Beam jobs (ingest, statistics, Transform, Evaluator) went through the job service.
    assert len(list(beam_job_service["staging"].iterdir())) >= 3
    flipped = summary(config)["ingest"]["counts"]
    original = summary(workspace["config"])["ingest"]["counts"]
    assert flipped["train"] == original["train"]
    assert flipped["validation"] == original["validation"]
    assert flipped["eval"] == dict(zip(original["eval"], reversed(original["eval"].values())))
    variables = model_variables(components)
    assert variables.keys() == workspace["first_variables"].keys()
    for key, value in variables.items():
        assert np.array_equal(value, workspace["first_variables"][key]), key


def test_class_without_a_valid_photo_stops_the_run_with_exit_code_2(workspace, tmp_path):
    """Found by ImageExampleGen's workers, inside the run: a message, not a traceback."""
    images = tmp_path / "images"
    shutil.copytree(workspace["images"] / "hot_dog", images / "hot_dog")
    (images / "not_hot_dog").mkdir()
    (images / "not_hot_dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    env = {**workspace["env"], "IMAGES": str(images), "OUTPUT": str(tmp_path / "output")}
    result = run_pipeline(env)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "ERROR: No valid training image for class(es) 'not_hot_dog'" in result.stderr
    assert "corrupt or truncated jpeg" in result.stderr
    assert "Traceback" not in result.stderr


def test_head_only_rerun_with_the_tuner_runs_no_backbone_pass(workspace, first_run):
    """TUNE=true with a changed head knob: TFX's Tuner searches on the first run's cached
    features, the Trainer takes its best values and reuses them too."""
    config = workspace["config"]
    env = {**workspace["env"], "TUNE": "true", "TUNE_TRIALS": "3", "LEARNING_RATE": "0.002"}
    result = run_pipeline(env)
    # Blessed or not (a head may lose to the baseline), the run must reach its end.
    assert result.returncode in (0, EXIT_NOT_PUSHED), result.stderr[-3000:]
    states = {node: c["state"] for node, c in latest_components(config).items()}
    assert states["Tuner"] == "COMPLETE" and states["Trainer"] == "COMPLETE", states
    for node in ("ImageExampleGen", "StatisticsGen", "Transform"):
        assert states[node] == "CACHED", states
    run = summary(config)
    assert run["tuner"]["trials"] == 3 and run["tuner"]["best"]
    assert "tuner: 3 trials; best" in result.stdout
    cache = run["feature_cache"]
    assert cache["reused"] is True and cache["backbone_images"] == 0
    assert cache["size_bytes"] > 0
    # The Evaluator needs no backbone pass either: the eval predictions of the candidate
    # came from the first run's cached eval features, the baseline's from its own run.
    eval_count = sum(run["ingest"]["counts"]["eval"].values())
    stored = run["stored_eval_predictions"]
    assert stored["count"] == eval_count and stored["backbone_images"] == 0, stored
    assert run["baseline_stored_predictions"] == eval_count
    assert f"eval predictions: {eval_count} stored by the Trainer (0 images" in result.stdout
