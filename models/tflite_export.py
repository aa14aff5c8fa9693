"""TFLite export of the trained model, for a phone: float32 and full-integer (int8).

Why these inputs: a phone app has camera pixels, not JPEG files, so both TFLite models take
a decoded RGB image, uint8 [1, IMAGE_SIZE, IMAGE_SIZE, 3], and the backbone's normalization
runs inside the model. Their TFLite metadata therefore declares mean 0 and std 1 (TFLite's
task libraries would otherwise normalize a second time), carries the labels file (class
index -> name) and describes the input.

The int8 model is fully quantized (TFLite builtins int8 only) with a representative set
drawn from the train split alone; its uint8 input is exactly the pixels (scale 1, zero
point 0) because the calibration images span 0..255 (a black and a white frame are added).
Its output stays float32 probabilities, as the float model's.

The files live in the Model artifact beside the SavedModel (`<uri>/Format-TFLite/`); the
TFLite evaluator compares them with the SavedModel on the eval split and the Pusher
publishes the ones that pass beside the served version.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from models import features
from models.atomic_files import write_atomically
from models.backbones import get_backbone
from models.preprocessing import decode_and_resize

TFLITE_DIR = "Format-TFLite"  # beside TFX's Format-Serving in the Model artifact
FLOAT_MODEL = "model.tflite"
INT8_MODEL = "model_int8.tflite"
MODEL_FILES = (FLOAT_MODEL, INT8_MODEL)
LABELS_FILE = "labels.txt"  # the associated file in the metadata (one class per line)
INPUT_DESCRIPTION = (
    "RGB image, uint8 pixels 0-255, {size}x{size} (resize the whole frame to a square, "
    "no crop); the backbone's normalization is inside the model."
)
REPRESENTATIVE_IMAGES = 100  # train photos that calibrate the int8 ranges


def tflite_dir(model_uri: str) -> str:
    """Where a Model artifact keeps its TFLite files."""
    return os.path.join(model_uri, TFLITE_DIR)


def decode_pixels(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """[batch] encoded photos -> uint8 [batch, size, size, 3]: the SavedModel's decoding and
    resizing (preprocessing.decode_and_resize), rounded to the pixels a camera gives."""
    pixels = decode_and_resize(image_bytes, image_size)
    return tf.cast(tf.clip_by_value(tf.round(pixels), 0.0, 255.0), tf.uint8)


def _pixels_to_probabilities(network: Callable, backbone: str) -> Callable[[tf.Tensor], tf.Tensor]:
    preprocess = get_backbone(backbone).preprocess_input

    def probabilities(pixels: tf.Tensor) -> tf.Tensor:
        # preprocess_input may modify its argument in place on numpy; a tensor is safe.
        return network(preprocess(tf.cast(pixels, tf.float32)), training=False)

    return probabilities


def _converter(
    network, backbone: str, image_size: int, input_dtype: tf.DType
) -> tf.lite.TFLiteConverter:
    module = tf.Module()
    module.network = network  # tracked: the converter freezes its variables
    call = _pixels_to_probabilities(network, backbone)
    module.serve = tf.function(
        call,
        input_signature=[tf.TensorSpec([1, image_size, image_size, 3], input_dtype, name="image")],
    )
    concrete = module.serve.get_concrete_function()
    return tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)


def convert_float(network, backbone: str, image_size: int) -> bytes:
    """float32 TFLite: uint8 pixels in, float32 probabilities out."""
    return _converter(network, backbone, image_size, tf.uint8).convert()


def convert_int8(
    network, backbone: str, image_size: int, representative: Sequence[np.ndarray]
) -> bytes:
    """Full-integer TFLite (int8 weights and activations), uint8 pixels in.

    The graph takes float pixels so that the converter quantizes the input itself; with
    inference_input_type uint8 and calibration over 0..255 the input scale is 1.
    """
    converter = _converter(network, backbone, image_size, tf.float32)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.float32
    black = np.zeros([1, image_size, image_size, 3], np.float32)

    def dataset() -> Iterator[list[np.ndarray]]:
        yield [black]
        yield [black + 255.0]
        for image in representative:
            yield [image[np.newaxis].astype(np.float32)]

    converter.representative_dataset = dataset
    return converter.convert()


def with_metadata(model: bytes, class_names: Sequence[str], image_size: int, name: str) -> bytes:
    """The model with TFLite metadata (tflite-support's image-classifier writer): labels,
    normalization mean 0 / std 1 (it is inside the model), the input's description."""
    # tflite-support's writers, from the wheel's own package: `import tflite_support` also
    # loads its task library, whose pybind types clash with TensorFlow's ("StatusCode is
    # already defined") once TF is imported. Imported here: it loads native code (libusb).
    from tensorflow_lite_support.metadata.python.metadata_writers import (
        image_classifier,
        metadata_info,
        writer_utils,
    )

    with tempfile.TemporaryDirectory() as tmp:
        labels = os.path.join(tmp, LABELS_FILE)
        with open(labels, "w") as f:
            f.write("".join(f"{n}\n" for n in class_names))
        writer = image_classifier.MetadataWriter.create_from_metadata_info(
            model_buffer=bytearray(model),
            general_md=metadata_info.GeneralMd(
                name=name, description=f"Image classifier over {len(class_names)} classes."
            ),
            input_md=metadata_info.InputImageTensorMd(
                name="image",
                description=INPUT_DESCRIPTION.format(size=image_size),
                norm_mean=[0.0],
                norm_std=[1.0],
                color_space_type=image_classifier._metadata_fb.ColorSpaceType.RGB,
                tensor_type=writer_utils.get_input_tensor_types(bytearray(model))[0],
            ),
            output_md=metadata_info.ClassificationTensorMd(
                name="probabilities",
                description="Probability of each class, in the labels file's order.",
                label_files=[metadata_info.LabelFileMd(file_path=labels)],
                tensor_type=writer_utils.get_output_tensor_types(bytearray(model))[0],
            ),
        )
        return bytes(writer.populate())


def read_metadata(path: str) -> dict:
    """The metadata JSON and the labels of a TFLite file written here."""
    from tensorflow_lite_support.metadata.python import metadata

    displayer = metadata.MetadataDisplayer.with_model_file(path)
    return {
        "metadata": json.loads(displayer.get_metadata_json()),
        "labels": displayer.get_associated_file_buffer(LABELS_FILE).decode().splitlines(),
    }


def representative_pixels(
    train_files: Sequence[str], image_size: int, count: int = REPRESENTATIVE_IMAGES
) -> list[np.ndarray]:
    """Up to `count` decoded photos of the train split (file patterns of its records)."""
    files = sorted(f for pattern in train_files for f in tf.io.gfile.glob(pattern))
    records = tf.data.TFRecordDataset(files, compression_type="GZIP").take(count)
    spec = {features.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)}
    images = []
    for batch in records.batch(32):
        encoded = tf.io.parse_example(batch, spec)[features.IMAGE_KEY]
        images.extend(decode_pixels(encoded, image_size).numpy())
    return images


def export_tflite_models(
    network,
    backbone: str,
    image_size: int,
    class_names: Sequence[str],
    train_files: Sequence[str],
    output_dir: str,
) -> dict[str, int]:
    """Write model.tflite and model_int8.tflite (with metadata) into output_dir, each
    atomically; returns {file name: size in bytes}."""
    representative = representative_pixels(train_files, image_size)
    models = {
        FLOAT_MODEL: convert_float(network, backbone, image_size),
        INT8_MODEL: convert_int8(network, backbone, image_size, representative),
    }
    sizes = {}
    for name, model in models.items():
        data = with_metadata(model, class_names, image_size, name)

        def write(tmp: str, data: bytes = data) -> None:
            with tf.io.gfile.GFile(tmp, "wb") as f:
                f.write(data)

        write_atomically(os.path.join(output_dir, name), write)
        sizes[name] = len(data)
    return sizes
