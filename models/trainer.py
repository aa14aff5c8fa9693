"""Trainer module: run_fn trains the head on top of the frozen backbone and exports.

The Trainer reads the raw (ingested) examples and applies the Transform graph in its
input pipeline (Transform runs with materialize=False): decoding a JPEG is cheap next
to the backbone's forward pass, and it spares writing ~600 KB of float32 pixels per
image to disk.

Training runs in phases:
1. frozen: only the head learns. By default the backbone runs once over the train and
   eval data and the head trains on the cached pooled features (feature_cache.py), which
   gives the same head as the ordinary loop at a fraction of the cost. The features are
   kept under the pipeline root, keyed by everything that determines them, so a re-run
   that changes only head knobs runs no backbone pass at all. Augmentation changes the
   images every epoch, so with it on the ordinary loop runs instead.
2. fine-tuning (optional, FINE_TUNE_EPOCHS > 0): the top FINE_TUNE_BLOCKS blocks of the
   backbone are unfrozen (batch norm excepted) and the whole model trains on with a low
   learning rate, continuing the epoch count.

Then, while the backbone is still the one the features came from (no fine-tuning, float32),
the trained head predicts the eval split from its cached features and the predictions go
into the Model artifact for the Evaluator (stored_predictions.py, evaluator.py). The eval
split plays no part in training: this happens after it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import tempfile
import time
import weakref
from collections.abc import Callable, Mapping

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras
from tfx.components.trainer.fn_args_utils import DataAccessor, FnArgs
from tfx_bsl.public import tfxio
from tfx_bsl.tfxio import dataset_util

from models import (
    augmentation,
    export,
    feature_cache,
    features,
    ingest_report,
    model,
    stored_predictions,
    tf_data,
    tflite_export,
)
from models.backbones import get_backbone
from models.feature_cache import DatasetSource, dataset_of
from models.options import TrainingOptions
from models.weights import WeightsRecord, log_loud_warning, weights_digest


def uses_cache(options: TrainingOptions) -> bool:
    """Whether the frozen phase trains on cached features: augmentation changes the images
    every epoch, so with it on the backbone must see each augmented image."""
    return options.cache_features and not augmentation.parse(options.augmentation)


def count_examples(
    file_pattern: list[str],
    data_accessor: DataAccessor,
    schema,
) -> int:
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
    return _images_and_labels(dataset, tf_transform_output)


def _images_and_labels(
    raw_batches: tf.data.Dataset, tf_transform_output: tft.TFTransformOutput
) -> tf.data.Dataset:
    """Batches of raw features -> (transformed image batch, label batch), through the
    Transform graph, prefetched and without tf.data's autotuner (tf_data.py)."""
    transform_layer = tf_transform_output.transform_features_layer()

    def transform(raw: dict) -> tuple[tf.Tensor, tf.Tensor]:
        transformed = transform_layer(raw)
        label = tf.reshape(transformed[features.LABEL_KEY], [-1])
        return transformed[features.TRANSFORMED_IMAGE_KEY], label

    dataset = raw_batches.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    return tf_data.without_autotune(dataset.prefetch(tf.data.AUTOTUNE))


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


def cache_keys(
    split_files: Mapping[str, list[str]],
    transform_output_dir: str,
    backbone_name: str,
    weights_record: WeightsRecord,
    image_size: int,
    options: TrainingOptions,
) -> dict[str, feature_cache.CacheKey]:
    """split -> the key of its cached features (feature_cache.CacheKey): what determines
    them, nothing else, so head knobs (learning rate, epochs, batch size, ...) reuse them."""
    transform_fn_dir = tft.TFTransformOutput(transform_output_dir).transform_savedmodel_dir
    transform_sha256 = feature_cache.sha256_of_dir(transform_fn_dir)
    # Random weights are drawn from the seed (run_fn seeds before building the backbone).
    weights = weights_record.sha256 or f"random-seed-{options.seed}"
    return {
        split: feature_cache.CacheKey(
            examples_sha256=feature_cache.sha256_of_patterns(files),
            transform_graph_sha256=transform_sha256,
            backbone=backbone_name,
            weights=weights,
            image_size=int(image_size),
            compute_dtype=options.backbone_dtype,
        )
        for split, files in split_files.items()
    }


