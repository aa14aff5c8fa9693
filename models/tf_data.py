"""The Trainer's and the Tuner's input pipelines: raw examples -> (transformed image, label).

The Trainer reads the raw (ingested) examples and applies the Transform graph in its
input pipeline (Transform runs with materialize=False): decoding a JPEG is cheap next to
the backbone's forward pass, and it spares writing ~600 KB of float32 pixels per image.

Why tf.data's autotuner is off: with autotuning on (tf.data's default), every iterator
runs a "model thread" that re-optimises the pipeline at growing intervals, up to a
minute apart, and in TF 2.16 destroying the iterator waits for that thread's current
sleep to end. A backbone pass over a split is one long iteration, so its end stalled:
measured on this project's photos (1,198 at 224 px, ResNet50, 2 CPUs), the same pass's
iterator took 24.6 s to delete with autotuning on and 0.0 s with it off, at 20.9 and
22.1 images/s. These pipelines are short (read, decode and resize, prefetch), so TF's
default parallelism without the tuner loses nothing.
"""

from __future__ import annotations

import math

import tensorflow as tf
import tensorflow_transform as tft
from tfx.components.trainer.fn_args_utils import DataAccessor
from tfx_bsl.public import tfxio
from tfx_bsl.tfxio import dataset_util

from models import features


def without_autotune(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` with tf.data's autotuner (and its model thread) off."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def count_examples(file_pattern: list[str], data_accessor: DataAccessor, schema) -> int:
    """Records matching `file_pattern` (reads them, decodes no image: a fraction of a second
    per thousand photos)."""
    dataset = data_accessor.tf_dataset_factory(
        file_pattern, tfxio.TensorFlowDatasetOptions(batch_size=1024, num_epochs=1), schema
    )
    return int(
        dataset.reduce(
            tf.constant(0, tf.int64),
            lambda n, batch: n + tf.shape(batch[features.LABEL_KEY], out_type=tf.int64)[0],
        )
    )


def make_dataset(
    file_pattern: list[str],
    data_accessor: DataAccessor,
    tf_transform_output: tft.TFTransformOutput,
    batch_size: int,
    shuffle: bool,
    seed: int,
) -> tf.data.Dataset:
    """One pass over raw examples -> (transformed image batch, label batch).

    The dataset's length is set (tfxio's is unknown): over a dataset of unknown length,
    Keras' first epoch ends with a step that hits end-of-data and still counts one Adam
    iteration, so from the second epoch on the bias correction is off by one compared
    with the same data of known length (the cached features').
    """
    schema = tf_transform_output.raw_metadata.schema
    num_batches = math.ceil(count_examples(file_pattern, data_accessor, schema) / batch_size)
    dataset = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(
            batch_size=batch_size, shuffle=shuffle, shuffle_seed=seed, num_epochs=1
        ),
        schema,
    )
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(num_batches))
    return images_and_labels(dataset, tf_transform_output)


def images_and_labels(
    raw_batches: tf.data.Dataset, tf_transform_output: tft.TFTransformOutput
) -> tf.data.Dataset:
    """Batches of raw features -> (transformed image batch, label batch), through the
    Transform graph, prefetched and without tf.data's autotuner."""
    transform_layer = tf_transform_output.transform_features_layer()

    def transform(raw: dict) -> tuple[tf.Tensor, tf.Tensor]:
        transformed = transform_layer(raw)
        label = tf.reshape(transformed[features.LABEL_KEY], [-1])
        return transformed[features.TRANSFORMED_IMAGE_KEY], label

    dataset = raw_batches.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    return without_autotune(dataset.prefetch(tf.data.AUTOTUNE))


def serialized_examples(file_pattern: list[str], batch_size: int) -> tf.data.Dataset:
    """Batches of serialized tf.Examples in file order, read by the reader TFXIO uses: the
    bytes are those the Evaluator reads."""
    records = dataset_util.make_tf_record_dataset(
        file_pattern,
        batch_size,
        drop_final_batch=False,
        num_epochs=1,
        shuffle=False,
        shuffle_buffer_size=1,
        shuffle_seed=None,
    )
    return without_autotune(records)


def parsed_examples_dataset(
    records: tf.data.Dataset, tf_transform_output: tft.TFTransformOutput
) -> tf.data.Dataset:
    """(transformed image, label) batches of serialized-example batches, in their order."""
    raw_spec = tf_transform_output.raw_feature_spec()
    parsed = records.map(lambda serialized: tf.io.parse_example(serialized, raw_spec))
    return images_and_labels(parsed, tf_transform_output)
