"""tf.data options shared by the Trainer's and the Tuner's input pipelines.

Why: with autotuning on (tf.data's default), every iterator runs a "model thread" that
re-optimises the pipeline at growing intervals, up to a minute apart, and in TF 2.16
destroying the iterator waits for that thread's current sleep to end. A backbone pass
over a split is one long iteration, so its end stalled: measured on this project's
photos (1,198 at 224 px, ResNet50, 2 CPUs), the same pass's iterator took 24.6 s to
delete with autotuning on and 0.0 s with it off, at 20.9 and 22.1 images/s. These
pipelines are short (read, decode and resize, prefetch), so TF's default parallelism
without the tuner loses nothing.
"""

from __future__ import annotations

import tensorflow as tf


def without_autotune(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` with tf.data's autotuner (and its model thread) off."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)
