"""Transform alone: its graph, applied to a record, equals an independent decode + resize
(Pillow) and EfficientNet-Lite0's scaling of the same image file."""

from __future__ import annotations

import glob
import os

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from PIL import Image

from models import features
from tests.components.conftest import IMAGE_SIZE


def _records(tfrecord_dir: str, split: str) -> list[bytes]:
    paths = sorted(glob.glob(os.path.join(tfrecord_dir, split, "*")))
    return [r.numpy() for r in tf.data.TFRecordDataset(paths, compression_type="GZIP")]


def test_graph_equals_independent_decode_and_resize(dataset, transform_graph):
    output = tft.TFTransformOutput(transform_graph.uri)
    records = _records(dataset.output_dir, "train")
    raw = tf.io.parse_example(records, output.raw_feature_spec())
    transformed = output.transform_features_layer()(raw)
    pixels = transformed[features.TRANSFORMED_IMAGE_KEY].numpy()
    assert pixels.shape == (len(records), IMAGE_SIZE, IMAGE_SIZE, 3)
    np.testing.assert_array_equal(
        transformed[features.LABEL_KEY].numpy().reshape(-1),
        raw[features.LABEL_KEY].numpy().reshape(-1),
    )
    images_dir = os.path.join(os.path.dirname(os.path.abspath(dataset.output_dir)), "images")
    for record, got in zip(records, pixels, strict=True):
        example = tf.train.Example.FromString(record).features.feature
        source = example[features.SOURCE_PATH_KEY].bytes_list.value[0].decode()
        with open(os.path.join(images_dir, source), "rb") as f:
            assert f.read() == example[features.IMAGE_KEY].bytes_list.value[0]
        with Image.open(os.path.join(images_dir, source)) as image:
            rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
        # Antialiased bilinear resize per channel in Pillow's float mode (no rounding).
        resized = np.stack(
            [
                np.asarray(
                    Image.fromarray(rgb[..., c], "F").resize(
                        (IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR
                    )
                )
                for c in range(3)
            ],
            axis=-1,
        )
        expected = (resized - 127.0) / 128.0  # EfficientNet-Lite's scaling (TF's Lite models')
        np.testing.assert_allclose(got, expected, atol=0.01 / 128.0)  # 1/100 grey level
