"""Run a frozen backbone once over a dataset and keep its pooled features.

Why: with a frozen backbone, the features of an image never change, yet an ordinary
Keras loop recomputes the backbone's forward pass (the whole cost of training on a CPU)
for every image in every epoch. Computing them once makes E epochs cost about one
forward pass plus E passes of a tiny dense head.

Features are streamed batch by batch (memory bounded by one batch of images) into RAM up
to a byte budget; past it, everything is spilled to a TFRecord file and read back from
disk, so a dataset larger than RAM still trains.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time

import numpy as np
import tensorflow as tf
import tf_keras

SPILL_FILE = "feature_cache.tfrecord"


@dataclasses.dataclass
class FeatureCache:
    """Pooled features and labels of one dataset, in memory or in a spill file."""

    num_examples: int
    feature_dim: int
    seconds: float  # wall time of the single backbone pass
    features: np.ndarray | None = None  # float32 [N, feature_dim] when in memory
    labels: np.ndarray | None = None  # int64 [N]
    spill_path: str | None = None  # TFRecord of (features, labels) batches otherwise

    @property
    def images_per_second(self) -> float:
        return self.num_examples / self.seconds if self.seconds else 0.0

    def dataset(self, batch_size: int, shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
        """(features [B, D], labels [B]) batches; reshuffled every epoch when shuffle."""
        if self.spill_path is None:
            dataset = tf.data.Dataset.from_tensor_slices((self.features, self.labels))
        else:
            dataset = tf.data.TFRecordDataset(self.spill_path).map(
                self._parse_record, num_parallel_calls=tf.data.AUTOTUNE
            )
            dataset = dataset.unbatch()
        if shuffle:
            # In memory the buffer holds indices into the cached array; from a spill file it
            # holds feature rows, so bound it (a file shuffle is approximate, like tfxio's).
            buffer = self.num_examples if self.spill_path is None else min(self.num_examples, 8192)
            dataset = dataset.shuffle(max(buffer, 1), seed=seed, reshuffle_each_iteration=True)
        return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def _parse_record(self, record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        parsed = tf.io.parse_single_example(
            record,
            {
                "features": tf.io.FixedLenFeature([], tf.string),
                "labels": tf.io.FixedLenFeature([], tf.string),
            },
        )
        features = tf.io.parse_tensor(parsed["features"], tf.float32)
        labels = tf.io.parse_tensor(parsed["labels"], tf.int64)
        return tf.reshape(features, [-1, self.feature_dim]), tf.reshape(labels, [-1])


def _record(features: np.ndarray, labels: np.ndarray) -> bytes:
    def as_bytes_feature(array: np.ndarray) -> tf.train.Feature:
        serialized = tf.io.serialize_tensor(tf.convert_to_tensor(array)).numpy()
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[serialized]))

    example = tf.train.Example(
        features=tf.train.Features(
            feature={"features": as_bytes_feature(features), "labels": as_bytes_feature(labels)}
        )
    )
    return example.SerializeToString()


def _extract_function(extractor: tf_keras.Model):
    """extractor(images, training=False) as a tf.function traced once per extractor.

    Kept on the extractor so the train and eval passes share one trace (tracing ResNet50
    costs seconds); the batch dimension is None so the last, smaller batch reuses it.
    """
    extract = getattr(extractor, "_feature_cache_extract", None)
    if extract is None:
        spec = tf.TensorSpec([None, *extractor.input_shape[1:]], tf.float32)
        # training=False: the backbone's batch norm stays in inference mode.
        extract = tf.function(
            lambda images: extractor(images, training=False), input_signature=[spec]
        )
        extractor._feature_cache_extract = extract
    return extract


def cache_features(
    extractor: tf_keras.Model,
    dataset: tf.data.Dataset,
    memory_budget_bytes: int,
    spill_dir: str,
    name: str = "train",
) -> FeatureCache:
    """One pass of `extractor` (image -> pooled features) over (image, label) batches."""
    feature_dim = int(extractor.output_shape[-1])

    extract = _extract_function(extractor)
    held_features: list[np.ndarray] = []
    held_labels: list[np.ndarray] = []
    held_bytes = 0
    writer = None
    spill_path = None
    count = 0
    start = time.perf_counter()
    for images, labels in dataset:
        batch_features = extract(images).numpy().astype(np.float32, copy=False)
        batch_labels = labels.numpy().astype(np.int64).reshape(-1)
        count += len(batch_labels)
        if writer is None:
            held_features.append(batch_features)
            held_labels.append(batch_labels)
            held_bytes += batch_features.nbytes + batch_labels.nbytes
            if held_bytes > memory_budget_bytes:
                os.makedirs(spill_dir, exist_ok=True)
                spill_path = os.path.join(spill_dir, f"{name}_{SPILL_FILE}")
                logging.info(
                    "Feature cache %s exceeds %d bytes in memory: spilling to %s",
                    name,
                    memory_budget_bytes,
                    spill_path,
                )
                writer = tf.io.TFRecordWriter(spill_path)
                for held in zip(held_features, held_labels, strict=True):
                    writer.write(_record(*held))
                held_features, held_labels = [], []
        else:
            writer.write(_record(batch_features, batch_labels))
    seconds = time.perf_counter() - start
    if writer is not None:
        writer.close()
        cache = FeatureCache(count, feature_dim, seconds, spill_path=spill_path)
    else:
        empty = np.zeros((0, feature_dim), np.float32)
        cache = FeatureCache(
            count,
            feature_dim,
            seconds,
            features=np.concatenate(held_features) if held_features else empty,
            labels=np.concatenate(held_labels) if held_labels else np.zeros(0, np.int64),
        )
    logging.info(
        "Cached %d %s features (dim %d) in %.1f s: %.1f images/s, %s",
        count,
        name,
        feature_dim,
        seconds,
        cache.images_per_second,
        "in memory" if writer is None else f"spilled to {spill_path}",
    )
    return cache
