"""The exported SavedModel: raw bytes in, probabilities and class names out, self-contained."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from models import features, training_metadata
from models.examples import make_example
from tools import samples

CLASS_NAMES = ("cat", "dog", "hot_dog")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> str:
    return samples.export_untrained_model(
        str(tmp_path_factory.mktemp("export") / "model" / "1"), CLASS_NAMES
    )


def example(encoded: bytes) -> bytes:
    return make_example({features.IMAGE_KEY: encoded}).SerializeToString()


def test_serving_default_takes_raw_image_bytes(export_dir):
    model = tf.saved_model.load(export_dir)
    signature = model.signatures[features.SERVING_SIGNATURE]
    [input_spec] = signature.structured_input_signature[1].values()
    assert input_spec.name == features.SERVING_INPUT_KEY and input_spec.dtype == tf.string
    images = [
        samples.image_bytes(64, 48, fmt, seed=i) for i, fmt in enumerate(["jpeg", "png", "bmp"])
    ]
    out = signature(image_bytes=tf.constant(images))
    probabilities = out[features.PROBABILITIES_KEY].numpy()
    assert probabilities.shape == (3, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    indices = out[features.CLASS_INDEX_KEY].numpy()
    np.testing.assert_array_equal(indices, probabilities.argmax(axis=1))
    names = [n.decode() for n in out[features.CLASS_NAME_KEY].numpy()]
    assert names == [CLASS_NAMES[i] for i in indices]


def test_tf_example_and_classify_signatures_agree_with_bytes(export_dir):
    model = tf.saved_model.load(export_dir)
    encoded = samples.image_bytes(50, 50, seed=9)
    by_bytes = model.signatures[features.SERVING_SIGNATURE](image_bytes=tf.constant([encoded]))
    by_example = model.signatures[features.TF_EXAMPLE_SIGNATURE](
        examples=tf.constant([example(encoded)])
    )
    classified = model.signatures[features.CLASSIFY_SIGNATURE](
        inputs=tf.constant([example(encoded)])
    )
    expected = by_bytes[features.PROBABILITIES_KEY].numpy()
    np.testing.assert_allclose(by_example[features.PROBABILITIES_KEY].numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(
        classified[tf.saved_model.CLASSIFY_OUTPUT_SCORES].numpy(), expected, atol=1e-6
    )
    assert [
        c.decode() for c in classified[tf.saved_model.CLASSIFY_OUTPUT_CLASSES].numpy()[0]
    ] == list(CLASS_NAMES)


def test_classify_signature_is_marked_for_tf_serving(export_dir):
    saved_model = tf.__internal__.saved_model.parse_saved_model(export_dir)
    signatures = saved_model.meta_graphs[0].signature_def
    assert signatures[features.CLASSIFY_SIGNATURE].method_name == "tensorflow/serving/classify"
    assert signatures[features.SERVING_SIGNATURE].method_name == "tensorflow/serving/predict"


def test_training_metadata_travels_with_the_model(export_dir):
    metadata = training_metadata.read_training_metadata(export_dir)
    assert metadata["class_names"] == list(CLASS_NAMES)
    assert metadata["backbone_weights"]["source"] == "random"
    assert "NOT TRANSFER LEARNING" in metadata["backbone_weights"]["warning"]


def test_loads_in_a_fresh_process_without_project_code(export_dir, tmp_path):
    script = (
        "import base64, json, sys, tensorflow as tf\n"
        "m = tf.saved_model.load(sys.argv[1])\n"
        "image = tf.constant([base64.b64decode(sys.argv[2])])\n"
        "out = m.signatures['serving_default'](image_bytes=image)\n"
        "print(json.dumps({k: v.numpy().tolist() for k, v in out.items()}, default=bytes.decode))\n"
    )
    import base64

    encoded = base64.b64encode(samples.image_bytes(40, 40)).decode()
    env = {k: v for k, v in os.environ.items() if k not in ("TF_USE_LEGACY_KERAS", "PYTHONPATH")}
    result = subprocess.run(
        [sys.executable, "-I", "-c", script, export_dir, encoded],  # -I: no cwd, no user site
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["class_name"][0] in CLASS_NAMES
    assert sum(out["probabilities"][0]) == pytest.approx(1.0, abs=1e-5)
