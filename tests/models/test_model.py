"""The network: the backbone stays frozen (weights and batch-norm statistics), the head learns."""

from __future__ import annotations

import numpy as np
import tf_keras

from models import backbones, model, weights

IMAGE_SIZE = 32


def build(backbone_name: str = "resnet50", num_classes: int = 2):
    # Random weights: which weights change in a training step, and the batch-norm
    # statistics, are mechanics of the default backbone that no real feature changes.
    record = weights.resolve_weights(weights.RANDOM, backbones.get_backbone(backbone_name))
    backbone = model.build_backbone(backbone_name, IMAGE_SIZE, record)
    head = model.build_head(
        backbones.get_backbone(backbone_name).feature_dim, num_classes, dropout=0.2, seed=1
    )
    network = model.build_model(backbone, head, IMAGE_SIZE)
    model.compile_model(network, learning_rate=1e-2)
    return backbone, head, network


def test_training_step_changes_only_the_head():
    backbone, head, network = build()
    bn_layers = [
        layer for layer in backbone.layers if isinstance(layer, tf_keras.layers.BatchNormalization)
    ]
    assert bn_layers
    backbone_before = [w.copy() for w in backbone.get_weights()]  # includes BN moving stats
    head_before = [w.copy() for w in head.get_weights()]

    rng = np.random.default_rng(0)
    images = rng.normal(0, 50, size=(8, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    labels = np.array([0, 1] * 4)
    network.fit(images, labels, epochs=1, batch_size=8, verbose=0)

    for before, after in zip(backbone_before, backbone.get_weights()):
        np.testing.assert_array_equal(before, after)  # bit-identical, BN statistics included
    assert any(not np.array_equal(b, a) for b, a in zip(head_before, head.get_weights()))
    assert not backbone.trainable
    assert {w.name for w in network.trainable_weights} == {w.name for w in head.trainable_weights}


def test_outputs_are_class_probabilities():
    _, _, network = build(num_classes=3)
    images = np.random.default_rng(1).normal(0, 50, (4, IMAGE_SIZE, IMAGE_SIZE, 3))
    probabilities = network.predict(images.astype(np.float32), verbose=0)
    assert probabilities.shape == (4, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_backbone_runs_in_inference_mode():
    """Same input, training=True on the outer model: BN must still use moving statistics."""
    _, _, network = build()
    images = (
        np.random.default_rng(2).normal(0, 50, (4, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    )
    network.get_layer("head").get_layer("head_dropout").rate = 0.0
    np.testing.assert_allclose(
        network(images, training=True).numpy(), network(images, training=False).numpy(), atol=1e-5
    )
