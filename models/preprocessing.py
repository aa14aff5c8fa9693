"""Transform's preprocessing_fn: encoded image bytes -> backbone-ready float pixels.

The same graph runs in training (applied by the Trainer's input pipeline) and inside
the exported SavedModel, so serving can never drift from training. There are no
analyzers: every operation is per example.
"""

from __future__ import annotations

import tensorflow as tf

from models import features
from models.backbones import get_backbone

DEFAULT_IMAGE_SIZE = 224


def _assert_not_paletted_bmp(encoded: tf.Tensor) -> tf.Operation:
    """InvalidArgument for a BMP of 8 bits per pixel or fewer (a palette).

    TF's BMP decoder returns an 8-bit palette index as grey instead of the colour, so the
    model would answer for the wrong picture. Ingest converts such files to PNG; a serving
    request with one gets this error (HTTP 400), not a wrong answer. A BMP keeps its bit
    count at byte 28 of a BITMAPINFOHEADER (or later) header, whose size (bytes 14-17) is
    at least 40.
    """
    header = tf.io.decode_raw(
        tf.strings.substr(tf.strings.join([encoded, tf.constant(b"\0" * 30)]), 0, 30), tf.uint8
    )
    header = tf.cast(header, tf.int32)
    info_size = header[14] + 256 * header[15] + 65536 * header[16]
    bits = header[28] + 256 * header[29]
    paletted = tf.logical_and(
        tf.equal(tf.strings.substr(encoded, 0, 2, unit="BYTE"), "BM"),
        tf.logical_and(info_size >= 40, bits <= 8),
    )
    return tf.debugging.Assert(
        tf.logical_not(paletted),
        [
            "Paletted BMP images (8 bits per pixel or fewer) are not supported: TensorFlow "
            "decodes their colours wrongly. Send the image as PNG or JPEG."
        ],
    )


def decode_and_resize(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """[batch] encoded JPEG/PNG/GIF/BMP strings -> float32 [batch, size, size, 3] in [0, 255].

    Grey and RGBA images become 3-channel RGB; an animated GIF contributes its first
    frame. Images are squashed to a square (no crop), as Keras'
    image_dataset_from_directory does, with antialiasing for large photos.

    Antialiasing only changes a downscaled side, and its kernel (ScaleAndTranslate) costs
    about twice plain bilinear resizing: an image no larger than the target on both sides
    (a 64 px photo at 224) takes plain bilinear, equal to the antialiased result within
    float rounding (3e-5 on the 0-255 scale). On 2 CPUs the antialiased resize was the
    input pipeline's largest cost, paid on the backbone pass's cores (docs/performance.md).
    """

    def resize(image: tf.Tensor) -> tf.Tensor:
        size = [image_size, image_size]
        larger = tf.reduce_any(tf.shape(image)[:2] > image_size)
        return tf.cond(
            larger,
            lambda: tf.image.resize(image, size, antialias=True),
            lambda: tf.image.resize(image, size),
        )

    def decode_one(encoded: tf.Tensor) -> tf.Tensor:
        with tf.control_dependencies([_assert_not_paletted_bmp(encoded)]):
            image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return resize(image)

    return tf.map_fn(
        decode_one,
        tf.reshape(image_bytes, [-1]),
        fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
    )


def preprocess_images(image_bytes: tf.Tensor, image_size: int, backbone: str) -> tf.Tensor:
    pixels = decode_and_resize(image_bytes, image_size)
    return get_backbone(backbone).preprocess_input(pixels)


def preprocessing_fn(inputs: dict, custom_config: dict | None = None) -> dict:
    """tf.Transform entry point; `custom_config` carries image_size and backbone."""
    config = custom_config or {}
    image_size = int(config.get("image_size", DEFAULT_IMAGE_SIZE))
    backbone = config.get("backbone", features.DEFAULT_BACKBONE)
    return {
        features.TRANSFORMED_IMAGE_KEY: preprocess_images(
            inputs[features.IMAGE_KEY], image_size, backbone
        ),
        features.LABEL_KEY: tf.reshape(inputs[features.LABEL_KEY], [-1]),
    }
