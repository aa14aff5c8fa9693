"""Crash and re-run at every stage: SIGKILL inside each component, then run again.

One OUTPUT, one chain: run k is started with CRASH_AT naming stage k (models/crash_points.py)
and dies by SIGKILL there; run k+1 starts on the same OUTPUT and dies at the next stage, so
each run is also the re-run of the previous kill; the last run has no CRASH_AT and must push.
A separate, uninterrupted run on a fresh OUTPUT is the reference: the pushed weights must be
bit-identical, and the pushed model must serve every eval photo the reference's answer and
score its eval accuracy. Both runs train pretrained EfficientNet-Lite0 (its packaged
ImageNet weights) on a small subset of the shared Food-101 photos at 64 px, hot dog against
100 other dishes, where the head reaches about 0.74 and the pipeline's own gate must bless
it: a resumed run that trained on the wrong features or evaluated another model shows in
what it serves. (On a random backbone the head learns next to nothing, so "same model" said
little.) The project's components kill themselves inside their work (records written
but not published, the feature pass mid-file, the SavedModel written but not finished, the
report written but not the model card, the version copied but not renamed into place); the
standard TFX components are killed by the launcher hook in crash_hook/sitecustomize.py after
their executor wrote its outputs and before the execution was published.

The reference run's folder holds file names that are not UTF-8 (Latin-1, Shift-JIS, a lone
surrogate) in the train and eval folders: it pushes and its report lists them (issue 25.1).
What ML Metadata records for each killed execution and what each re-run reused are printed
(`pytest -s`) and asserted.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from models import features
from models.features import ASSETS_EXTRA_DIR, TRAINING_METADATA_FILE
from pipeline import demo_data
from pipeline.configs import REPO_ROOT, PipelineConfig
from pipeline.metadata import component_executions, latest_run, open_store
from tests.pipeline import shared_photos

pytestmark = pytest.mark.slow

# In pipeline order; each names a crash_point (the project's code, or the launcher hook).
STAGES = (
    "ImageExampleGen",
    "StatisticsGen",
    "Transform",
    "Trainer:feature_pass",
    "Trainer:export",
    "Evaluator",
    "EvaluationReport",
    "Pusher",
)
IMAGE_SIZE = 64  # the photos' own size
TRAIN_PER_CLASS = 40  # 32 train + 8 validation by content hash
EVAL_PER_CLASS = 40  # test/ is the eval split: 80 photos, one photo is 1.25 points
# Eval accuracy both runs must reach: far above the 0.5 of chance (measured: 0.7375).
LEARNED_ACCURACY = 0.65
# The resumed and the uninterrupted run's served probabilities may differ by this much.
PROBABILITY_TOLERANCE = 1e-6
ODD_NAMES = (b"caf\xe9.jpg", "写真.jpg".encode("shift_jis"), b"lone\xed\xa0\x80.jpg")
CRASH_HOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crash_hook")


def component_of(stage: str) -> str:
    return stage.split(":")[0]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("crash")
    images = os.fsencode(str(root / "images"))
    # Real photos through the real (pretrained) backbone: the pushed model has learned
    # something a resumed run could get wrong, which a random backbone's model has not.
    photos = shared_photos.copy_subset(
        os.fsdecode(images), {"train": TRAIN_PER_CLASS, "test": EVAL_PER_CLASS}
    )
    for split in ("train", "test"):
        for class_name in demo_data.CLASS_NAMES:
            folder = os.path.join(images, split.encode(), class_name.encode())
            some_photo = os.path.join(folder, sorted(os.listdir(folder))[0])
            for raw in ODD_NAMES:  # skipped by ingest and listed in the report
                shutil.copyfile(some_photo, os.path.join(folder, raw))
    env = {
        **os.environ,
        "HOME": str(root / "home"),
        "PYTHONPATH": os.pathsep.join([CRASH_HOOK, REPO_ROOT]),
        "IMAGES": os.fsdecode(images),
        "IMAGE_SIZE": str(IMAGE_SIZE),
        "BACKBONE": "efficientnet_lite0",
        "BACKBONE_WEIGHTS": "imagenet",  # packaged in the lock: no download
        "TFLITE_EXPORT": "false",  # the crash points are the SavedModel path's
        "EPOCHS": "10",  # of the head on cached features: cheap
        "BATCH_SIZE": "8",
        "PIPELINE_NAME": "crash-test",
        # The pipeline's own gate (ACCURACY_THRESHOLD 0.6, MIN_CLASS_RECALL 0.3, beat the
        # majority class) must bless both the uninterrupted and the resumed run.
        "TF_USE_LEGACY_KERAS": "1",
    }
    env.pop("CRASH_AT", None)
    for knob in ("ACCURACY_THRESHOLD", "MIN_CLASS_RECALL", "BEAT_MAJORITY_CLASS"):
        env.pop(knob, None)
    return {"root": root, "env": env, "eval_photos": photos["test"]}


def run_pipeline(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "pipeline", "local_runner.py")],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )


def latest_components(config: PipelineConfig) -> dict:
    store = open_store(config.metadata_path)
    return component_executions(store, latest_run(store, config.pipeline_name))


def pushed_versions(config: PipelineConfig) -> list[str]:
    if not os.path.isdir(config.serving_model_dir):
        return []
    return sorted(os.listdir(config.serving_model_dir))


def served(saved_model_dir: str, paths: list[str]) -> tuple[np.ndarray, list[str]]:
    """The pushed model's answers to photo files through its serving signature, as the
    model server gives them: (probabilities, class names)."""
    signature = tf.saved_model.load(saved_model_dir).signatures[features.SERVING_SIGNATURE]
    probabilities, names = [], []
    for start in range(0, len(paths), 16):
        encoded = [pathlib.Path(p).read_bytes() for p in paths[start : start + 16]]
        out = signature(**{features.SERVING_INPUT_KEY: tf.constant(encoded)})
        probabilities.append(out[features.PROBABILITIES_KEY].numpy())
        names += [name.decode() for name in out[features.CLASS_NAME_KEY].numpy()]
    return np.concatenate(probabilities), names


def summary_of(config: PipelineConfig) -> dict:
    with open(config.summary_path) as f:
        return json.load(f)


def variables_of(saved_model_dir: str) -> dict:
    reader = tf.train.load_checkpoint(os.path.join(saved_model_dir, "variables", "variables"))
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()}


@pytest.fixture(scope="module")
def reference(workspace) -> dict:
    env = {**workspace["env"], "OUTPUT": str(workspace["root"] / "reference")}
    result = run_pipeline(env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    config = PipelineConfig.from_env(env)
    [version] = pushed_versions(config)
    return {"config": config, "model": os.path.join(config.serving_model_dir, version)}


@pytest.fixture(scope="module")
def chain(workspace) -> dict:
    """Kill at each stage in turn on one OUTPUT; then a run without CRASH_AT."""
    env = {**workspace["env"], "OUTPUT": str(workspace["root"] / "crashed")}
    config = PipelineConfig.from_env(env)
    kills, reruns = {}, {}
    previous = None
    for stage in STAGES:
        result = run_pipeline({**env, "CRASH_AT": stage})
        assert result.returncode == -9, (stage, result.stdout[-2000:] + result.stderr[-4000:])
        assert f"CRASH_AT={stage}: killing process" in result.stderr
        components = latest_components(config)
        kills[stage] = {
            "states": {node: c["state"] for node, c in components.items()},
            "serving": pushed_versions(config),
            "feature_cache": sorted(  # files under FeatureCache/<key>/
                name for _, _, names in os.walk(config.feature_cache_dir) for name in names
            ),
        }
        if previous is not None:
            reruns[previous] = kills[stage]["states"]
        previous = stage
    final = run_pipeline(env)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-5000:]
    reruns[previous] = {node: c["state"] for node, c in latest_components(config).items()}
    for stage in STAGES:
        print(f"\nCRASH_AT={stage}: killed execution(s) as ML Metadata records them:")
        killed = {
            n: s for n, s in kills[stage]["states"].items() if s not in ("COMPLETE", "CACHED")
        }
        print(f"  {killed}; serving dir: {kills[stage]['serving']}")
        print(f"  re-run: {reruns[stage]}")
    return {"config": config, "kills": kills, "reruns": reruns, "final": final}


def test_killed_executions_stay_unfinished_in_ml_metadata(chain):
    for stage in STAGES:
        states = chain["kills"][stage]["states"]
        # The killed component's execution was never published: ML Metadata still says it
        # is RUNNING (no process is left to say otherwise); nothing downstream started.
        assert states[component_of(stage)] == "RUNNING", (stage, states)
        assert "Pusher" not in states or stage == "Pusher"


def test_each_rerun_reuses_what_was_complete_and_redoes_the_killed_stage(chain):
    reruns = chain["reruns"]
    for index, stage in enumerate(STAGES):
        states = reruns[stage]
        killed = component_of(stage)
        assert states[killed] in ("COMPLETE", "RUNNING"), (stage, states)  # executed again
        # Every component that finished before the kill is served from TFX's cache, except
        # resolvers (never cached) and an Evaluator whose first blessing was published by
        # the killed run: its baseline input changed from none to that very model, so it
        # evaluates again (and blesses it again: same model).
        finished = {
            n for n, s in chain["kills"][stage]["states"].items() if s in ("COMPLETE", "CACHED")
        }
        first_blessing = chain["kills"][stage]["states"].get("Evaluator") == "COMPLETE"
        for node in finished:
            if "resolver" in node or (node == "Evaluator" and first_blessing):
                continue
            assert states[node] == "CACHED", (stage, node, states)
        if index and stage != "ImageExampleGen":
            assert states["ImageExampleGen"] == "CACHED"


def test_feature_cache_survives_the_kills_and_is_reused(chain):
    config = chain["config"]
    # The feature pass was killed mid-file: only a temporary file, no key, was left.
    left = chain["kills"]["Trainer:feature_pass"]["feature_cache"]
    assert all(".tmp-" in name for name in left), left
    # The export kill came after a complete feature pass: the next Trainer reused it.
    trainer_uri = latest_components(config)["Trainer"]["outputs"]["Model"][0].uri
    with open(os.path.join(trainer_uri, "Format-Serving", TRAINING_METADATA_FILE)) as f:
        metadata = json.load(f)
    assert metadata["feature_cache"]["reused"] is True


def test_final_run_pushes_the_uninterrupted_runs_model(chain, reference):
    config = chain["config"]
    # The Pusher kill left a copied version that was never renamed into place: no version.
    assert not [v for v in chain["kills"]["Pusher"]["serving"] if v.isdigit()]
    versions = pushed_versions(config)
    assert len(versions) == 1 and versions[0].isdigit(), versions  # the leftover is gone
    model = os.path.join(config.serving_model_dir, versions[0])
    crashed, uninterrupted = variables_of(model), variables_of(reference["model"])
    assert crashed.keys() == uninterrupted.keys()
    for key, value in crashed.items():
        assert np.array_equal(value, uninterrupted[key]), key
    # The report and model card were rebuilt whole after the EvaluationReport kill.
    with open(os.path.join(model, ASSETS_EXTRA_DIR, "model_card.json")) as f:
        assert json.load(f)


def test_resumed_model_answers_like_the_uninterrupted_one_and_has_learned(
    workspace, chain, reference
):
    """What a user of the served model would notice: the model pushed after eight kills
    gives every eval photo the uninterrupted run's probabilities (within
    PROBABILITY_TOLERANCE) and scores its eval accuracy, which is far above chance, and
    the pipeline's own gate blessed both."""
    runs = {
        "resumed": summary_of(chain["config"]),
        "uninterrupted": summary_of(reference["config"]),
    }
    for name, run in runs.items():
        assert run["blessed"] is True and run["pushed"] is True, (name, run["gate"])
        assert run["eval_metrics"]["example_count"] == 2 * EVAL_PER_CLASS, name
    accuracy = {n: r["eval_metrics"]["sparse_categorical_accuracy"] for n, r in runs.items()}
    print(f"\neval accuracy: {accuracy}")
    assert accuracy["resumed"] == accuracy["uninterrupted"] >= LEARNED_ACCURACY, accuracy
    paths = [path for path, _ in workspace["eval_photos"]]
    truth = [os.path.basename(os.path.dirname(path)) for path in paths]
    resumed, resumed_names = served(runs["resumed"]["pushed_path"], paths)
    uninterrupted, uninterrupted_names = served(reference["model"], paths)
    np.testing.assert_allclose(resumed, uninterrupted, rtol=0, atol=PROBABILITY_TOLERANCE)
    assert resumed_names == uninterrupted_names
    # The served model is the evaluated one: its answers score the Evaluator's accuracy.
    served_accuracy = float(np.mean([a == b for a, b in zip(resumed_names, truth)]))
    assert served_accuracy == pytest.approx(accuracy["resumed"], abs=1e-6), served_accuracy
    # Not one answer for every photo: both classes are predicted.
    assert set(resumed_names) == set(demo_data.CLASS_NAMES)


