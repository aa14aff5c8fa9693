"""Warm-up requests written beside the exported model, in TF Serving's format.

TF Serving replays `assets.extra/tf_serving_warmup_requests` (a TFRecord file of
tensorflow.serving.PredictionLog protos, at most 1,000 records) after loading a version and
before serving it, so the first real request does not pay for graph tracing and kernel set-up
(TF Serving's saved_model_warmup.md). The requests here are real ones: small encoded images
through every signature the export has, at a single image and at a batch, so each signature's
tf.function is traced and its kernels are warm.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_log_pb2
from tfx.utils import path_utils

from models import features
from models.atomic_files import write_atomically
from models.examples import make_example

BATCH_SIZES = (1, 8)


def _images(count: int) -> list[bytes]:
    """Distinct, deterministic JPEGs: smooth colour fields, photo-like to the decoder."""
    rng = np.random.default_rng(0)
    images = []
    for _ in range(count):
        corners = rng.integers(0, 256, size=(2, 2, 3)).astype(np.float32)
        pixels = tf.image.resize(corners[tf.newaxis], (64, 64))[0]
        images.append(tf.io.encode_jpeg(tf.cast(pixels, tf.uint8)).numpy())
    return images


def warmup_logs() -> list[prediction_log_pb2.PredictionLog]:
    """Predict (image bytes and tf.Example signatures) and Classify, at each batch size."""
    logs = []
    for size in BATCH_SIZES:
        images = _images(size)
        predict = predict_pb2.PredictRequest()
        predict.model_spec.signature_name = features.SERVING_SIGNATURE
        predict.inputs[features.SERVING_INPUT_KEY].CopyFrom(tf.make_tensor_proto(images))
        logs.append(prediction_log_pb2.PredictionLog(predict_log={"request": predict}))

        examples = [make_example({features.IMAGE_KEY: image}) for image in images]
        serialized = [example.SerializeToString() for example in examples]
        by_example = predict_pb2.PredictRequest()
        by_example.model_spec.signature_name = features.TF_EXAMPLE_SIGNATURE
        by_example.inputs[features.TF_EXAMPLE_INPUT_KEY].CopyFrom(tf.make_tensor_proto(serialized))
        logs.append(prediction_log_pb2.PredictionLog(predict_log={"request": by_example}))

        classify = classification_pb2.ClassificationRequest()
        classify.model_spec.signature_name = features.CLASSIFY_SIGNATURE
        classify.input.example_list.examples.extend(examples)
        logs.append(prediction_log_pb2.PredictionLog(classify_log={"request": classify}))
    return logs


def write_warmup_requests(export_dir: str) -> str:
    """Write the warm-up file into export_dir (written whole to a temporary name, then renamed)."""
    path = path_utils.warmup_file_path(export_dir)  # TFX's name for TF Serving's file

    def write(tmp: str) -> None:
        with tf.io.TFRecordWriter(tmp) as writer:
            for log in warmup_logs():
                writer.write(log.SerializeToString())

    write_atomically(path, write)
    return path
