"""The network: a frozen pretrained backbone, global average pooling and a dense head.

The head is a model of its own (pooled features -> class probabilities) so it can be
trained on pooled features directly and then reused, unchanged, inside the full model.
"""

from __future__ import annotations

import tf_keras

from components.modules import features
from components.modules.backbones import get_backbone
from components.modules.weights import load_backbone_weights


def build_backbone(backbone_name: str, image_size: int, weights_record: dict) -> tf_keras.Model:
    """The backbone without its classifier, weights loaded, frozen."""
    backbone = get_backbone(backbone_name).build(image_size)
    load_backbone_weights(backbone, weights_record)
    backbone.trainable = False
    return backbone


def build_head(feature_dim: int, num_classes: int, dropout: float, seed: int) -> tf_keras.Model:
    pooled = tf_keras.Input(shape=(feature_dim,), name="pooled_features")
    x = tf_keras.layers.Dropout(dropout, seed=seed, name="head_dropout")(pooled)
    probabilities = tf_keras.layers.Dense(
        num_classes,
        activation="softmax",
        kernel_initializer=tf_keras.initializers.GlorotUniform(seed=seed),
        name="head_dense",
    )(x)
    return tf_keras.Model(pooled, probabilities, name="head")


def build_model(backbone: tf_keras.Model, head: tf_keras.Model, image_size: int) -> tf_keras.Model:
    """Transformed image -> class probabilities."""
    image = tf_keras.Input(shape=(image_size, image_size, 3), name=features.TRANSFORMED_IMAGE_KEY)
    # training=False keeps batch-norm layers in inference mode (frozen moving statistics)
    # even when the backbone is later unfrozen for fine-tuning; otherwise small batches
    # would overwrite the ImageNet statistics and wreck the pretrained features.
    feature_map = backbone(image, training=False)
    pooled = tf_keras.layers.GlobalAveragePooling2D(name="avg_pool")(feature_map)
    return tf_keras.Model(image, head(pooled), name="transfer_model")


def compile_model(model: tf_keras.Model, learning_rate: float) -> None:
    model.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(),
        metrics=[tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
