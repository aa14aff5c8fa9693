"""The network: a frozen pretrained backbone, global average pooling and a dense head.

The head is a model of its own (pooled features -> class probabilities) so it can be
trained on pooled features directly and then reused, unchanged, inside the full model.
Fine-tuning unfreezes the top blocks of the backbone named in its table row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import tensorflow as tf
import tf_keras

from models import features
from models.backbones import get_backbone
from models.keras_autograph import skip_tf_keras_conversion
from models.weights import WeightsRecord, load_backbone_weights, resolve_deferred

# Before anything here is traced (fit, predict, export): see keras_autograph.py.
skip_tf_keras_conversion()

HEAD_DENSE = "head_dense"  # the head's only layer with weights
COMPUTE_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """What determines the frozen backbone and its pooled features: the network, its
    weights, the input size and the compute dtype of the feature pass.

    One object instead of loose (name, weights, size, dtype) parameters: the Trainer, the
    Tuner and the feature store (feature_cache.py) read the same one. `dtype` is the
    feature pass's only: the exported model is always float32. Random weights are drawn
    from `seed` (build() seeds first), so every process that builds the spec gets the same
    ones and their features share a key.
    """

    name: str
    weights: WeightsRecord
    image_size: int
    dtype: str = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        get_backbone(self.name)  # an unknown name fails here, with the list of known ones
        if self.dtype not in COMPUTE_DTYPES:
            raise ValueError(f"BACKBONE_DTYPE={self.dtype!r}: choose float32 or bfloat16.")

    @classmethod
    def from_config(cls, config: Mapping, dtype: str = "float32", seed: int = 0) -> BackboneSpec:
        """The spec in the Trainer's / Tuner's custom_config (backbone, weights, image_size)."""
        # A packaged (Vertex) compile defers the weights to here, the Trainer's container.
        return cls(
            config["backbone"],
            resolve_deferred(WeightsRecord.from_dict(config["weights"])),
            int(config["image_size"]),
            dtype,
            seed,
        )

    @property
    def feature_dim(self) -> int:
        return get_backbone(self.name).feature_dim

    @property
    def weights_id(self) -> str:
        """The weights file's SHA-256, or the seed the random weights are drawn from."""
        return self.weights.sha256 or f"random-seed-{self.seed}"

    def build(self) -> tf_keras.Model:
        """The frozen backbone; random weights are drawn right after seeding."""
        tf_keras.utils.set_random_seed(self.seed)
        return build_backbone(self.name, self.image_size, self.weights)


def build_backbone(
    backbone_name: str, image_size: int, weights_record: WeightsRecord
) -> tf_keras.Model:
    """The backbone without its classifier, weights loaded, frozen."""
    backbone = get_backbone(backbone_name).build(image_size)
    load_backbone_weights(backbone, weights_record)
    backbone.trainable = False
    return backbone