def test_reference_run_pushes_and_reports_odd_names(reference):
    summary = summary_of(reference["config"])
    assert summary["pushed"] is True
    text = json.dumps(summary)
    for shown in ("caf\\\\xe9.jpg", "lone\\\\xed\\\\xa0\\\\x80.jpg"):
        assert shown in text, shown


def test_clean_old_deletes_what_the_kills_left_and_nothing_ml_metadata_references(chain):
    """`make clean-old` (tools/clean_old.py) after the chain: the killed executions' output
    folders and the torn feature-cache file go; every live artifact stays."""
    config = chain["config"]
    env = {**os.environ, "OUTPUT": config.output, "PYTHONPATH": REPO_ROOT}
    command = [sys.executable, "-m", "tools.clean_old", "--min-age", "0"]
    listed = subprocess.run(
        [*command, "--dry-run"], env=env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr[-3000:]
    print(listed.stdout)
    store = open_store(config.metadata_path)
    live = {a.uri for a in store.get_artifacts() if a.state == a.LIVE}
    killed_dirs = {
        line.split()[1] for line in listed.stdout.splitlines() if "no live artifact" in line
    }
    # One unpublished output per kill inside a component that has outputs on disk.
    for node in ("ImageExampleGen", "StatisticsGen", "Transform", "Trainer", "Evaluator"):
        assert any(f"/pipeline_root/{node}/" in path for path in killed_dirs), (node, listed)
    assert not killed_dirs & live
    assert ".tmp-" in listed.stdout  # the feature pass killed mid-file
    removed = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True)
    assert removed.returncode == 0, removed.stderr[-3000:]
    assert all(not os.path.exists(path) for path in killed_dirs)
    assert all(os.path.exists(uri) for uri in live)
    again = subprocess.run(
        [*command, "--dry-run"], env=env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert again.stdout.strip().endswith("0 item(s); would free 0 bytes")
