"""Generated inputs built with the project's own code, for the benches and the tests.

Encoded images, raw rows shaped like ingest's records, a real tf.Transform graph of the
project's preprocessing_fn and a real export of an untrained model: everything a bench or a
test needs without a dataset or pretrained weights. Nothing in the pipeline imports this.
"""

from __future__ import annotations

import io
import os
import tempfile

import numpy as np
from PIL import Image

from models import features

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_PATH = os.path.join(ROOT, "schemas", "schema.pbtxt")
PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "bmp": "BMP"}


def image_array(height: int, width: int, seed: int = 0, color=None) -> np.ndarray:
    """Random pixels, or `color` with a little noise."""
    rng = np.random.default_rng(seed)
    if color is None:
        return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    base = np.array(color, dtype=np.int16)[None, None, :]
    noise = rng.integers(-20, 21, size=(height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, image_format: str = "jpeg") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, PIL_FORMATS[image_format])
    return buffer.getvalue()


def image_bytes(
    height: int = 48, width: int = 40, image_format: str = "jpeg", seed: int = 0, color=None
) -> bytes:
    return encode(image_array(height, width, seed, color), image_format)


BRIGHT, DARK = (235, 225, 205), (25, 30, 45)  # the two classes' colours


def write_bright_and_dark_photos(folder: str, per_class: int = 20) -> None:
    """A photo folder of the demo's two classes as bright and dark JPEGs of three sizes:
    separable through any backbone, random weights included (the end-to-end tests' data)."""
    from pipeline import demo_data

    for class_name, colour in zip(demo_data.CLASS_NAMES, (BRIGHT, DARK)):
        class_dir = os.path.join(folder, class_name)
        os.makedirs(class_dir)
        for index in range(per_class):
            with open(os.path.join(class_dir, f"{index:03d}.jpg"), "wb") as f:
                f.write(image_bytes(40 + index % 3 * 8, 48, "jpeg", seed=index, color=colour))


def raw_row(
    encoded: bytes,
    label: int = 0,
    label_text: str = "a",
    image_format: str = "jpeg",
    height: int = 1,
    width: int = 1,
) -> dict:
    """The features of one ingested record (image_example_gen/ingest.py), as tf.Transform
    takes them."""
    return {
        features.IMAGE_KEY: encoded,
        features.IMAGE_FORMAT_KEY: image_format.encode(),
        features.HEIGHT_KEY: height,
        features.WIDTH_KEY: width,
        features.LABEL_KEY: label,
        features.LABEL_TEXT_KEY: label_text.encode(),
        features.SOURCE_PATH_KEY: b"x.jpg",
    }


def raw_schema():
    """The committed schema of the raw records (schemas/schema.pbtxt)."""
    from tfx.utils import io_utils

    return io_utils.SchemaReader().read(SCHEMA_PATH)


def transform_output(output_dir: str, image_size: int, backbone: str = "resnet50"):
    """The real preprocessing_fn run through tf.Transform's Beam implementation, written with
    the raw metadata as TFX's Transform writes it (the Trainer reads the raw schema there)."""
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io

    from models import preprocessing

    os.makedirs(output_dir, exist_ok=True)
    metadata = dataset_metadata.DatasetMetadata(raw_schema())
    rows = [raw_row(image_bytes(seed=i), label=i % 2) for i in range(2)]
    config = {"image_size": image_size, "backbone": backbone}
    with tft_beam.Context(temp_dir=tempfile.mkdtemp(dir=output_dir)):
        transform_fn = (rows, metadata) | tft_beam.AnalyzeDataset(
            lambda inputs: preprocessing.preprocessing_fn(inputs, config)
        )
        _ = transform_fn | tft_beam.WriteTransformFn(output_dir)
    metadata_io.write_metadata(
        metadata, os.path.join(output_dir, tft.TFTransformOutput.RAW_METADATA_DIR)
    )
    return tft.TFTransformOutput(output_dir)


def data_accessor():
    """A DataAccessor as TFX's Trainer executor builds it: raw tf.Example files -> tf.data."""
    from tfx.components.trainer.fn_args_utils import DataAccessor
    from tfx_bsl.public import tfxio

    def tf_dataset_factory(file_pattern, options, schema):
        return tfxio.TFExampleRecord(file_pattern=file_pattern, schema=schema).TensorFlowDataset(
            options
        )

    return DataAccessor(
        tf_dataset_factory=tf_dataset_factory, record_batch_factory=None, data_view_decode_fn=None
    )


def random_weights(backbone: str):
    """The weights record of a randomly initialised backbone (no download)."""
    from models import backbones, weights

    return weights.resolve_weights(weights.RANDOM, backbones.get_backbone(backbone))


def export_untrained_model(
    export_dir: str,
    class_names: tuple[str, ...] = ("hot_dog", "not_hot_dog"),
    image_size: int = 32,
    backbone: str = "mobilenet_v2",
    seed: int = 0,
    backbone_weights: str = "random",
    tflite_dir: str | None = None,
    tflite_train_files: tuple[str, ...] = (),
) -> str:
    """A real export (the pipeline's own code) of a model whose head is untrained: the
    backbone has random weights, or BACKBONE_WEIGHTS-style `backbone_weights` (imagenet:
    a packaged pretrained backbone such as efficientnet_lite0).

    Small image size and a light backbone keep it to seconds; the SavedModel has the
    same signatures as the pipeline's pushed model. `tflite_dir`: also write the Trainer's
    model.tflite and model_int8.tflite of the same network there (the int8 calibration
    photos from `tflite_train_files`, patterns of train records).
    """
    from models import backbones, export, model, tflite_export, weights

    os.makedirs(export_dir, exist_ok=True)
    transform = transform_output(
        tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(export_dir))), image_size, backbone
    )
    record = weights.resolve_weights(backbone_weights, backbones.get_backbone(backbone))
    network = model.build_model(
        model.build_backbone(backbone, image_size, record),
        model.build_head(backbones.get_backbone(backbone).feature_dim, len(class_names), 0.0, seed),
        image_size,
    )
    export.export_serving_model(
        network,
        transform.transform_features_layer(),
        list(class_names),
        {"backbone": backbone, "backbone_weights": record.as_dict(), "image_size": image_size},
        export_dir,
    )
    if tflite_dir:
        tflite_export.export_tflite_models(
            network, backbone, image_size, class_names, tflite_train_files, tflite_dir
        )
    return export_dir
