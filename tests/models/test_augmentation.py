"""Augmentation changes training images only: never eval data, never the serving graph."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tensorflow as tf

from models import augmentation, backbones, export, model, trainer
from models.feature_cache import FeatureSource
from tests.models import training_helpers

IMAGE_SIZE = 32
# Pretrained: the served answers must not change from call to call, which a random
# backbone's (random MobileNetV2 gives every image the same features) could not show.
BACKBONE = training_helpers.PRETRAINED
# Ops that only the augmentation layers put in a graph.
AUGMENTATION_OPS = ("ImageProjectiveTransform", "RandomUniform", "StatelessRandom", "RngRead")


def test_spec_parsing():
    assert augmentation.parse("") == [] and augmentation.parse("none") == []
    assert augmentation.parse(" Flip, zoom ") == ["flip", "zoom"]
    assert augmentation.build("", 0) is None
    with pytest.raises(ValueError, match="blur"):
        augmentation.parse("flip,blur")


def test_augmentation_changes_preprocessed_images_without_clipping_their_range():
    augmenter = augmentation.build("flip,rotation,zoom,contrast", seed=1)
    assert [layer.name for layer in augmenter.layers] == [
        "aug_flip",
        "aug_rotation",
        "aug_zoom",
        "aug_contrast",
    ]
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(-50, 40, (4, IMAGE_SIZE, IMAGE_SIZE, 3)), tf.float32)
    out = augmenter(images, training=True).numpy()
    assert out.shape == images.shape and not np.allclose(out, images.numpy())
    assert out.min() < -100  # mean-subtracted (ResNet-style) values survive: no [0, 255] clip
    contrast = augmentation.ChannelContrast(0.5, seed=0)
    scaled = contrast(images).numpy()
    np.testing.assert_allclose(
        scaled.mean(axis=(1, 2)), images.numpy().mean(axis=(1, 2)), rtol=1e-3, atol=1e-2
    )
    np.testing.assert_array_equal(contrast(images, training=False), images)


def _graph_ops(export_dir: str) -> set[str]:
    saved_model = tf.__internal__.saved_model.parse_saved_model(export_dir)
    ops = set()
    for meta_graph in saved_model.meta_graphs:
        ops |= {node.op for node in meta_graph.graph_def.node}
        for function in meta_graph.graph_def.library.function:
            ops |= {node.op for node in function.node_def}
    return ops


def test_training_with_augmentation_skips_the_cache_and_exports_no_augmentation(tmp_path, caplog):
    transform_output = training_helpers.transform_output(
        str(tmp_path / "tft"), IMAGE_SIZE, BACKBONE
    )
    train_ds, eval_ds = training_helpers.datasets(str(tmp_path), transform_output, 8, 4, 4)
    backbone = model.build_backbone(
        BACKBONE, IMAGE_SIZE, training_helpers.backbone_weights(BACKBONE)
    )
    head = model.build_head(backbones.get_backbone(BACKBONE).feature_dim, 2, 0.0, 0)
    options = trainer.TrainingOptions(
        epochs=1, batch_size=4, augmentation="flip,rotation,zoom,contrast"
    )
    with caplog.at_level(logging.INFO):
        spec = model.BackboneSpec(BACKBONE, training_helpers.backbone_weights(BACKBONE), IMAGE_SIZE)
        source = FeatureSource(spec, backbone, options, str(tmp_path / "w"))
        network, history = trainer.train(source, head, train_ds, eval_ds, options)
    assert "Feature caching skipped: augmentation" in caplog.text
    assert "cache_images_per_s" not in history and len(history["loss"]) == 1
    assert not [layer for layer in network.layers if layer.name.startswith("aug")]

    export_dir = str(tmp_path / "export")
    export.export_serving_model(
        network, transform_output.transform_features_layer(), ["a", "b"], {}, export_dir
    )
    ops = _graph_ops(export_dir)
    assert "Conv2D" in ops  # sanity: the graph was read
    assert not [op for op in ops if op.startswith(AUGMENTATION_OPS)]
    images, _ = training_helpers.labelled_images(4, seed=9)
    first = training_helpers.serve(export_dir, images)
    np.testing.assert_array_equal(first, training_helpers.serve(export_dir, images))