def build_head(
    feature_dim: int, num_classes: int, dropout: float | tf.Variable, seed: int
) -> tf_keras.Model:
    """Dropout + softmax dense layer on pooled features. `dropout` may be a variable
    (the Tuner's trials set it without building a new head)."""
    pooled = tf_keras.Input(shape=(feature_dim,), name="pooled_features")
    x = tf_keras.layers.Dropout(dropout, seed=seed, name="head_dropout")(pooled)
    probabilities = tf_keras.layers.Dense(
        num_classes,
        activation="softmax",
        kernel_initializer=tf_keras.initializers.GlorotUniform(seed=seed),
        name=HEAD_DENSE,
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


def build_feature_extractor(
    backbone: tf_keras.Model,
    image_size: int,
    compute_dtype: str = "float32",
    backbone_name: str | None = None,
) -> tf_keras.Model:
    """Transformed image -> pooled features: exactly the part of build_model below the head.

    compute_dtype="bfloat16" runs a copy of the backbone (same weights) under Keras'
    mixed_bfloat16 policy: variables stay float32, convolutions run in bfloat16, which
    CPUs with AVX512_BF16 execute natively. The exported model stays float32.
    """
    if compute_dtype == "bfloat16":
        if backbone_name is None:
            raise ValueError("a bfloat16 feature extractor needs the backbone's name")
        previous = tf_keras.mixed_precision.global_policy()
        tf_keras.mixed_precision.set_global_policy("mixed_bfloat16")
        try:
            copy = get_backbone(backbone_name).build(image_size)
        finally:
            tf_keras.mixed_precision.set_global_policy(previous)
        copy.set_weights(backbone.get_weights())
        copy.trainable = False
        backbone = copy
    elif compute_dtype != "float32":
        raise ValueError(f"BACKBONE_DTYPE={compute_dtype!r}: choose float32 or bfloat16.")
    image = tf_keras.Input(shape=(image_size, image_size, 3), name=features.TRANSFORMED_IMAGE_KEY)
    feature_map = backbone(image, training=False)
    pooled = tf_keras.layers.GlobalAveragePooling2D(name="avg_pool")(feature_map)
    return tf_keras.Model(image, pooled, name="feature_extractor")


def unfreeze_top_blocks(backbone: tf_keras.Model, backbone_name: str, num_blocks: int) -> list[str]:
    """Make the top `num_blocks` units of the backbone trainable, batch norm excepted.

    Returns the names of the layers made trainable. The caller must recompile: Keras
    reads `trainable` when it builds the train function.
    """
    units = get_backbone(backbone_name).block_prefixes
    if not 0 <= num_blocks <= len(units):
        raise ValueError(
            f"{backbone_name} has {len(units)} fine-tuning blocks; "
            f"got FINE_TUNE_BLOCKS={num_blocks}."
        )
    prefixes = tuple(prefix for unit in units[:num_blocks] for prefix in unit)
    # Setting trainable on the backbone recurses into every layer; then re-freeze all but
    # the chosen ones. BatchNormalization stays frozen: its moving statistics come from
    # ImageNet and are not re-estimated on a small dataset (the backbone also runs with
    # training=False, see build_model).
    backbone.trainable = True
    unfrozen = []
    for layer in backbone.layers:
        chosen = layer.name.startswith(prefixes) and not isinstance(
            layer, tf_keras.layers.BatchNormalization
        )
        layer.trainable = chosen
        if chosen and layer.weights:
            unfrozen.append(layer.name)
    return unfrozen


class SmoothedSparseCrossentropy(tf_keras.losses.Loss):
    """Cross-entropy on integer labels with label smoothing.

    Keras' sparse loss has no label_smoothing, so labels go through one-hot here.
    """

    def __init__(
        self, num_classes: int, label_smoothing: float | tf.Variable, name: str = "smoothed_ce"
    ):
        super().__init__(name=name)
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing

    def call(self, labels: tf.Tensor, probabilities: tf.Tensor) -> tf.Tensor:
        one_hot = tf.one_hot(
            tf.cast(tf.reshape(labels, [-1]), tf.int32), self.num_classes, dtype=probabilities.dtype
        )
        # Keras' own smoothing formula, written out: its smart_cond on label_smoothing
        # needs a Python number, and the Tuner's trials pass a variable.
        smoothing = tf.cast(self.label_smoothing, probabilities.dtype)
        smoothed = one_hot * (1.0 - smoothing) + smoothing / self.num_classes
        return tf_keras.losses.categorical_crossentropy(smoothed, probabilities)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "label_smoothing": self.label_smoothing,
        }


def _smoothed(label_smoothing: float | tf.Variable) -> bool:
    """A variable (the Tuner's trials) always counts as smoothing: its value may change."""
    return not isinstance(label_smoothing, (int, float)) or bool(label_smoothing)


def sparse_loss(
    num_classes: int, label_smoothing: float | tf.Variable = 0.0
) -> tf_keras.losses.Loss:
    if not _smoothed(label_smoothing):
        return tf_keras.losses.SparseCategoricalCrossentropy()
    return SmoothedSparseCrossentropy(num_classes, label_smoothing)


def compile_model(
    model: tf_keras.Model,
    learning_rate: float,
    num_classes: int | None = None,
    label_smoothing: float | tf.Variable = 0.0,
    steps_per_execution: int = 1,
) -> None:
    """`steps_per_execution` > 1 runs that many batches per call into the graph: the head
    alone is so small that Python's per-step overhead would dominate (Tuner trials)."""
    if num_classes is None and _smoothed(label_smoothing):
        raise ValueError("label_smoothing needs num_classes")
    model.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate),
        loss=sparse_loss(num_classes or 0, label_smoothing),
        metrics=[tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        steps_per_execution=steps_per_execution,
    )
