"""preprocessing_fn through tf.Transform's Beam implementation, on real encoded bytes."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform.beam as tft_beam
import tf_keras
from tensorflow_transform.tf_metadata import dataset_metadata

from models import features, preprocessing
from tools import samples

IMAGE_SIZE = 32


@pytest.fixture(scope="module")
def transformed():
    """(input rows, transformed rows) for JPEG and PNG of different sizes."""
    pixels = [
        samples.image_array(120, 80, seed=1),
        samples.image_array(33, 47, seed=2),
        samples.image_array(32, 32, seed=3),
    ]
    rows = [
        samples.raw_row(samples.encode(pixels[0], "jpeg"), label=0),
        samples.raw_row(samples.encode(pixels[1], "png"), label=1),
        samples.raw_row(samples.encode(pixels[2], "png"), label=1),
    ]
    metadata = dataset_metadata.DatasetMetadata(samples.raw_schema())
    config = {"image_size": IMAGE_SIZE, "backbone": "resnet50"}
    with tft_beam.Context(temp_dir=tempfile.mkdtemp()):
        (output, _), _ = (rows, metadata) | tft_beam.AnalyzeAndTransformDataset(
            lambda inputs: preprocessing.preprocessing_fn(inputs, config)
        )
    return rows, output


def expected(encoded: bytes) -> np.ndarray:
    """What Keras' own preprocess_input gives for the same decoded, resized pixels."""
    pixels = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    resized = tf.image.resize(pixels, [IMAGE_SIZE, IMAGE_SIZE], antialias=True)
    return tf_keras.applications.resnet50.preprocess_input(resized.numpy())


def test_output_shape_dtype_and_label(transformed):
    rows, output = transformed
    assert len(output) == 3
    for row, out in zip(rows, output):
        image = np.asarray(out[features.TRANSFORMED_IMAGE_KEY])
        assert image.dtype == np.float32
        assert image.reshape(IMAGE_SIZE, IMAGE_SIZE, 3).shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
        assert out[features.LABEL_KEY] == row[features.LABEL_KEY]


def test_values_match_keras_preprocess_input(transformed):
    rows, output = transformed
    for row, out in zip(rows, output):
        image = np.asarray(out[features.TRANSFORMED_IMAGE_KEY]).reshape(IMAGE_SIZE, IMAGE_SIZE, 3)
        np.testing.assert_allclose(image, expected(row[features.IMAGE_KEY]), atol=1e-3)
        # caffe mode: BGR minus the ImageNet mean, so values lie in [-124, 152]
        assert image.min() >= -123.68 - 1e-3 and image.max() <= 255 - 103.939 + 1e-3


def test_small_photos_skip_the_antialiasing_kernel_with_the_same_pixels():
    """A photo no larger than the target (64 px photos at 224) is resized without
    ScaleAndTranslate, twice the cost of bilinear, which only changes a downscaled side."""
    small = samples.encode(samples.image_array(20, 12, seed=5), "png")
    large = samples.encode(samples.image_array(50, 20, seed=6), "png")  # one side larger
    for encoded in (small, large):
        out = preprocessing.decode_and_resize(tf.constant([encoded]), IMAGE_SIZE)[0]
        pixels = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        reference = tf.image.resize(pixels, [IMAGE_SIZE, IMAGE_SIZE], antialias=True)
        np.testing.assert_allclose(out.numpy(), reference.numpy(), atol=1e-3)

    # The graph chooses per image: the antialiasing kernel behind the "larger" branch only.
    graph = (
        tf.function(lambda b: preprocessing.decode_and_resize(b, IMAGE_SIZE))
        .get_concrete_function(tf.TensorSpec([None], tf.string))
        .graph.as_graph_def()
    )
    branches = {
        function.signature.name: {node.op for node in function.node_def}
        for function in graph.library.function
    }
    with_antialias = [ops for ops in branches.values() if "ScaleAndTranslate" in ops]
    plain = [ops for ops in branches.values() if "ResizeBilinear" in ops]
    assert with_antialias and plain
    assert not any("ResizeBilinear" in ops for ops in with_antialias)


def test_grey_and_rgba_images_become_three_channels():
    grey = samples.encode(samples.image_array(20, 20)[:, :, 0], "png")
    rgba = samples.encode(
        np.dstack([samples.image_array(20, 20), np.full((20, 20), 9, np.uint8)]), "png"
    )
    out = preprocessing.decode_and_resize(tf.constant([grey, rgba]), 16)
    assert out.shape == (2, 16, 16, 3)


def test_each_backbone_has_its_own_input_scaling():
    encoded = tf.constant([samples.image_bytes(40, 40, seed=4)])
    resnet = preprocessing.preprocess_images(encoded, 32, "resnet50").numpy()
    mobilenet = preprocessing.preprocess_images(encoded, 32, "mobilenet_v2").numpy()
    assert mobilenet.min() >= -1.0 and mobilenet.max() <= 1.0
    assert resnet.max() > 1.0
