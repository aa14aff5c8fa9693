"""`make predict TFLITE=<file>`: classify photos with a TFLite model, no server.

The model takes uint8 RGB pixels of its input size (models/tflite_export.py); the photos are
decoded and resized here exactly as the SavedModel does (tf.io.decode_image, RGB, antialiased
squash to the square, rounded to uint8: the TFLite evaluator feeds the same), and the class
names come from the labels file inside the model's metadata (a TFLite file with associated
files is also a zip archive). `serving/` imports no training code, hence this copy of the
decoding; tests/serving/test_tflite_client.py checks it against the pipeline's.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence

import numpy as np

LABELS_FILE = "labels.txt"


class TFLiteClient:
    """classify_images() like the REST and gRPC clients, on tf.lite.Interpreter."""

    def __init__(self, model_path: str):
        import tensorflow as tf  # only this path needs it

        self._tf = tf
        with open(model_path, "rb") as f:
            content = f.read()
        try:
            with zipfile.ZipFile(io.BytesIO(content)) as archive:
                self.class_names = archive.read(LABELS_FILE).decode().splitlines()
        except (zipfile.BadZipFile, KeyError):
            self.class_names = []  # no labels in the metadata: the class is its index
        self._interpreter = tf.lite.Interpreter(model_content=content)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self.image_size = int(self._input["shape"][1])

    def __enter__(self) -> TFLiteClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def pixels(self, image: bytes) -> np.ndarray:
        tf = self._tf
        decoded = tf.io.decode_image(image, channels=3, expand_animations=False)
        resized = tf.image.resize(decoded, [self.image_size] * 2, antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8).numpy()

    def classify_images(self, images: Sequence[bytes]) -> list:
        from serving.client import Classification, ServingHTTPError

        results = []
        for image in images:
            try:
                pixels = self.pixels(image)
            except self._tf.errors.InvalidArgumentError as exc:
                raise ServingHTTPError(400, f"not a decodable image: {exc.message}") from None
            self._interpreter.set_tensor(self._input["index"], pixels[np.newaxis])
            self._interpreter.invoke()
            probabilities = self._interpreter.get_tensor(self._output["index"])[0].tolist()
            index = int(np.argmax(probabilities))
            name = self.class_names[index] if index < len(self.class_names) else str(index)
            results.append(Classification(name, probabilities[index], probabilities))
        return results
