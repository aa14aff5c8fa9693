"""Training-only image augmentation, built from a config string like "flip,rotation".

Why here and not in the model: augmentation is applied in the training dataset's map,
after the Transform graph, so it can never reach the exported (serving) model nor the
eval data. The images it sees are already backbone-preprocessed floats (ResNet50's are
mean-subtracted BGR, MobileNetV2's lie in [-1, 1]), so every op here is range-agnostic:
geometric ops interpolate values, and contrast scales around each image's own channel
means without clipping (Keras' RandomContrast clips to [0, 255], which would destroy
such inputs).
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras


class ChannelContrast(tf_keras.layers.Layer):
    """Random contrast around per-image channel means, no clipping (any value range)."""

    def __init__(self, factor: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor
        self.seed = seed

    def call(self, images: tf.Tensor, training: bool = True) -> tf.Tensor:
        if not training:
            return images
        scale = tf.random.uniform(
            [tf.shape(images)[0], 1, 1, 1], 1.0 - self.factor, 1.0 + self.factor, seed=self.seed
        )
        mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
        return (images - mean) * scale + mean

    def get_config(self) -> dict:
        return {**super().get_config(), "factor": self.factor, "seed": self.seed}


# name -> layer factory (seed) ; one row per augmentation.
AUGMENTATIONS = {
    "flip": lambda seed: tf_keras.layers.RandomFlip("horizontal", seed=seed, name="aug_flip"),
    "rotation": lambda seed: tf_keras.layers.RandomRotation(0.05, seed=seed, name="aug_rotation"),
    "zoom": lambda seed: tf_keras.layers.RandomZoom(0.1, seed=seed, name="aug_zoom"),
    "contrast": lambda seed: ChannelContrast(0.2, seed=seed, name="aug_contrast"),
}


def parse(spec: str | None) -> list[str]:
    """ "flip, zoom" -> ["flip", "zoom"]; empty or "none" -> []."""
    names = [n.strip().lower() for n in (spec or "").split(",") if n.strip()]
    if names == ["none"]:
        return []
    unknown = sorted(set(names) - set(AUGMENTATIONS))
    if unknown:
        raise ValueError(
            f"Unknown augmentation(s) {', '.join(unknown)}; choose from "
            f"{', '.join(AUGMENTATIONS)} (comma-separated)."
        )
    return names


def build(spec: str | None, seed: int) -> tf_keras.Sequential | None:
    """The augmentation pipeline for `spec`, or None when it is empty."""
    names = parse(spec)
    if not names:
        return None
    return tf_keras.Sequential(
        [AUGMENTATIONS[name](seed + i) for i, name in enumerate(names)], name="augmentation"
    )


def apply(dataset: tf.data.Dataset, augmenter: tf_keras.Sequential | None) -> tf.data.Dataset:
    """Augment the images of an (image batch, label batch) dataset; training data only."""
    if augmenter is None:
        return dataset
    return dataset.map(
        lambda images, labels: (augmenter(images, training=True), labels),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
