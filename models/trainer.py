"""Trainer module: run_fn trains the head on top of the frozen backbone and exports.

The Trainer reads the raw (ingested) examples and applies the Transform graph in its
input pipeline (tf_data.py). Training runs in phases:
1. frozen: only the head learns. By default the backbone runs once over the train and
   eval data and the head trains on the pooled features (feature_cache.FeatureSource),
   which gives the same head as the ordinary loop at a fraction of the cost. The features
   are kept under the pipeline root, keyed by everything that determines them, so a re-run
   that changes only head knobs runs no backbone pass at all. Augmentation changes the
   images every epoch, so with it on the ordinary loop runs instead.
2. fine-tuning (optional, FINE_TUNE_EPOCHS > 0): the top FINE_TUNE_BLOCKS blocks of the
   backbone are unfrozen (batch norm excepted) and the whole model trains on with a low
   learning rate, continuing the epoch count.

Then, while the backbone is still the one the features came from (no fine-tuning, float32),
the trained head predicts the eval split from its features and the predictions go into the
Model artifact for the Evaluator (stored_predictions.py, evaluator.py). The eval split plays
no part in training: this happens after it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras
from tfx.components.trainer.fn_args_utils import FnArgs

from models import (
    augmentation,
    export,
    feature_cache,
    ingest_report,
    model,
    stored_predictions,
    tf_data,
    tflite_export,
)
from models.feature_cache import DatasetSource, FeatureSource, dataset_of
from models.model import BackboneSpec
from models.options import TrainingOptions
from models.weights import log_loud_warning, weights_digest


def uses_cache(options: TrainingOptions) -> bool:
    """Whether the frozen phase trains on cached features: augmentation changes the images
    every epoch, so with it on the backbone must see each augmented image."""
    return options.cache_features and not augmentation.parse(options.augmentation)


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


def train_network(
    network: tf_keras.Model,
    train_dataset: tf.data.Dataset,
    eval_dataset: tf.data.Dataset,
    options: TrainingOptions,
    *,
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


def train_head_cached(
    source: FeatureSource,
    head: tf_keras.Model,
    train_dataset: DatasetSource,
    eval_dataset: DatasetSource,
    options: TrainingOptions,
    log_dir: str | None = None,
) -> dict:
    """Frozen phase on the backbone's features: at most one backbone pass, then `epochs`
    of the head alone."""
    caches = source.features({"train": train_dataset, "eval": eval_dataset})
    train_cache, eval_cache = caches["train"], caches["eval"]
    history = train_network(
        head,
        train_cache.dataset(options.batch_size, shuffle=options.shuffle, seed=options.seed),
        eval_cache.dataset(options.batch_size),
        options,
        learning_rate=options.learning_rate,
        initial_epoch=0,
        epochs=options.epochs,
        log_dir=log_dir,
    )
    return {
        **history,
        "cache_images_per_s": [train_cache.images_per_second],
        "cache_spilled": [float(train_cache.spill_path is not None)],
        # What a head-only re-run must keep at 0: images through the backbone here.
        "backbone_images": [float(sum(c.backbone_images for c in caches.values()))],
        "feature_cache_reused": [float(all(c.reused for c in caches.values()))],
        "feature_seconds": [float(sum(c.seconds for c in caches.values()))],
    }


def _append(history: dict, more: dict) -> dict:
    return {key: list(history.get(key, [])) + list(more.get(key, [])) for key in {*history, *more}}


def train(
    source: FeatureSource,
    head: tf_keras.Model,
    train_dataset: DatasetSource,
    eval_dataset: DatasetSource,
    options: TrainingOptions,
    log_dir: str | None = None,
    feature_train_dataset: DatasetSource | None = None,
) -> tuple[tf_keras.Model, dict]:
    """All phases; returns the full model (backbone + head) for export and the history.

    `train_dataset` yields (transformed image, label) batches, shuffled by the caller for
    the uncached paths; `eval_dataset` the same, unshuffled. `feature_train_dataset`
    (default: train_dataset) is what the backbone pass reads for the features: unshuffled,
    so stored features do not depend on the seed. Each dataset may be a function that
    builds it (once: pass a cached one), called only where the dataset is read.
    """
    backbone, spec = source.backbone, source.spec
    phases: dict[str, float] = {}
    start = time.perf_counter()
    if uses_cache(options):
        history = train_head_cached(
            source,
            head,
            train_dataset if feature_train_dataset is None else feature_train_dataset,
            eval_dataset,
            options,
            log_dir,
        )
        network = model.build_model(backbone, head, spec.image_size)
    else:
        if options.cache_features:
            logging.info(
                "Feature caching skipped: augmentation (%s) changes the images every epoch, "
                "so the backbone must see each augmented image.",
                options.augmentation,
            )
        augmenter = augmentation.build(options.augmentation, options.seed)
        train_dataset = augmentation.apply(dataset_of(train_dataset), augmenter)
        network = model.build_model(backbone, head, spec.image_size)
        history = train_network(
            network,
            train_dataset,
            dataset_of(eval_dataset),
            options,
            learning_rate=options.learning_rate,
            initial_epoch=0,
            epochs=options.epochs,
            log_dir=log_dir,
        )
    phases["frozen_seconds"] = time.perf_counter() - start

    if options.fine_tune_epochs > 0 and options.fine_tune_blocks > 0:
        start = time.perf_counter()
        unfrozen = model.unfreeze_top_blocks(backbone, spec.name, options.fine_tune_blocks)
        logging.info(
            "Fine-tuning the top %d blocks of %s (%d layers with weights, batch norm frozen) "
            "for %d epochs at learning rate %g",
            options.fine_tune_blocks,
            spec.name,
            len(unfrozen),
            options.fine_tune_epochs,
            options.fine_tune_learning_rate,
        )
        more = train_network(
            network,
            dataset_of(train_dataset),  # augmented already when augmentation is on
            dataset_of(eval_dataset),
            options,
            learning_rate=options.fine_tune_learning_rate,
            # The frozen phase may have stopped early: continue from where it ended.
            initial_epoch=len(history.get("loss", [])),
            epochs=options.fine_tune_epochs,
            log_dir=log_dir,
        )
        history = _append(history, more)
        phases["fine_tune_seconds"] = time.perf_counter() - start
    history.update({key: [value] for key, value in phases.items()})
    return network, history


def other_split_files(train_files: list[str], split: str) -> list[str]:
    """The file pattern of another split of the Examples artifact the Trainer reads (TFX
    lays splits out as `<uri>/Split-<name>/`)."""
    return [os.path.join(ingest_report.examples_uri_of(train_files[0]), f"Split-{split}", "*")]


def why_no_stored_predictions(
    options: TrainingOptions, backbone_changed: bool, evaluator_split: str
) -> str:
    """Why the eval predictions cannot come from the cached features ("" when they can)."""
    if not options.stored_eval_predictions:
        return "STORED_EVAL_PREDICTIONS=false"
    if not evaluator_split:
        return "no evaluator_split in the Trainer's custom_config"
    if backbone_changed:
        return "fine-tuning changed the backbone, so its cached features no longer apply"
    return ""


# The split name the Evaluator's examples are keyed under in the feature store.
EVALUATOR_SPLIT = "evaluator"


def store_eval_predictions(
    source: FeatureSource,
    head: tf_keras.Model,
    files: list[str],
    tf_transform_output: tft.TFTransformOutput,
    class_names: list[str],
    model_uri: str,
    batch_size: int,
) -> dict:
    """Predict the eval split (`files`, the source's EVALUATOR_SPLIT) with the trained head
    on the backbone's features (from the store when an earlier run computed them) and write
    them into the Model artifact for the Evaluator."""
    start = time.perf_counter()
    records = tf_data.serialized_examples(files, batch_size)
    cache = source.features(
        {EVALUATOR_SPLIT: lambda: tf_data.parsed_examples_dataset(records, tf_transform_output)}
    )[EVALUATOR_SPLIT]
    # The same records in the same order, without decoding a photo again.
    serialized = [record for batch in records for record in batch.numpy()]
    if len(serialized) != cache.num_examples:
        raise RuntimeError(
            f"{len(serialized)} eval examples but {cache.num_examples} cached features"
        )
    probabilities = head.predict(cache.dataset(batch_size).map(lambda f, _: f), verbose=0)
    path = stored_predictions.write(
        model_uri, stored_predictions.build(serialized, probabilities, class_names)
    )
    seconds = time.perf_counter() - start
    logging.info("Stored %d eval predictions in %s (%.1f s)", len(serialized), path, seconds)
    return {
        "count": len(serialized),
        "backbone_images": cache.backbone_images,
        "seconds": seconds,
        "reason": "",
    }


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What run_fn reads from TFX: custom_config merged with ImageExampleGen's report."""

    config: Mapping
    options: TrainingOptions
    spec: BackboneSpec
    class_names: list[str]
    evaluator_split: str  # the split the Evaluator scores ("" = none named)

    @classmethod
    def read(cls, fn_args: FnArgs) -> RunConfig:
        # Class names and training counts travel in ImageExampleGen's artifact (its ingest
        # report); custom_config holds them for ImportExampleGen's records.
        report = ingest_report.read_report(ingest_report.examples_uri_of(fn_args.train_files[0]))
        config = {**fn_args.custom_config, **ingest_report.class_config(report)}
        # TUNE=true: the Tuner's best head hyperparameters arrive through TFX's channel.
        options = TrainingOptions.from_config(config).with_hyperparameters(
            (fn_args.hyperparameters or {}).get("values")
        )
        spec = spec_of(config, options)
        if not spec.weights.pretrained:
            log_loud_warning(spec.weights.warning)
        return cls(
            config,
            options,
            spec,
            list(config["class_names"]),
            config.get("evaluator_split", ""),
        )


def spec_of(config: Mapping, options: TrainingOptions) -> BackboneSpec:
    """The backbone spec of the Trainer's / Tuner's custom_config and options."""
    return BackboneSpec.from_config(config, options.backbone_dtype, options.seed)


def _datasets(
    fn_args: FnArgs, run: RunConfig, tf_transform_output: tft.TFTransformOutput
) -> tuple[DatasetSource, DatasetSource, DatasetSource]:
    """The Trainer's (image, label) datasets: train (shuffled), eval, and train in file
    order for the backbone pass (stored features do not depend on SEED). Each is built
    where it is read, once: not at all when the split's features come from the store."""

    def dataset(files: list[str], shuffle: bool) -> Callable[[], tf.data.Dataset]:
        return functools.cache(
            lambda: tf_data.make_dataset(
                files,
                fn_args.data_accessor,
                tf_transform_output,
                run.options.batch_size,
                shuffle,
                run.options.seed,
            )
        )

    return (
        dataset(fn_args.train_files, shuffle=run.options.shuffle),
        dataset(fn_args.eval_files, shuffle=False),
        dataset(fn_args.train_files, shuffle=False),
    )


def _export_metadata(
    run: RunConfig, history: dict, source: FeatureSource, changed: bool, stored: dict
) -> dict:
    options = run.options
    return {
        "backbone": run.spec.name,
        "backbone_weights": run.spec.weights.as_dict(),
        # False: the exported backbone is bit-identical to the loaded weights (the file's,
        # or the random ones); True: training (fine-tuning) changed them.
        "backbone_weights_changed": changed,
        "image_size": run.spec.image_size,
        "epochs": options.epochs,
        "training_options": dataclasses.asdict(options),
        "history": {k: [float(v) for v in vs] for k, vs in history.items()},
        "feature_cache": {
            "used": uses_cache(options),
            "keys": {split: key.digest for split, key in source.keys.items()},
            "reused": bool(history.get("feature_cache_reused", [0.0])[-1]),
            "backbone_images": int(history.get("backbone_images", [0.0])[-1]),
            "size_bytes": feature_cache.store_size_bytes(options.feature_cache_dir)
            if options.feature_cache_dir
            else 0,
        },
        # The eval predictions the Evaluator reuses (stored_predictions.py), or why none.
        "stored_eval_predictions": stored,
    }


def _feature_source(
    fn_args: FnArgs, run: RunConfig, backbone: tf_keras.Model, work_dir: str
) -> FeatureSource:
    """The run's features: train and eval (the cached phase) and the Evaluator's split (the
    stored predictions), each keyed by its records in the store when one is configured."""
    split_files = {"train": fn_args.train_files, "eval": fn_args.eval_files}
    if run.evaluator_split:
        split_files[EVALUATOR_SPLIT] = other_split_files(fn_args.train_files, run.evaluator_split)
    return FeatureSource(
        run.spec,
        backbone,
        run.options,
        work_dir,
        split_files=split_files,
        transform_graph_dir=fn_args.transform_output,
    )


def _float32_source(fn_args: FnArgs, run: RunConfig, source: FeatureSource) -> FeatureSource:
    """The source of the eval split's features as the served model computes them: float32.

    With BACKBONE_DTYPE=bfloat16 the head trains on bfloat16 features, but the exported
    model runs the backbone in float32, and the stored predictions must be its answers (the
    Evaluator checks them against it). So the eval split gets a float32 pass on the same
    backbone, keyed as float32 in the store: a head-only re-run reuses it, and the export
    reuses its trace. Without this the Evaluator ran both models over every eval photo on
    every bfloat16 run (ResNet50's re-run: Evaluator 175 s against 23 s).
    """
    if run.spec.dtype == "float32":
        return source
    spec = dataclasses.replace(run.spec, dtype="float32")
    return FeatureSource(
        spec,
        source.backbone,
        run.options,
        source.work_dir,
        split_files={EVALUATOR_SPLIT: other_split_files(fn_args.train_files, run.evaluator_split)},
        transform_graph_dir=fn_args.transform_output,
    )


def _stored_predictions(
    fn_args: FnArgs,
    run: RunConfig,
    source: FeatureSource,
    head: tf_keras.Model,
    tf_transform_output: tft.TFTransformOutput,
    backbone_changed: bool,
) -> dict:
    """The eval split's predictions for the Evaluator, or why there are none."""
    reason = why_no_stored_predictions(run.options, backbone_changed, run.evaluator_split)
    if reason:
        return {"count": 0, "reason": reason}
    return store_eval_predictions(
        _float32_source(fn_args, run, source),
        head,
        other_split_files(fn_args.train_files, run.evaluator_split),
        tf_transform_output,
        run.class_names,
        os.path.dirname(fn_args.serving_model_dir),  # the Model artifact's uri
        run.options.batch_size,
    )


@contextlib.contextmanager
def scratch_dir(parent: str) -> Iterator[str]:
    """A fresh folder under parent, removed afterwards, through tf.io.gfile: the run dir
    is in a bucket on Vertex (tempfile.TemporaryDirectory would os.mkdir "gs:/...")."""
    path = os.path.join(parent, f".scratch-{uuid.uuid4().hex}")
    tf.io.gfile.makedirs(path)
    try:
        yield path
    finally:
        if tf.io.gfile.exists(path):
            tf.io.gfile.rmtree(path)


def run_fn(fn_args: FnArgs) -> None:
    run = RunConfig.read(fn_args)
    options = run.options
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    backbone = run.spec.build()  # built once: the feature pass, the model and the export
    loaded_digest = weights_digest(backbone)
    head = model.build_head(
        run.spec.feature_dim, len(run.class_names), options.dropout, options.seed
    )
    # Spill files are scratch: a folder under the run dir, removed after training.
    with scratch_dir(fn_args.model_run_dir) as work_dir:
        source = _feature_source(fn_args, run, backbone, work_dir)
        # 1. Train: the frozen phase (on features), then the optional fine-tuning.
        train_dataset, eval_dataset, feature_dataset = _datasets(fn_args, run, tf_transform_output)
        network, history = train(
            source,
            head,
            train_dataset,
            eval_dataset,
            options,
            fn_args.model_run_dir,
            feature_train_dataset=feature_dataset,
        )
        logging.info("Training history: %s", history)
        # 2. The eval split's predictions for the Evaluator, while the features still apply.
        backbone_changed = weights_digest(backbone) != loaded_digest
        stored = _stored_predictions(
            fn_args, run, source, head, tf_transform_output, backbone_changed
        )
    # 3. Export, reusing the feature pass's trace of the backbone.
    start = time.perf_counter()
    export.export_serving_model(
        network,
        tf_transform_output.transform_features_layer(),
        run.class_names,
        _export_metadata(run, history, source, backbone_changed, stored),
        fn_args.serving_model_dir,
        call_model=source.traced_model_call(head),
    )
    logging.info("Exported in %.1f s", time.perf_counter() - start)
    if run.config.get("tflite"):  # model.tflite and model_int8.tflite beside the SavedModel
        tflite_export.export_tflite_models(
            network,
            run.spec.name,
            run.spec.image_size,
            run.class_names,
            fn_args.train_files,
            tflite_export.tflite_dir(os.path.dirname(fn_args.serving_model_dir)),
        )
