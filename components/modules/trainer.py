"""Trainer module: run_fn trains the head on top of the frozen backbone and exports.

The Trainer reads the raw (ingested) examples and applies the Transform graph in its
input pipeline (Transform runs with materialize=False): decoding a JPEG is cheap next
to the backbone's forward pass, and it spares writing ~600 KB of float32 pixels per
image to disk.
"""

from __future__ import annotations

import logging

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from components.modules import export, features, model
from components.modules.backbones import get_backbone
from components.modules.weights import log_loud_warning


def make_dataset(
    file_pattern: list[str],
    data_accessor: tfx.components.DataAccessor,
    tf_transform_output: tft.TFTransformOutput,
    batch_size: int,
    shuffle: bool,
    seed: int,
) -> tf.data.Dataset:
    """One pass over raw examples -> (transformed image batch, label batch)."""
    dataset = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(
            batch_size=batch_size, shuffle=shuffle, shuffle_seed=seed, num_epochs=1
        ),
        tf_transform_output.raw_metadata.schema,
    )
    transform_layer = tf_transform_output.transform_features_layer()

    def transform(raw: dict) -> tuple[tf.Tensor, tf.Tensor]:
        transformed = transform_layer(raw)
        label = tf.reshape(transformed[features.LABEL_KEY], [-1])
        return transformed[features.TRANSFORMED_IMAGE_KEY], label

    return dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    config = fn_args.custom_config
    weights_record = config["weights"]
    if not weights_record["pretrained"]:
        log_loud_warning(weights_record["warning"])
    tf_keras.utils.set_random_seed(config["seed"])
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)

    def dataset(files, shuffle):
        return make_dataset(
            files,
            fn_args.data_accessor,
            tf_transform_output,
            config["batch_size"],
            shuffle,
            config["seed"],
        )

    train_dataset = dataset(fn_args.train_files, shuffle=True)
    eval_dataset = dataset(fn_args.eval_files, shuffle=False)

    class_names = config["class_names"]
    backbone = model.build_backbone(config["backbone"], config["image_size"], weights_record)
    head = model.build_head(
        get_backbone(config["backbone"]).feature_dim,
        len(class_names),
        config["dropout"],
        config["seed"],
    )
    network = model.build_model(backbone, head, config["image_size"])
    model.compile_model(network, config["learning_rate"])
    history = network.fit(
        train_dataset,
        validation_data=eval_dataset,
        epochs=config["epochs"],
        callbacks=[tf_keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir)],
        verbose=2,
    )
    logging.info("Training history: %s", history.history)
    export.export_serving_model(
        network,
        tf_transform_output.transform_features_layer(),
        class_names,
        {
            "backbone": config["backbone"],
            "backbone_weights": weights_record,
            "image_size": config["image_size"],
            "epochs": config["epochs"],
            "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        },
        fn_args.serving_model_dir,
    )
