"""Proof that the EfficientNet-Lite conversion is right, and that each tempting mistake fails.

Two kinds of evidence:
- Golden logits (golden/efficientnet_lite_golden.json) from a reference forward pass run once
  OUTSIDE the project, by golden/make_efficientnet_lite_golden.py: torch could not run on our
  machines (PyPI's Linux torch wheel needs gigabytes of CUDA libraries even for the CPU), so
  the reference is an independent numpy (float64) forward pass written from the reference
  implementation's source, EfficientNet-Lite-PyTorch 0.1.0 (the lukemelas fork that produced
  these checkpoints), with its own checkpoint parser and PyTorch's NCHW/OIHW layouts as stored.
  Inputs: centre crops of scikit-image's lossless chelsea.png and coffee.png, and a noise
  image from numpy.random.default_rng(0) (the JSON's "inputs" says the same).
- Photos with a definite ImageNet class shipped inside packages: top-1 and top-5 classes.

Each mistake (symmetric padding, batch-norm epsilon 1e-5, ImageNet mean/std input, a
depthwise kernel with its spatial axes swapped) is built as a mutant and must fail the checks.
"""

from __future__ import annotations

import functools
import json
import os

import matplotlib.cbook
import numpy as np
import pytest
import skimage.data
import sklearn.datasets
import tensorflow as tf
from PIL import Image

from models import backbones, efficientnet_lite, torch_checkpoint, weights

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "efficientnet_lite_golden.json")
# float32 against the float64 reference: observed max difference ~1e-4 on logits of ~10.
LOGIT_TOLERANCE = 0.02

# ImageNet class indices.
TABBY, TIGER_CAT, EGYPTIAN_CAT = 281, 282, 285
ESPRESSO, CUP = 967, 968
MILITARY_UNIFORM = 652
DAISY = 985
CATS = {TABBY, TIGER_CAT, EGYPTIAN_CAT}


def _imagenet_means_stds(pixels):
    """The ImageNet mean/std normalisation (wrong for Lite: its inputs are (x - 127) / 128)."""
    mean = np.array([0.485, 0.456, 0.406]) * 255
    std = np.array([0.229, 0.224, 0.225]) * 255
    return (pixels - mean) / std


# name -> (build kwargs, load kwargs, preprocessing)
MUTANTS = {
    "symmetric_padding": ({"padding_mode": "symmetric"}, {}, None),
    "batch_norm_epsilon_1e-5": ({"batch_norm_epsilon": 1e-5}, {}, None),
    "imagenet_mean_std_input": ({}, {}, _imagenet_means_stds),
    "transposed_depthwise_kernel": ({}, {"depthwise_layout": (3, 2, 0, 1)}, None),
}


@functools.cache
def _state(variant: str) -> dict:
    record = weights.resolve_weights("imagenet", backbones.get_backbone(variant))
    return torch_checkpoint.read_checkpoint(record.path, record.sha256)


@functools.lru_cache(maxsize=2)  # the right Lite0 and Lite2 serve several tests
def _classifier(variant: str, mutant: str | None = None):
    """(ImageNet classifier with logits out, preprocessing, image size)."""
    build, load, preprocess = MUTANTS[mutant] if mutant else ({}, {}, None)
    size = efficientnet_lite.VARIANTS[variant].native_image_size
    model = efficientnet_lite.build_efficientnet_lite(
        variant, True, None, (size, size, 3), classifier_activation=None, **build
    )
    efficientnet_lite.load_torch_state_dict(model, _state(variant), **load)
    return model, preprocess or efficientnet_lite.preprocess_input, size


def _golden_inputs(size: int) -> np.ndarray:
    """The generator's inputs, rebuilt the same way (see the module docstring)."""
    images = []
    for photo in (skimage.data.chelsea(), skimage.data.coffee()):
        top, left = (photo.shape[0] - size) // 2, (photo.shape[1] - size) // 2
        images.append(photo[top : top + size, left : left + size].astype(np.float32))
    images.append(np.random.default_rng(0).uniform(0, 255, (size, size, 3)).astype(np.float32))
    return np.stack(images)


def golden_logit_error(variant: str, mutant: str | None = None) -> float:
    """Largest |logit - reference logit| over the golden inputs and kept classes."""
    with open(GOLDEN) as f:
        golden = json.load(f)["models"][variant]
    model, preprocess, size = _classifier(variant, mutant)
    assert size == golden["image_size"]
    logits = model(preprocess(_golden_inputs(size).astype(np.float64)).astype(np.float32))
    logits = np.asarray(logits)
    worst = 0.0
    for row, expected in zip(logits, golden["rows"]):
        diff = np.abs(row[expected["classes"]] - np.array(expected["logits"]))
        worst = max(worst, float(diff.max()))
    return worst


