"""Each backbone trains through run_fn and exports a model that answers raw image bytes."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from tfx import v1 as tfx

from models import backbones, features, trainer, training_metadata
from tests.models import training_helpers

IMAGE_SIZE = 32


def _fn_args(tmp_path, backbone: str, **config) -> tfx.components.FnArgs:
    train = training_helpers.write_raw_examples(
        str(tmp_path / "raw" / "train.tfrecord"), *training_helpers.labelled_images(8)
    )
    eval_ = training_helpers.write_raw_examples(
        str(tmp_path / "raw" / "eval.tfrecord"), *training_helpers.labelled_images(4, seed=100)
    )
    transform_dir = str(tmp_path / "transform")
    training_helpers.transform_output(transform_dir, IMAGE_SIZE, backbone)
    return tfx.components.FnArgs(
        train_files=[train],
        eval_files=[eval_],
        transform_output=transform_dir,
        serving_model_dir=str(tmp_path / "serving"),
        model_run_dir=str(tmp_path / "run"),
        data_accessor=training_helpers.data_accessor(),
        custom_config={
            "image_size": IMAGE_SIZE,
            "backbone": backbone,
            "weights": training_helpers.backbone_weights(backbone).as_dict(),
            "class_names": ["warm", "cool"],
            "epochs": 1,
            "batch_size": 4,
            "learning_rate": 1e-3,
            "dropout": 0.2,
            "seed": 1,
            **config,
        },
    )


@pytest.mark.slow  # ~40 s per backbone: a Beam Transform, training and an export each
# EfficientNet-Lite2 shares every line of Lite0's code path (tests/models/
# test_efficientnet_lite.py proves its conversion); leaving it out saves ~40 s of suite.
@pytest.mark.parametrize("backbone", sorted(set(backbones.BACKBONES) - {"efficientnet_lite2"}))
def test_backbone_trains_and_exports_a_model_answering_image_bytes(tmp_path, backbone):
    extra = {"class_weights": True, "class_counts": [4, 4], "label_smoothing": 0.1}
    if backbone == "resnet50":  # one run covers fine-tuning end to end
        extra.update(fine_tune_blocks=1, fine_tune_epochs=1)
    fn_args = _fn_args(tmp_path, backbone, **extra)
    trainer.run_fn(fn_args)

    images, _ = training_helpers.labelled_images(3, seed=7)
    probabilities = training_helpers.serve(fn_args.serving_model_dir, images)
    assert probabilities.shape == (3, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    metadata = training_metadata.read_training_metadata(fn_args.serving_model_dir)
    assert metadata["backbone"] == backbone and metadata["class_names"] == ["warm", "cool"]
    # EfficientNet-Lite trains on its packaged ImageNet weights, and the model says so.
    packaged = backbones.get_backbone(backbone).packaged_weights
    assert metadata["backbone_weights"]["pretrained"] is packaged
    assert bool(metadata["backbone_weights"]["package"]) is packaged
    assert metadata["training_options"]["cache_features"] is True
    assert len(metadata["history"]["loss"]) == (2 if backbone == "resnet50" else 1)
    assert "cache_images_per_s" in metadata["history"]
    # Spill files are scratch and do not outlive training.
    assert not [f for _, _, fs in os.walk(fn_args.model_run_dir) for f in fs if "cache" in f]


@pytest.mark.parametrize(
    ("backbone", "low", "high"),
    [
        ("resnet50", -124, 152),
        ("mobilenet_v2", -1, 1),
        ("efficientnet_b0", 0, 255),
        ("efficientnet_lite0", -127 / 128, 1),  # (x - 127) / 128
        ("efficientnet_lite2", -127 / 128, 1),
    ],
)
def test_transform_applies_the_chosen_backbones_preprocessing(tmp_path, backbone, low, high):
    output = training_helpers.transform_output(str(tmp_path), IMAGE_SIZE, backbone)
    images, _ = training_helpers.labelled_images(2)
    pixels = output.transform_features_layer()({features.IMAGE_KEY: tf.constant(images)})[
        features.TRANSFORMED_IMAGE_KEY
    ].numpy()
    assert pixels.shape == (2, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert low - 1e-3 <= pixels.min() and pixels.max() <= high + 1e-3
    assert pixels.min() < 0 if low < 0 else pixels.min() >= 0


def test_efficientnet_has_the_input_scaling_keras_adds_for_imagenet_weights():
    """Keras builds EfficientNet's stem as Rescaling(1/255) -> Normalization -> multiply by
    1/sqrt(ImageNet stddev) when weights="imagenet" (tf_keras/src/applications/
    efficientnet.py: the ImageNet file's normalization holds the variance, and the original
    network divides by it once more); weights=None leaves the multiply out, which feeds
    the pretrained layers wrongly scaled inputs."""
    network = backbones.get_backbone("efficientnet_b0").build(IMAGE_SIZE)
    layers = [layer for layer in network.layers]
    names = [layer.name for layer in layers]
    normalization = names.index(
        next(layer.name for layer in layers if isinstance(layer, tf_keras.layers.Normalization))
    )
    stem = names.index("stem_conv_pad")
    scaling = layers[normalization + 1 : stem]
    assert [type(layer).__name__ for layer in scaling] == ["TFOpLambda"]
    assert scaling[0].get_config()["function"] == "math.multiply"

    # Numerically: the stem feeds stem_conv_pad (x/255 - mean) / sqrt(var) / sqrt(stddev).
    mean, variance = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]) ** 2
    layers[normalization].set_weights([mean, variance] + layers[normalization].get_weights()[2:])
    stem_input = tf_keras.Model(network.input, layers[stem].input)
    pixels = np.random.default_rng(0).uniform(0, 255, (1, IMAGE_SIZE, IMAGE_SIZE, 3))
    expected = (pixels / 255 - mean) / np.sqrt(variance) / np.sqrt([0.229, 0.224, 0.225])
    np.testing.assert_allclose(stem_input(pixels).numpy(), expected, rtol=1e-4, atol=1e-4)


def test_efficientnet_weights_files_round_trip(tmp_path):
    """The built network (with its ImageNet stem) loads a weights file of its own shape."""
    row = backbones.get_backbone("efficientnet_b0")
    source = row.build(IMAGE_SIZE)
    path = str(tmp_path / "efficientnet.h5")
    source.save_weights(path)
    target = row.build(IMAGE_SIZE)
    target.load_weights(path)
    for want, got in zip(source.get_weights(), target.get_weights(), strict=True):
        np.testing.assert_array_equal(want, got)