# backbone -> {(image size, dtype): feature extractor}; weak, so it dies with the backbone.
_EXTRACTORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def feature_extractor(
    backbone: tf_keras.Model, backbone_name: str, image_size: int, dtype: str
) -> tf_keras.Model:
    """The backbone's image -> pooled features model: one per (backbone object, image size,
    dtype), so every split (and the stored eval predictions) shares its trace."""
    extractors = _EXTRACTORS.setdefault(backbone, {})
    if (image_size, dtype) not in extractors:
        extractors[(image_size, dtype)] = model.build_feature_extractor(
            backbone, image_size, dtype, backbone_name
        )
    return extractors[(image_size, dtype)]


def head_features(
    backbone: tf_keras.Model | Callable[[], tf_keras.Model],
    backbone_name: str,
    image_size: int,
    datasets: Mapping[str, DatasetSource],
    options: TrainingOptions,
    work_dir: str,
    keys: Mapping[str, feature_cache.CacheKey] | None = None,
) -> dict[str, feature_cache.FeatureCache]:
    """split -> pooled features of `datasets[split]`: from the store under
    options.feature_cache_dir when `keys` are given and an earlier run (or the Tuner)
    computed them, else one backbone pass. `backbone` and the datasets may be functions
    building them: then they are built only on a miss."""
    budget = options.cache_memory_mb * 1024 * 1024
    built: list[tf_keras.Model] = []

    def get_extractor() -> tf_keras.Model:
        if not built:  # on the first miss only
            network = backbone if isinstance(backbone, tf_keras.Model) else backbone()
            built.append(
                feature_extractor(network, backbone_name, image_size, options.backbone_dtype)
            )
        return built[0]

    caches = {}
    for split, dataset in datasets.items():
        if keys and options.feature_cache_dir:
            caches[split] = feature_cache.cached_features(
                options.feature_cache_dir, keys[split], split, get_extractor, dataset, budget
            )
        else:  # no key: scratch features for this run only
            path = os.path.join(work_dir, f"{split}{feature_cache.DATA_SUFFIX}")
            caches[split] = feature_cache.cache_features(
                get_extractor(), dataset_of(dataset), budget, path
            )
    return caches


def train_head_cached(
    backbone: tf_keras.Model,
    backbone_name: str,
    head: tf_keras.Model,
    image_size: int,
    train_dataset: DatasetSource,
    eval_dataset: DatasetSource,
    options: TrainingOptions,
    work_dir: str,
    log_dir: str | None = None,
    keys: Mapping[str, feature_cache.CacheKey] | None = None,
) -> dict:
    """Frozen phase on cached features: at most one backbone pass, then `epochs` of the
    head alone."""
    caches = head_features(
        backbone,
        backbone_name,
        image_size,
        {"train": train_dataset, "eval": eval_dataset},
        options,
        work_dir,
        keys,
    )
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


def _append(history: dict, more: dict) -> dict:
    return {key: list(history.get(key, [])) + list(more.get(key, [])) for key in {*history, *more}}