def _photos() -> dict[str, np.ndarray]:
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as grace_hopper:
        hopper = np.asarray(Image.open(grace_hopper).convert("RGB"))
    return {
        "chelsea": skimage.data.chelsea(),
        "coffee": skimage.data.coffee(),
        "grace_hopper": hopper,
        "flower": sklearn.datasets.load_sample_image("flower.jpg"),
    }


# photo -> (acceptable top-1 classes, a class that must be in the top 5), per variant.
# Lite2 calls sklearn's flower a honeycomb (599, the bee-like centre) with no daisy in its
# top 5, so only Lite0 is held to that photo.
EXPECTED = {
    "efficientnet_lite0": {
        "chelsea": (CATS, TABBY),
        "coffee": ({ESPRESSO, CUP}, CUP),
        "grace_hopper": ({MILITARY_UNIFORM}, MILITARY_UNIFORM),
        "flower": ({DAISY}, DAISY),
    },
    "efficientnet_lite2": {
        "chelsea": (CATS, TABBY),
        "coffee": ({ESPRESSO, CUP}, CUP),
        "grace_hopper": ({MILITARY_UNIFORM}, MILITARY_UNIFORM),
    },
}


def photo_class_errors(variant: str, mutant: str | None = None) -> list[str]:
    """The photos whose top-1 or top-5 is wrong (the pipeline's decode-and-resize path)."""
    model, preprocess, size = _classifier(variant, mutant)
    errors = []
    for name, photo in _photos().items():
        if name not in EXPECTED[variant]:
            continue
        top1_ok, in_top5 = EXPECTED[variant][name]
        pixels = tf.image.resize(tf.constant(photo, tf.float32)[None], [size, size], antialias=True)
        logits = np.asarray(model(tf.cast(preprocess(pixels), tf.float32)))[0]
        top5 = np.argsort(-logits)[:5].tolist()
        if top5[0] not in top1_ok or in_top5 not in top5:
            errors.append(f"{name}: top-5 {top5}")
    return errors


@pytest.mark.parametrize("variant", sorted(efficientnet_lite.VARIANTS))
def test_logits_match_the_reference_forward_pass(variant):
    assert golden_logit_error(variant) < LOGIT_TOLERANCE


@pytest.mark.parametrize("variant", sorted(efficientnet_lite.VARIANTS))
def test_photos_get_their_imagenet_classes(variant):
    assert photo_class_errors(variant) == []


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_each_tempting_mistake_fails_the_checks(mutant):
    # Lite0 only: the mistakes are in code both variants share.
    error = golden_logit_error("efficientnet_lite0", mutant)
    assert error > 10 * LOGIT_TOLERANCE, f"{mutant} passed the golden logits ({error})"


def test_normalisation_mistake_also_fails_the_photo_classes():
    # The padding and epsilon mistakes can keep every top-1 (see the notes); the wrong
    # normalisation is caught by the photos alone too.
    assert photo_class_errors("efficientnet_lite0", "imagenet_mean_std_input") != []


def test_lite2_follows_lites_scaling_rules():
    lite2 = efficientnet_lite.VARIANTS["efficientnet_lite2"]
    assert [row[0] for row in lite2.stage_table()] == [1, 3, 3, 4, 4, 5, 1]
    assert lite2.num_blocks == 21 and lite2.native_image_size == 260
    blocks_in_checkpoint = {key.split(".")[1] for key in _state(lite2.name) if "_blocks." in key}
    assert len(blocks_in_checkpoint) == 21
    # Stem and head are not scaled (fix_head_stem).
    assert _state(lite2.name)["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert _state(lite2.name)["_conv_head.weight"].shape[0] == 1280


def test_another_networks_checkpoint_is_refused_by_block_count():
    model = efficientnet_lite.lite0(input_shape=(64, 64, 3))
    with pytest.raises(efficientnet_lite.WeightsMismatchError, match="21 blocks.*16"):
        efficientnet_lite.load_torch_state_dict(model, _state("efficientnet_lite2"))


def test_missing_extra_and_misshaped_tensors_are_named():
    model = efficientnet_lite.lite0(input_shape=(64, 64, 3))
    state = dict(_state("efficientnet_lite0"))
    missing = {k: v for k, v in state.items() if k != "_blocks.3._bn1.running_var"}
    named = r"_blocks\.3\._bn1\.running_var"
    with pytest.raises(efficientnet_lite.WeightsMismatchError, match=named):
        efficientnet_lite.load_torch_state_dict(model, missing)
    extra = {**state, "_blocks.3._se_reduce.weight": np.zeros((4, 96, 1, 1), np.float32)}
    with pytest.raises(efficientnet_lite.WeightsMismatchError, match="_se_reduce"):
        efficientnet_lite.load_torch_state_dict(model, extra)
    misshaped = {**state, "_conv_head.weight": np.zeros((1280, 321, 1, 1), np.float32)}
    with pytest.raises(efficientnet_lite.WeightsMismatchError, match=r"_conv_head\.weight"):
        efficientnet_lite.load_torch_state_dict(model, misshaped)
