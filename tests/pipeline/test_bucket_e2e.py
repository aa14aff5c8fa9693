"""End-to-end: a whole run with its photos, artifacts and serving directory in a bucket.

IMAGES, PIPELINE_ROOT and SERVING_DIR are `gs://` URLs on a GCS emulator (tests/pipeline/
gcs_emulator.py) that TensorFlow's own gs:// file system, Beam's and google-cloud-storage
reach, so every component (Beam stages included) reads and writes through the same code
paths as on Vertex. Only what belongs to the launching machine is local: OUTPUT (the SQLite
ML Metadata, the run summary, the published report) and the packaged backbone weights.

Every process of the run carries an audit hook (tests/pipeline/no_local_io_hook/) that
raises on a local file call (`open`, `os.*`, `shutil.*`) on a path with a scheme, so a stray
`os.makedirs("gs://...")` fails the run instead of quietly creating `./gs:/...`.

The InfraValidator runs: TFX copies the candidate into its temporary folder, in the bucket,
and the project's model server (no TF Serving binary is here) gets a local copy of it. Off in
this run: TFLITE_EXPORT (minutes of conversion; tests/pipeline/test_deploy_e2e.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from pipeline import demo_data
from pipeline.configs import REPO_ROOT, PipelineConfig
from pipeline.metadata import component_executions, latest_run, open_store
from tests.components.no_local_io import stray_folders
from tests.pipeline.gcs_emulator import gcs_emulator
from tools import samples

pytestmark = pytest.mark.slow

BUCKET = "tfx-image-e2e"
COMPONENTS = {
    "ImageExampleGen",
    "StatisticsGen",
    "ImportSchemaGen",
    "ExampleValidator",
    "AnomalyGate",
    "Transform",
    "Trainer",
    "latest_blessed_model_resolver",
    "InfraValidator",
    "Evaluator",
    "EvaluationReport",
    "Pusher",
}
HOOK_DIR = os.path.join(os.path.dirname(__file__), "no_local_io_hook")
IMAGES_PER_CLASS = 16


@pytest.fixture(scope="module")
def bucket_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bucket")
    with gcs_emulator(str(root), (BUCKET,)) as emulator_env:
        client = storage.Client(
            project="emulator",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": emulator_env["STORAGE_EMULATOR_HOST"]},
        )
        bucket = client.bucket(BUCKET)
        # Bright and dark photos: separable through any backbone, so the run is blessed.
        for class_name, colour in zip(demo_data.CLASS_NAMES, ((235, 225, 205), (25, 30, 45))):
            for index in range(IMAGES_PER_CLASS):
                image = samples.image_bytes(40, 48, "jpeg", seed=index, color=colour)
                bucket.blob(f"photos/{class_name}/{index:03d}.jpg").upload_from_string(image)
        cwd = root / "cwd"  # where a stray ./gs:/ folder would appear
        cwd.mkdir()
        env = {
            **os.environ,
            **emulator_env,
            "PYTHONPATH": os.pathsep.join([HOOK_DIR, REPO_ROOT]),
            "HOME": str(root / "home"),
            "IMAGES": f"gs://{BUCKET}/photos",
            "PIPELINE_ROOT": f"gs://{BUCKET}/root",
            "SERVING_DIR": f"gs://{BUCKET}/serving",
            "OUTPUT": str(root / "output"),
            "BACKBONE": "efficientnet_lite0",  # ImageNet weights from its locked package
            "IMAGE_SIZE": "32",
            "EPOCHS": "5",
            "BATCH_SIZE": "8",
            "MODEL_NAME": "hotdog",
            "PIPELINE_NAME": "bucket-e2e",
            "TFLITE_EXPORT": "false",
            "TF_USE_LEGACY_KERAS": "1",
        }
        result = subprocess.run(
            [sys.executable, os.path.join(REPO_ROOT, "pipeline", "local_runner.py")],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=900,
        )
        objects = sorted(blob.name for blob in client.list_blobs(BUCKET))
        yield {
            "root": root,
            "env": env,
            "result": result,
            "config": PipelineConfig.from_env(env),
            "objects": objects,
            "client": client,
            "bucket": bucket,
        }


def _summary(run: dict) -> dict:
    with open(run["config"].summary_path) as f:
        return json.load(f)


def test_the_run_pushes_into_the_bucket(bucket_run):
    result = bucket_run["result"]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    summary = _summary(bucket_run)
    assert summary["pushed"] is True
    # Validated by the project's server, from a local copy of the candidate in the bucket.
    assert summary["infra_validation"] == {
        "blessed": True,
        "model_server": "project",
        "failure": None,
    }
    assert summary["pushed_path"].startswith(f"gs://{BUCKET}/serving/hotdog/")
    version = summary["pushed_path"].rsplit("/", 1)[1]
    assert version.isdigit()
    pushed = {
        name.split(f"serving/hotdog/{version}/", 1)[1]
        for name in bucket_run["objects"]
        if name.startswith(f"serving/hotdog/{version}/")
    }
    assert {"saved_model.pb", "variables/variables.index"} <= pushed
    assert "assets.extra/model_card.json" in pushed
    # Nothing but the version itself: no temporary folder left beside it ("" is the
    # base directory's own folder marker, as TF's gfile.makedirs writes it).
    children = {
        name.split("/")[2] for name in bucket_run["objects"] if name.startswith("serving/hotdog/")
    }
    assert children - {""} == {version}


def test_every_component_ran_and_every_artifact_is_in_the_bucket(bucket_run):
    config = bucket_run["config"]
    store = open_store(config.metadata_path)  # local SQLite, on the launching machine
    components = component_executions(store, latest_run(store, config.pipeline_name))
    assert set(components) == COMPONENTS
    assert {c["state"] for c in components.values()} == {"COMPLETE"}
    uris = [
        artifact.uri
        for component in components.values()
        for artifacts in component["outputs"].values()
        for artifact in artifacts
    ]
    assert uris and all(uri.startswith(f"gs://{BUCKET}/root/") for uri in uris), uris
    assert any(name.startswith("root/FeatureCache/") for name in bucket_run["objects"])


def test_only_the_launching_machines_files_are_local(bucket_run):
    config = bucket_run["config"]
    local = {
        os.path.relpath(os.path.join(folder, name), config.output)
        for folder, _, names in os.walk(config.output)
        for name in names
    }
    assert {"metadata.sqlite", "run_summary.json", "report/index.html"} <= local
    assert not any(path.startswith(("pipeline_root", "serving")) for path in local), local
    # A local call on a URI would have raised in the run (the hook) or left a gs: folder.
    assert stray_folders(str(bucket_run["root"])) == []
    assert not {"gs:", "ram:"} & set(os.listdir(REPO_ROOT))


def test_the_audit_hook_is_armed_in_the_runs_processes(bucket_run):
    """The run's environment makes a stray local call fail: without this, the run above
    could pass with the hook silently missing."""
    probe = subprocess.run(
        [sys.executable, "-c", "import os; os.makedirs('gs://b/x')"],
        env=bucket_run["env"],
        cwd=bucket_run["root"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode != 0 and "LocalIOOnURI" in probe.stderr, probe.stderr
    assert not os.path.exists(bucket_run["root"] / "gs:")