def train(
    backbone_name: str,
    backbone: tf_keras.Model,
    head: tf_keras.Model,
    image_size: int,
    train_dataset: DatasetSource,
    eval_dataset: DatasetSource,
    options: TrainingOptions,
    work_dir: str,
    log_dir: str | None = None,
    cache_keys: Mapping[str, feature_cache.CacheKey] | None = None,
    feature_train_dataset: DatasetSource | None = None,
) -> tuple[tf_keras.Model, dict]:
    """All phases; returns the full model (backbone + head) for export and the history.

    `train_dataset` yields (transformed image, label) batches, shuffled by the caller for
    the uncached paths; `eval_dataset` the same, unshuffled. `feature_train_dataset`
    (default: train_dataset) is what the backbone pass reads for the cached features:
    unshuffled, so stored features do not depend on the seed. With `cache_keys` and
    options.feature_cache_dir, cached features persist and are reused across runs. Each
    dataset may be a function that builds it (once: pass a cached one), called only where
    the dataset is read.
    """
    phases: dict[str, float] = {}
    start = time.perf_counter()
    if uses_cache(options):
        history = train_head_cached(
            backbone,
            backbone_name,
            head,
            image_size,
            train_dataset if feature_train_dataset is None else feature_train_dataset,
            eval_dataset,
            options,
            work_dir,
            log_dir,
            cache_keys,
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
        train_dataset = augmentation.apply(dataset_of(train_dataset), augmenter)
        network = model.build_model(backbone, head, image_size)
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
    return tf_data.without_autotune(records)


def parsed_examples_dataset(
    records: tf.data.Dataset, tf_transform_output: tft.TFTransformOutput
) -> tf.data.Dataset:
    """(transformed image, label) batches of serialized-example batches, in their order."""
    raw_spec = tf_transform_output.raw_feature_spec()
    parsed = records.map(lambda serialized: tf.io.parse_example(serialized, raw_spec))
    return _images_and_labels(parsed, tf_transform_output)


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
    if options.backbone_dtype != "float32":
        return f"the features are {options.backbone_dtype}, the served model is float32"
    return ""


def store_eval_predictions(
    files: list[str],
    tf_transform_output: tft.TFTransformOutput,
    backbone: tf_keras.Model,
    head: tf_keras.Model,
    config: Mapping,
    options: TrainingOptions,
    keys: Mapping[str, feature_cache.CacheKey] | None,
    model_uri: str,
    work_dir: str,
) -> dict:
    """Predict the eval split (`files`) with the trained head on the backbone's features
    (from the store when an earlier run computed them) and write them into the Model
    artifact for the Evaluator. The eval split plays no part in training: this runs after it."""
    start = time.perf_counter()
    records = serialized_examples(files, options.batch_size)
    cache = head_features(
        backbone,
        config["backbone"],
        config["image_size"],
        {"evaluator": lambda: parsed_examples_dataset(records, tf_transform_output)},
        options,
        work_dir,
        keys,
    )["evaluator"]
    # The same records in the same order, without decoding a photo again.
    serialized = [record for batch in records for record in batch.numpy()]
    if len(serialized) != cache.num_examples:
        raise RuntimeError(
            f"{len(serialized)} eval examples but {cache.num_examples} cached features"
        )
    probabilities = head.predict(cache.dataset(options.batch_size).map(lambda f, _: f), verbose=0)
    path = stored_predictions.write(
        model_uri, stored_predictions.build(serialized, probabilities, config["class_names"])
    )
    seconds = time.perf_counter() - start
    logging.info("Stored %d eval predictions in %s (%.1f s)", len(serialized), path, seconds)
    return {
        "count": len(serialized),
        "backbone_images": cache.backbone_images,
        "seconds": seconds,
        "reason": "",
    }


def run_fn(fn_args: FnArgs) -> None:
    # Class names and training counts travel in ImageExampleGen's artifact (its ingest
    # report); custom_config holds them for ImportExampleGen's records.
    report = ingest_report.read_report(ingest_report.examples_uri_of(fn_args.train_files[0]))
    config = {**fn_args.custom_config, **ingest_report.class_config(report)}
    weights_record = WeightsRecord.from_dict(config["weights"])
    if not weights_record.pretrained:
        log_loud_warning(weights_record.warning)
    # TUNE=true: the Tuner's best head hyperparameters arrive through TFX's channel.
    options = TrainingOptions.from_config(config).with_hyperparameters(
        (fn_args.hyperparameters or {}).get("values")
    )
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)

    def dataset(files, shuffle) -> Callable[[], tf.data.Dataset]:
        # Built where it is read, once: not at all when the features come from the store.
        return functools.cache(
            lambda: make_dataset(
                files,
                fn_args.data_accessor,
                tf_transform_output,
                options.batch_size,
                shuffle,
                options.seed,
            )
        )

    train_dataset = dataset(fn_args.train_files, shuffle=options.shuffle)
    eval_dataset = dataset(fn_args.eval_files, shuffle=False)

    class_names = config["class_names"]
    backbone = build_seeded_backbone(config, options.seed)
    loaded_digest = weights_digest(backbone)
    head = model.build_head(
        get_backbone(config["backbone"]).feature_dim,
        len(class_names),
        options.dropout,
        options.seed,
    )
    evaluator_split = config.get("evaluator_split", "")

    def keys_for(splits: Mapping[str, list[str]]) -> dict[str, feature_cache.CacheKey] | None:
        if not options.feature_cache_dir:
            return None
        return cache_keys(
            splits,
            fn_args.transform_output,
            config["backbone"],
            weights_record,
            config["image_size"],
            options,
        )

    keys = (
        keys_for({"train": fn_args.train_files, "eval": fn_args.eval_files})
        if uses_cache(options)
        else None
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
            cache_keys=keys,
            # The backbone pass reads in file order: stored features do not depend on SEED.
            feature_train_dataset=dataset(fn_args.train_files, shuffle=False),
        )
        backbone_changed = weights_digest(backbone) != loaded_digest
        reason = why_no_stored_predictions(options, backbone_changed, evaluator_split)
        stored = {"count": 0, "reason": reason}
        if not reason:
            evaluator_files = other_split_files(fn_args.train_files, evaluator_split)
            evaluator_keys = keys_for({"evaluator": evaluator_files})
            stored = store_eval_predictions(
                evaluator_files,
                tf_transform_output,
                backbone,
                head,
                config,
                options,
                evaluator_keys,
                os.path.dirname(fn_args.serving_model_dir),  # the Model artifact's uri
                work_dir,
            )
            keys = {**(keys or {}), **(evaluator_keys or {})}
    logging.info("Training history: %s", history)
    start = time.perf_counter()
    export.export_serving_model(
        network,
        tf_transform_output.transform_features_layer(),
        class_names,
        {
            "backbone": config["backbone"],
            "backbone_weights": weights_record.as_dict(),
            # False: the exported backbone is bit-identical to the loaded weights (the file's,
            # or the random ones); True: training (fine-tuning) changed them.
            "backbone_weights_changed": backbone_changed,
            "image_size": config["image_size"],
            "epochs": options.epochs,
            "training_options": dataclasses.asdict(options),
            "history": {k: [float(v) for v in vs] for k, vs in history.items()},
            "feature_cache": {
                "used": uses_cache(options),
                "keys": {split: key.digest for split, key in (keys or {}).items()},
                "reused": bool(history.get("feature_cache_reused", [0.0])[-1]),
                "backbone_images": int(history.get("backbone_images", [0.0])[-1]),
                "size_bytes": feature_cache.store_size_bytes(options.feature_cache_dir)
                if options.feature_cache_dir
                else 0,
            },
            # The eval predictions the Evaluator reuses (stored_predictions.py), or why none.
            "stored_eval_predictions": stored,
        },
        fn_args.serving_model_dir,
        call_model=traced_model_call(backbone, head, config["image_size"]),
    )
    logging.info("Exported in %.1f s", time.perf_counter() - start)
    if config.get("tflite"):  # model.tflite and model_int8.tflite beside the SavedModel
        tflite_export.export_tflite_models(
            network, config["backbone"], config["image_size"], class_names, fn_args.train_files,
            tflite_export.tflite_dir(os.path.dirname(fn_args.serving_model_dir)),
        )  # fmt: skip


def traced_model_call(
    backbone: tf_keras.Model, head: tf_keras.Model, image_size: int
) -> Callable[[tf.Tensor], tf.Tensor] | None:
    """images -> head(pooled features) through the float32 feature extractor's tf.function
    when the feature pass traced it in this process (None otherwise): the export then
    reuses that trace of the backbone instead of tracing it again. Same variables, same
    computation as build_model's network (fine-tuned weights included)."""
    extractor = _EXTRACTORS.get(backbone, {}).get((image_size, "float32"))
    extract = getattr(extractor, "_feature_cache_extract", None)
    if extract is None or extract.experimental_get_tracing_count() == 0:
        return None
    return lambda images: head(extract(images), training=False)


def build_seeded_backbone(config: Mapping, seed: int) -> tf_keras.Model:
    """The frozen backbone of custom_config; random weights are drawn right after seeding,
    so the Tuner and every Trainer run build the same ones (their features share a key)."""
    tf_keras.utils.set_random_seed(seed)
    return model.build_backbone(
        config["backbone"], config["image_size"], WeightsRecord.from_dict(config["weights"])
    )
