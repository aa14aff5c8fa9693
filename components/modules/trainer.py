"""Trainer module: run_fn trains the head on top of the frozen backbone and exports.

The Trainer reads the raw (ingested) examples and applies the Transform graph in its
input pipeline (Transform runs with materialize=False): decoding a JPEG is cheap next
to the backbone's forward pass, and it spares writing ~600 KB of float32 pixels per
image to disk.

Training runs in phases:
1. frozen: only the head learns. By default the backbone runs once over the train and
   eval data and the head trains on the cached pooled features (feature_cache.py), which
   gives the same head as the ordinary loop at a fraction of the cost. Augmentation
   changes the images every epoch, so with it on the ordinary loop runs instead.
2. fine-tuning (optional, FINE_TUNE_EPOCHS > 0): the top FINE_TUNE_BLOCKS blocks of the
   backbone are unfrozen (batch norm excepted) and the whole model trains on with a low
   learning rate, continuing the epoch count.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from components.modules import augmentation, export, feature_cache, features, ingest_report, model
from components.modules.backbones import get_backbone
from components.modules.weights import log_loud_warning, weights_digest


@dataclasses.dataclass(frozen=True)
class TrainingOptions:
    """The Trainer's knobs (custom_config); defaults keep the seed's behaviour."""

    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    dropout: float = 0.2
    seed: int = 42
    cache_features: bool = True  # frozen phase on cached backbone features
    cache_memory_mb: int = 1024  # feature cache held in RAM up to this, else spilled to disk
    augmentation: str = ""  # e.g. "flip,rotation,zoom,contrast"; train data only
    fine_tune_blocks: int = 0  # top backbone blocks unfrozen in the fine-tuning phase
    fine_tune_epochs: int = 0  # 0 = no fine-tuning phase
    fine_tune_learning_rate: float = 1e-5
    class_weights: bool = False  # weight the loss by inverse training class frequency
    class_counts: tuple[int, ...] = ()  # training examples per class (for class_weights)
    early_stopping_patience: int = 0  # 0 = off; else stop on val_loss, restore best weights
    label_smoothing: float = 0.0
    shuffle: bool = True  # shuffle the training data (tests turn it off to compare paths)

    @classmethod
    def from_config(cls, config: Mapping) -> TrainingOptions:
        names = {field.name for field in dataclasses.fields(cls)}
        values = {k: v for k, v in config.items() if k in names and v is not None}
        if "class_counts" in values:
            values["class_counts"] = tuple(int(c) for c in values["class_counts"])
        return cls(**values)

    @property
    def uses_cache(self) -> bool:
        return self.cache_features and not augmentation.parse(self.augmentation)

    def class_weight(self, num_classes: int) -> dict[int, float] | None:
        if not self.class_weights:
            return None
        if len(self.class_counts) != num_classes:
            raise ValueError(
                f"CLASS_WEIGHTS needs class_counts for {num_classes} classes, "
                f"got {list(self.class_counts)}."
            )
        return class_weights_from_counts(self.class_counts)


def class_weights_from_counts(counts: Sequence[int]) -> dict[int, float]:
    """Inverse-frequency ("balanced") weights: total / (classes * count).

    A balanced dataset gets weight 1 everywhere; a class with half the average count
    gets 2, so every class contributes equally to the loss. Classes without training
    examples get 0 and are not counted in `classes`.
    """
    total = sum(counts)
    present = sum(1 for count in counts if count)
    return {
        index: (total / (present * count) if count else 0.0) for index, count in enumerate(counts)
    }


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


def _callbacks(options: TrainingOptions, log_dir: str | None) -> list:
    callbacks = []
    if log_dir:
        callbacks.append(tf_keras.callbacks.TensorBoard(log_dir=log_dir))
    if options.early_stopping_patience > 0:
        callbacks.append(
            tf_keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=options.early_stopping_patience,
                restore_best_weights=True,
            )
        )
    return callbacks


def train_head_cached(
    backbone: tf_keras.Model,
    head: tf_keras.Model,
    image_size: int,
    train_dataset: tf.data.Dataset,
    eval_dataset: tf.data.Dataset,
    options: TrainingOptions,
    spill_dir: str,
    log_dir: str | None = None,
) -> dict:
    """Frozen phase on cached features: one backbone pass, then `epochs` of the head alone."""
    extractor = model.build_feature_extractor(backbone, image_size)
    budget = options.cache_memory_mb * 1024 * 1024
    train_cache = feature_cache.cache_features(extractor, train_dataset, budget, spill_dir, "train")
    eval_cache = feature_cache.cache_features(extractor, eval_dataset, budget, spill_dir, "eval")
    history = train_network(
        head,
        train_cache.dataset(options.batch_size, shuffle=options.shuffle, seed=options.seed),
        eval_cache.dataset(options.batch_size),
        options,
        options.learning_rate,
        initial_epoch=0,
        epochs=options.epochs,
        log_dir=log_dir,
    )
    return {
        **history,
        "cache_images_per_s": [train_cache.images_per_second],
        "cache_spilled": [float(train_cache.spill_path is not None)],
    }


def train_network(
    network: tf_keras.Model,
    train_dataset: tf.data.Dataset,
    eval_dataset: tf.data.Dataset,
    options: TrainingOptions,
    learning_rate: float,
    initial_epoch: int,
    epochs: int,
    log_dir: str | None = None,
) -> dict:
    """Compile and fit `network`; with the full model, every epoch runs the backbone over
    every image (the ordinary loop); the cached phase passes the head alone."""
    num_classes = int(network.output_shape[-1])
    # (Re)compiling is what makes Keras pick up changed `trainable` flags.
    model.compile_model(network, learning_rate, num_classes, options.label_smoothing)
    history = network.fit(
        train_dataset,
        validation_data=eval_dataset,
        initial_epoch=initial_epoch,
        epochs=initial_epoch + epochs,
        class_weight=options.class_weight(num_classes),
        callbacks=_callbacks(options, log_dir),
        verbose=2,
    )
    return history.history


def _append(history: dict, more: dict) -> dict:
    return {key: list(history.get(key, [])) + list(more.get(key, [])) for key in {*history, *more}}


def train(
    backbone_name: str,
    backbone: tf_keras.Model,
    head: tf_keras.Model,
    image_size: int,
    train_dataset: tf.data.Dataset,
    eval_dataset: tf.data.Dataset,
    options: TrainingOptions,
    work_dir: str,
    log_dir: str | None = None,
) -> tuple[tf_keras.Model, dict]:
    """All phases; returns the full model (backbone + head) for export and the history.

    `train_dataset` yields (transformed image, label) batches, shuffled by the caller for
    the uncached paths; `eval_dataset` the same, unshuffled.
    """
    phases: dict[str, float] = {}
    start = time.perf_counter()
    if options.uses_cache:
        history = train_head_cached(
            backbone, head, image_size, train_dataset, eval_dataset, options, work_dir, log_dir
        )
        network = model.build_model(backbone, head, image_size)
    else:
        if options.cache_features:
            logging.info(
                "Feature caching skipped: augmentation (%s) changes the images every epoch, "
                "so the backbone must see each augmented image.",
                options.augmentation,
            )
        augmenter = augmentation.build(options.augmentation, options.seed)
        train_dataset = augmentation.apply(train_dataset, augmenter)
        network = model.build_model(backbone, head, image_size)
        history = train_network(
            network,
            train_dataset,
            eval_dataset,
            options,
            options.learning_rate,
            0,
            options.epochs,
            log_dir,
        )
    phases["frozen_seconds"] = time.perf_counter() - start

    if options.fine_tune_epochs > 0 and options.fine_tune_blocks > 0:
        start = time.perf_counter()
        unfrozen = model.unfreeze_top_blocks(backbone, backbone_name, options.fine_tune_blocks)
        logging.info(
            "Fine-tuning the top %d blocks of %s (%d layers with weights, batch norm frozen) "
            "for %d epochs at learning rate %g",
            options.fine_tune_blocks,
            backbone_name,
            len(unfrozen),
            options.fine_tune_epochs,
            options.fine_tune_learning_rate,
        )
        more = train_network(
            network,
            train_dataset,  # augmented already when augmentation is on
            eval_dataset,
            options,
            options.fine_tune_learning_rate,
            # The frozen phase may have stopped early: continue from where it ended.
            len(history.get("loss", [])),
            options.fine_tune_epochs,
            log_dir,
        )
        history = _append(history, more)
        phases["fine_tune_seconds"] = time.perf_counter() - start
    history.update({key: [value] for key, value in phases.items()})
    return network, history


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    # Class names and training counts travel in ImageExampleGen's artifact (its ingest
    # report); custom_config holds them for ImportExampleGen's records.
    report = ingest_report.read_report(ingest_report.examples_uri_of(fn_args.train_files[0]))
    config = {**fn_args.custom_config, **ingest_report.class_config(report)}
    weights_record = config["weights"]
    if not weights_record["pretrained"]:
        log_loud_warning(weights_record["warning"])
    options = TrainingOptions.from_config(config)
    tf_keras.utils.set_random_seed(options.seed)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)

    def dataset(files, shuffle):
        return make_dataset(
            files,
            fn_args.data_accessor,
            tf_transform_output,
            options.batch_size,
            shuffle,
            options.seed,
        )

    # Shuffled even for the cache pass (harmless there), as fine-tuning reuses it.
    train_dataset = dataset(fn_args.train_files, shuffle=options.shuffle)
    eval_dataset = dataset(fn_args.eval_files, shuffle=False)

    class_names = config["class_names"]
    backbone = model.build_backbone(config["backbone"], config["image_size"], weights_record)
    loaded_digest = weights_digest(backbone)
    head = model.build_head(
        get_backbone(config["backbone"]).feature_dim,
        len(class_names),
        options.dropout,
        options.seed,
    )
    # Spill files are scratch: a temp dir under the run dir, removed after training.
    os.makedirs(fn_args.model_run_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=fn_args.model_run_dir) as work_dir:
        network, history = train(
            config["backbone"],
            backbone,
            head,
            config["image_size"],
            train_dataset,
            eval_dataset,
            options,
            work_dir,
            fn_args.model_run_dir,
        )
    logging.info("Training history: %s", history)
    export.export_serving_model(
        network,
        tf_transform_output.transform_features_layer(),
        class_names,
        {
            "backbone": config["backbone"],
            "backbone_weights": weights_record,
            # False: the exported backbone is bit-identical to the loaded weights (the file's,
            # or the random ones); True: training (fine-tuning) changed them.
            "backbone_weights_changed": weights_digest(backbone) != loaded_digest,
            "image_size": config["image_size"],
            "epochs": options.epochs,
            "training_options": dataclasses.asdict(options),
            "history": {k: [float(v) for v in vs] for k, vs in history.items()},
        },
        fn_args.serving_model_dir,
    )
