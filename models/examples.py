"""The one tf.Example builder: ingest's records, warm-up requests and generated samples.

Every feature the project writes is a single bytes or int64 value, so a mapping of feature
key -> value says all there is; the keys come from models/features.py.
"""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf


def _feature(value: bytes | int) -> tf.train.Feature:
    if isinstance(value, bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    if isinstance(value, int):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    raise TypeError(f"a tf.Example feature here is bytes or int, got {type(value).__name__}")


def make_example(values: Mapping[str, bytes | int]) -> tf.train.Example:
    """A tf.Example with one single-value feature per key: bytes_list or int64_list."""
    return tf.train.Example(
        features=tf.train.Features(feature={key: _feature(v) for key, v in values.items()})
    )
