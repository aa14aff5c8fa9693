"""Export the trained model as a SavedModel that TF Serving answers over REST.

Why the default signature takes bytes: TF Serving's REST API turns {"b64": "..."} into
a DT_STRING tensor, so a client can post the photo file as it is, and decoding and
resizing happen inside the model with the very Transform graph used in training.
Class names are a constant inside the SavedModel, so no side file is needed.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import tensorflow as tf
import tf_keras

from models import features, warmup
from models.crash_points import crash_point
from models.training_metadata import write_training_metadata


class _ServingModule(tf.Module):
    def __init__(
        self,
        model: tf_keras.Model,
        transform_layer,
        class_names: list[str],
        call_model: Callable[[tf.Tensor], tf.Tensor] | None = None,
    ):
        super().__init__()
        # The Keras model itself stays out of the object graph: tracking it makes
        # tf.saved_model.save trace every layer for Keras' own metadata (~40 s for
        # ResNet50). The signatures need only its variables, which are tracked here.
        self._call_model = call_model or (lambda images: model(images, training=False))
        self.model_variables = list(model.variables)
        # An attribute, so the Transform graph's resources are tracked and saved.
        self.transform_layer = transform_layer
        self.class_names = tf.constant(class_names, dtype=tf.string)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def probabilities(self, image_bytes: tf.Tensor) -> tf.Tensor:
        """Traced once and shared by every signature."""
        transformed = self.transform_layer({features.IMAGE_KEY: image_bytes})
        return self._call_model(transformed[features.TRANSFORMED_IMAGE_KEY])

    def predictions(self, image_bytes: tf.Tensor) -> dict:
        probabilities = self.probabilities(image_bytes)
        class_index = tf.argmax(probabilities, axis=-1)
        return {
            features.PROBABILITIES_KEY: probabilities,
            features.CLASS_INDEX_KEY: class_index,
            features.CLASS_NAME_KEY: tf.gather(self.class_names, class_index),
        }

    def image_bytes_from_examples(self, serialized: tf.Tensor) -> tf.Tensor:
        # Only the image is required, so clients may send tf.Examples holding just it.
        parsed = tf.io.parse_example(
            serialized, {features.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)}
        )
        return parsed[features.IMAGE_KEY]


def _string_batch(name: str) -> list[tf.TensorSpec]:
    return [tf.TensorSpec([None], tf.string, name=name)]


def _signatures(module: _ServingModule) -> dict:
    @tf.function(input_signature=_string_batch(features.SERVING_INPUT_KEY))
    def serve_image_bytes(image_bytes):
        return module.predictions(image_bytes)

    @tf.function(input_signature=_string_batch(features.TF_EXAMPLE_INPUT_KEY))
    def serve_tf_example(examples):
        return module.predictions(module.image_bytes_from_examples(examples))

    @tf.function(input_signature=_string_batch(tf.saved_model.CLASSIFY_INPUTS))
    def classify(inputs):
        scores = module.probabilities(module.image_bytes_from_examples(inputs))
        classes = tf.tile(module.class_names[tf.newaxis, :], [tf.shape(scores)[0], 1])
        return {
            tf.saved_model.CLASSIFY_OUTPUT_CLASSES: classes,
            tf.saved_model.CLASSIFY_OUTPUT_SCORES: scores,
        }

    return {
        features.SERVING_SIGNATURE: serve_image_bytes,
        features.TF_EXAMPLE_SIGNATURE: serve_tf_example,
        features.CLASSIFY_SIGNATURE: classify,
    }


def _mark_classify_signature(export_dir: str) -> None:
    """tf.saved_model.save tags every signature 'predict'; TF Serving's Classify API
    only accepts signatures whose method_name is the classify one."""
    path = os.path.join(export_dir, "saved_model.pb")
    saved_model = tf.__internal__.saved_model.parse_saved_model(export_dir)
    for meta_graph in saved_model.meta_graphs:
        classify = meta_graph.signature_def[features.CLASSIFY_SIGNATURE]
        classify.method_name = tf.saved_model.CLASSIFY_METHOD_NAME
    with tf.io.gfile.GFile(path, "wb") as f:  # export_dir is in a bucket on Vertex
        f.write(saved_model.SerializeToString(deterministic=True))


def export_serving_model(
    model: tf_keras.Model,
    transform_layer,
    class_names: list[str],
    metadata: dict,
    export_dir: str,
    call_model: Callable[[tf.Tensor], tf.Tensor] | None = None,
) -> None:
    """Write the SavedModel with its three signatures and training metadata to export_dir.

    `transform_layer` maps {IMAGE_KEY: [batch] bytes} to transformed features; in the
    pipeline it is tft.TFTransformOutput.transform_features_layer(). `call_model`
    (transformed images -> probabilities, computed with `model`'s variables) replaces
    `model(images, training=False)`: the Trainer passes one built on the backbone's
    already-traced tf.function, so exporting does not trace the backbone a second time.
    """
    module = _ServingModule(model, transform_layer, list(class_names), call_model)
    tf.saved_model.save(module, export_dir, signatures=_signatures(module))
    crash_point("Trainer:export")  # SavedModel written; signature, metadata, warm-up not
    _mark_classify_signature(export_dir)
    write_training_metadata(export_dir, {**metadata, "class_names": list(class_names)})
    warmup.write_warmup_requests(export_dir)  # TF Serving replays these before serving
