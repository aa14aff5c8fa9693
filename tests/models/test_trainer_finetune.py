"""Fine-tuning unfreezes exactly the chosen top blocks; batch norm stays frozen."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from models import backbones, model, trainer
from models.feature_cache import FeatureSource
from tests.models import training_helpers

IMAGE_SIZE = 32


@pytest.fixture(scope="module")
def resnet():
    """Random ResNet50, not pretrained Lite0: these tests are about ResNet50's own layer
    names and fine-tuning units (its ImageNet file cannot be had offline); no accuracy or
    prediction is asserted."""
    tf_keras.utils.set_random_seed(0)
    return model.build_backbone("resnet50", IMAGE_SIZE, training_helpers.random_weights("resnet50"))


def _layers(backbone, *prefixes):
    return [layer for layer in backbone.layers if layer.name.startswith(prefixes)]


def _is_bn(layer) -> bool:
    return isinstance(layer, tf_keras.layers.BatchNormalization)


def _tiny_dataset(n: int = 8):
    rng = np.random.default_rng(0)
    images = rng.normal(0, 50, (n, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    labels = np.arange(n) % 2
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)


def test_every_backbone_row_has_fine_tuning_units_matching_its_layers():
    for row in backbones.BACKBONES.values():
        network = row.build(IMAGE_SIZE)
        assert row.block_prefixes, row.name
        matched = set()
        for unit in row.block_prefixes:
            layers = {layer.name for layer in _layers(network, *unit)}
            assert layers, (row.name, unit)
            assert not layers & matched, (row.name, unit)  # units do not overlap
            matched |= layers
        assert network.output_shape[-1] == row.feature_dim


def test_unfreezing_the_top_stage_trains_it_and_nothing_else(resnet):
    head = model.build_head(2048, 2, 0.0, 0)
    network = model.build_model(resnet, head, IMAGE_SIZE)
    unfrozen = model.unfreeze_top_blocks(resnet, "resnet50", 1)

    conv5 = _layers(resnet, "conv5_")
    expected = {layer.name for layer in conv5 if layer.weights and not _is_bn(layer)}
    assert set(unfrozen) == expected and expected
    assert all(not layer.trainable for layer in conv5 if _is_bn(layer))
    backbone_trainable = {v.name.split("/")[0] for v in resnet.trainable_weights}
    assert backbone_trainable == expected
    assert {v.name for v in network.trainable_weights} == {
        v.name for v in resnet.trainable_weights
    } | {v.name for v in head.trainable_weights}

    def snapshot(layers):
        return {v.name: v.numpy().copy() for layer in layers for v in layer.weights}

    conv5_kernels = snapshot([layer for layer in conv5 if not _is_bn(layer)])
    conv4 = snapshot(_layers(resnet, "conv4_"))
    batch_norm = snapshot([layer for layer in resnet.layers if _is_bn(layer)])

    options = trainer.TrainingOptions(batch_size=4, shuffle=False)
    trainer.train_network(
        network,
        _tiny_dataset(),
        _tiny_dataset(),
        options,
        learning_rate=1e-2,
        initial_epoch=0,
        epochs=1,
    )

    after = {v.name: v.numpy() for v in resnet.weights}
    changed = [name for name, before in conv5_kernels.items() if "kernel" in name]
    assert changed and all(not np.array_equal(after[n], conv5_kernels[n]) for n in changed)
    assert all(np.array_equal(after[n], value) for n, value in conv4.items())
    # Moving mean/variance (and gamma/beta) of every batch-norm layer are untouched.
    assert all(np.array_equal(after[n], value) for n, value in batch_norm.items())


def test_two_blocks_add_the_next_stage_and_bad_counts_are_rejected(resnet):
    unfrozen = model.unfreeze_top_blocks(resnet, "resnet50", 2)
    assert {name.split("_")[0] for name in unfrozen} == {"conv4", "conv5"}
    assert not model.unfreeze_top_blocks(resnet, "resnet50", 0)
    assert not resnet.trainable_weights
    with pytest.raises(ValueError, match="4 fine-tuning blocks"):
        model.unfreeze_top_blocks(resnet, "resnet50", 5)
    resnet.trainable = False


def test_fine_tuning_phase_continues_the_epoch_count(resnet, tmp_path):
    resnet.trainable = False
    head = model.build_head(2048, 2, 0.0, 0)
    options = trainer.TrainingOptions(
        epochs=2, batch_size=4, fine_tune_blocks=1, fine_tune_epochs=1, shuffle=False
    )
    spec = model.BackboneSpec("resnet50", training_helpers.random_weights("resnet50"), IMAGE_SIZE)
    source = FeatureSource(spec, resnet, options, str(tmp_path))
    network, history = trainer.train(source, head, _tiny_dataset(), _tiny_dataset(), options)
    assert len(history["loss"]) == 3  # 2 frozen (cached) + 1 fine-tuning
    assert "fine_tune_seconds" in history and "cache_images_per_s" in history
    assert {v.name.split("/")[0] for v in resnet.trainable_weights} <= {
        layer.name for layer in _layers(resnet, "conv5_")
    }
    assert network.predict(next(iter(_tiny_dataset()))[0], verbose=0).shape == (4, 2)
    resnet.trainable = False
