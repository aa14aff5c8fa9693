"""Run a frozen backbone once over a dataset, keep its pooled features, reuse them across runs.

Why: with a frozen backbone, the features of an image never change, yet an ordinary
Keras loop recomputes the backbone's forward pass (the whole cost of training on a CPU)
for every image in every epoch, and a re-run that changes only a head knob (learning
rate, dropout, epochs, ...) would recompute them all again. Computing them once per
*key* makes E epochs cost about one forward pass plus E passes of a tiny dense head, and
a head-only re-run cost no backbone pass at all.

The key (`CacheKey`) is everything that determines the features: the split's records
(by content), the Transform graph (by content), the backbone, the weights' SHA-256 (or
the seed, for random weights), the image size and the backbone's compute dtype. Nothing
else (batch size, head knobs) changes them.

On disk, one key is a folder `<store>/<key digest>/` with, per split, a TFRecord of
(features, labels) batches and a JSON manifest holding the key, the count and the
file's SHA-256. Both are written under temporary names and renamed (manifest last), so a
reader sees a complete cache or none; on read the file's SHA-256 must match the
manifest, so a torn or corrupted file is detected, reported and recomputed.

Features are streamed batch by batch (memory bounded by one batch of images); they are
kept in RAM up to a byte budget, beyond it read back from the TFRecord file, so a
dataset larger than RAM still trains.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
import weakref
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras

from models import model, tf_data
from models.atomic_files import write_atomically
from models.crash_points import crash_point
from models.model import BackboneSpec
from models.options import TrainingOptions

# Bump when the on-disk layout or the feature computation changes meaning.
FORMAT_VERSION = 1
DATA_SUFFIX = ".tfrecord"
MANIFEST_SUFFIX = ".json"


@dataclasses.dataclass(frozen=True)
class CacheKey:
    """Everything that determines the pooled features of one split."""

    examples_sha256: str  # the split's record files, by content
    transform_graph_sha256: str  # the Transform graph's files, by content
    backbone: str
    weights: str  # the weights file's SHA-256, or "random-seed-<seed>"
    image_size: int
    compute_dtype: str  # float32 | bfloat16: the backbone's compute dtype

    @property
    def digest(self) -> str:
        text = json.dumps({**dataclasses.asdict(self), "format": FORMAT_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def _sha256_files(paths: Iterable[str], root: str | None = None) -> str:
    """SHA-256 over (relative name, content) of every file, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        name = os.path.relpath(path, root) if root else os.path.basename(path)
        digest.update(name.encode() + b"\0")
        with tf.io.gfile.GFile(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def sha256_of_patterns(file_patterns: Iterable[str]) -> str:
    """The content of every file matching the patterns (e.g. FnArgs.train_files)."""
    paths = [p for pattern in file_patterns for p in tf.io.gfile.glob(pattern)]
    if not paths:
        raise ValueError(f"No files match {list(file_patterns)}")
    return _sha256_files(paths)


def sha256_of_dir(path: str) -> str:
    """The content of every file under `path` (e.g. the Transform graph's transform_fn)."""
    files = [
        os.path.join(folder, name) for folder, _, names in tf.io.gfile.walk(path) for name in names
    ]
    return _sha256_files(files, root=path)


@dataclasses.dataclass
class FeatureCache:
    """Pooled features and labels of one dataset, in memory or read from its file."""

    num_examples: int
    feature_dim: int
    seconds: float  # wall time of the backbone pass (0 when reused)
    features: np.ndarray | None = None  # float32 [N, feature_dim] when in memory
    labels: np.ndarray | None = None  # int64 [N]
    spill_path: str | None = None  # TFRecord of (features, labels) batches otherwise
    backbone_images: int = 0  # images that went through the backbone to build it
    reused: bool = False  # loaded from an earlier run's cache

    @property
    def images_per_second(self) -> float:
        return self.backbone_images / self.seconds if self.seconds else 0.0

    def dataset(self, batch_size: int, shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
        """(features [B, D], labels [B]) batches; reshuffled every epoch when shuffle.

        Its length is known (cardinality = number of batches): Keras then never runs the
        extra step that hits end-of-data, which would still count one optimizer iteration
        and shift Adam's bias correction from the second epoch on.
        """
        if self.spill_path is None:
            dataset = tf.data.Dataset.from_tensor_slices((self.features, self.labels))
        else:
            dataset = tf.data.TFRecordDataset(self.spill_path).map(
                self._parse_record, num_parallel_calls=tf.data.AUTOTUNE
            )
            dataset = dataset.unbatch()
        if shuffle:
            # In memory the buffer holds indices into the cached array; from a file it
            # holds feature rows, so bound it (a file shuffle is approximate, like tfxio's).
            buffer = self.num_examples if self.spill_path is None else min(self.num_examples, 8192)
            dataset = dataset.shuffle(max(buffer, 1), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size).apply(
            tf.data.experimental.assert_cardinality(math.ceil(self.num_examples / batch_size))
        )
        return tf_data.without_autotune(dataset.prefetch(tf.data.AUTOTUNE))

    def _parse_record(self, record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return _parse_record(record, self.feature_dim)


def _parse_record(record: tf.Tensor, feature_dim: int) -> tuple[tf.Tensor, tf.Tensor]:
    parsed = tf.io.parse_single_example(
        record,
        {
            "features": tf.io.FixedLenFeature([], tf.string),
            "labels": tf.io.FixedLenFeature([], tf.string),
        },
    )
    features = tf.io.parse_tensor(parsed["features"], tf.float32)
    labels = tf.io.parse_tensor(parsed["labels"], tf.int64)
    return tf.reshape(features, [-1, feature_dim]), tf.reshape(labels, [-1])


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


def extract_function(extractor: tf_keras.Model):
    """extractor(images, training=False) as a tf.function traced once per extractor.

    Kept on the extractor so the train and eval passes (and the export: FeatureSource.
    traced_model_call) share one trace (tracing ResNet50 costs seconds); the batch
    dimension is None so the last, smaller batch reuses it.
    """
    extract = getattr(extractor, "_feature_cache_extract", None)
    if extract is None:
        spec = tf.TensorSpec([None, *extractor.input_shape[1:]], tf.float32)
        # training=False: the backbone's batch norm stays in inference mode. The cast
        # makes a bfloat16 extractor's features float32 like everyone else's.
        extract = tf.function(
            lambda images: tf.cast(extractor(images, training=False), tf.float32),
            input_signature=[spec],
        )
        extractor._feature_cache_extract = extract
    return extract


def _file_sha256(path: str) -> str:
    return _sha256_files([path])


# A dataset, or a function that builds it. Building the Trainer's input pipeline counts the
# split's records and traces the Transform graph into tf.data (about 0.4 s a split): for
# nothing when the split's features come from the store, so a miss alone builds it.
DatasetSource = tf.data.Dataset | Callable[[], tf.data.Dataset]


def dataset_of(source: DatasetSource) -> tf.data.Dataset:
    """The dataset itself, built now if `source` is a function."""
    return source if isinstance(source, tf.data.Dataset) else source()


def _manifest_path(data_path: str) -> str:
    return data_path[: -len(DATA_SUFFIX)] + MANIFEST_SUFFIX


def cache_features(
    extractor: tf_keras.Model,
    dataset: tf.data.Dataset,
    memory_budget_bytes: int,
    path: str,
    key: CacheKey | None = None,
) -> FeatureCache:
    """One pass of `extractor` (image -> pooled features) over (image, label) batches.

    Writes the features to `path` (a TFRecord file) and its manifest beside it, both
    atomically; keeps them in memory too while they fit in the budget.
    """
    feature_dim = int(extractor.output_shape[-1])
    extract = extract_function(extractor)
    held_features: list[np.ndarray] = []
    held_labels: list[np.ndarray] = []
    counts = {"examples": 0, "bytes": 0}
    start = time.perf_counter()

    def write(tmp_path: str) -> None:
        with tf.io.TFRecordWriter(tmp_path) as writer:
            for images, labels in dataset:
                batch_features = extract(images).numpy().astype(np.float32, copy=False)
                batch_labels = labels.numpy().astype(np.int64).reshape(-1)
                counts["examples"] += len(batch_labels)
                counts["bytes"] += batch_features.nbytes + batch_labels.nbytes
                writer.write(_record(batch_features, batch_labels))
                crash_point("Trainer:feature_pass")  # mid-pass: the temporary file torn
                if counts["bytes"] <= memory_budget_bytes:
                    held_features.append(batch_features)
                    held_labels.append(batch_labels)
                elif held_features:
                    logging.info(
                        "Feature cache %s exceeds %d bytes: training reads it from the file",
                        path,
                        memory_budget_bytes,
                    )
                    held_features.clear()
                    held_labels.clear()

    write_atomically(path, write)
    seconds = time.perf_counter() - start
    count = counts["examples"]
    manifest = {
        "key": dataclasses.asdict(key) if key else None,
        "format": FORMAT_VERSION,
        "num_examples": count,
        "feature_dim": feature_dim,
        "sha256": _file_sha256(path),
        "seconds": seconds,
    }

    def write_manifest(tmp_path: str) -> None:
        with tf.io.gfile.GFile(tmp_path, "w") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)

    write_atomically(_manifest_path(path), write_manifest)
    in_memory = counts["bytes"] <= memory_budget_bytes
    cache = FeatureCache(count, feature_dim, seconds, backbone_images=count)
    if in_memory:
        cache.features = (
            np.concatenate(held_features) if held_features else np.zeros((0, feature_dim), "f4")
        )
        cache.labels = np.concatenate(held_labels) if held_labels else np.zeros(0, np.int64)
    else:
        cache.spill_path = path
    logging.info(
        "Cached %d features (dim %d) in %s in %.1f s: %.1f images/s, %s",
        count,
        feature_dim,
        path,
        seconds,
        cache.images_per_second,
        "in memory" if in_memory else "read back from the file",
    )
    return cache


def load(path: str, memory_budget_bytes: int, key: CacheKey | None = None) -> FeatureCache | None:
    """The cache written by cache_features at `path`, or None when it is missing, was
    written for another key, or fails its checksum (reported: it is then recomputed)."""
    manifest_path = _manifest_path(path)
    if not (tf.io.gfile.exists(manifest_path) and tf.io.gfile.exists(path)):
        return None
    try:
        with tf.io.gfile.GFile(manifest_path) as f:
            manifest = json.load(f)
        expected_key = dataclasses.asdict(key) if key else None
        if manifest.get("format") != FORMAT_VERSION or manifest.get("key") != expected_key:
            logging.warning("Feature cache %s belongs to another key: recomputing.", path)
            return None
        actual = _file_sha256(path)
        if actual != manifest["sha256"]:
            logging.warning(
                "Feature cache %s is corrupt (sha256 %s, manifest says %s): recomputing.",
                path,
                actual,
                manifest["sha256"],
            )
            return None
        count, feature_dim = int(manifest["num_examples"]), int(manifest["feature_dim"])
    except (OSError, tf.errors.OpError, ValueError, KeyError, TypeError) as exc:
        logging.warning("Feature cache manifest %s unreadable (%s): recomputing.", path, exc)
        return None
    cache = FeatureCache(count, feature_dim, 0.0, reused=True)
    if count * (feature_dim * 4 + 8) <= memory_budget_bytes:
        batches = list(tf.data.TFRecordDataset(path).map(lambda r: _parse_record(r, feature_dim)))
        cache.features = (
            np.concatenate([f.numpy() for f, _ in batches])
            if batches
            else np.zeros((0, feature_dim), np.float32)
        )
        cache.labels = (
            np.concatenate([lab.numpy() for _, lab in batches]) if batches else np.zeros(0, "i8")
        )
    else:
        cache.spill_path = path
    logging.info("Reusing %d cached features from %s (no backbone pass)", count, path)
    return cache


def cached_features(
    store_dir: str,
    key: CacheKey,
    split: str,
    extractor: Callable[[], tf_keras.Model],
    dataset: DatasetSource,
    memory_budget_bytes: int,
) -> FeatureCache:
    """The features of `split` under `key` from the store, computed (and stored) if absent.

    `extractor` (and `dataset`, when a function) is called only on a miss, so a hit
    builds and traces nothing.
    """
    path = os.path.join(store_dir, key.digest, f"{split}{DATA_SUFFIX}")
    cache = load(path, memory_budget_bytes, key)
    if cache is None:
        cache = cache_features(extractor(), dataset_of(dataset), memory_budget_bytes, path, key)
    return cache


def store_size_bytes(store_dir: str) -> int:
    """Bytes on disk of every cached key under `store_dir` (0 when it does not exist)."""
    return sum(
        tf.io.gfile.stat(path).length
        for path in tf.io.gfile.glob(os.path.join(store_dir, "*", "*"))
        if not tf.io.gfile.isdir(path)
    )


def cache_keys(
    split_files: Mapping[str, list[str]], transform_graph_dir: str, spec: BackboneSpec
) -> dict[str, CacheKey]:
    """split -> the key of its features: what determines them, nothing else, so head knobs
    (learning rate, epochs, batch size, ...) reuse them. `transform_graph_dir` is the
    Transform output (its transform_fn is hashed by content)."""
    transform_fn_dir = tft.TFTransformOutput(transform_graph_dir).transform_savedmodel_dir
    transform_sha256 = sha256_of_dir(transform_fn_dir)
    return {
        split: CacheKey(
            examples_sha256=sha256_of_patterns(files),
            transform_graph_sha256=transform_sha256,
            backbone=spec.name,
            weights=spec.weights_id,
            image_size=spec.image_size,
            compute_dtype=spec.dtype,
        )
        for split, files in split_files.items()
    }


# backbone -> {(image size, dtype): feature extractor}; weak, so it dies with the backbone.
_EXTRACTORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def feature_extractor(backbone: tf_keras.Model, spec: BackboneSpec) -> tf_keras.Model:
    """The backbone's image -> pooled features model: one per (backbone object, image size,
    dtype), so every split, every FeatureSource on the same backbone (and the stored eval
    predictions) share its trace."""
    extractors = _EXTRACTORS.setdefault(backbone, {})
    if (spec.image_size, spec.dtype) not in extractors:
        extractors[(spec.image_size, spec.dtype)] = model.build_feature_extractor(
            backbone, spec.image_size, spec.dtype, spec.name
        )
    return extractors[(spec.image_size, spec.dtype)]


class FeatureSource:
    """The pooled features of a run's splits: from the store, or from one backbone pass.

    One per run (the Trainer's run_fn, the Tuner's tuner_fn). `backbone` may be a function
    that builds it: it is then built on the first miss only, so a run whose features are
    all stored builds and traces no backbone. With options.feature_cache_dir set and a
    split's record files known (`split_files`, hashed with the Transform graph at
    `transform_graph_dir` into its key) or its key given (`keys`), the features persist
    across runs; otherwise they are scratch, under `work_dir`, for this run only.
    """

    def __init__(
        self,
        spec: BackboneSpec,
        backbone: tf_keras.Model | Callable[[], tf_keras.Model],
        options: TrainingOptions,
        work_dir: str,
        *,
        split_files: Mapping[str, list[str]] | None = None,
        transform_graph_dir: str = "",
        keys: Mapping[str, CacheKey] | None = None,
    ):
        self.spec = spec
        self.store_dir = options.feature_cache_dir
        self.memory_budget_bytes = options.cache_memory_mb * 1024 * 1024
        self.work_dir = work_dir
        self._backbone = backbone
        self._split_files = dict(split_files or {})
        self._transform_graph_dir = transform_graph_dir
        self._given_keys = dict(keys or {})
        self.keys: dict[str, CacheKey] = {}  # the keys of the splits answered so far

    @property
    def backbone(self) -> tf_keras.Model:
        """The backbone, built now when it was given as a function."""
        if not isinstance(self._backbone, tf_keras.Model):
            self._backbone = self._backbone()
        return self._backbone

    def key(self, split: str) -> CacheKey | None:
        """The store key of `split`, or None when its features are scratch."""
        if not self.store_dir:
            return None
        if split not in self._given_keys and split in self._split_files:
            self._given_keys.update(
                cache_keys({split: self._split_files[split]}, self._transform_graph_dir, self.spec)
            )
        return self._given_keys.get(split)

    def features(self, datasets: Mapping[str, DatasetSource]) -> dict[str, FeatureCache]:
        """split -> pooled features of `datasets[split]` ((image, label) batches, or a
        function building them, called on a miss only)."""
        caches = {}
        for split, dataset in datasets.items():
            key = self.key(split)
            if key is not None:
                self.keys[split] = key
                caches[split] = cached_features(
                    self.store_dir,
                    key,
                    split,
                    self._extractor,
                    dataset,
                    self.memory_budget_bytes,
                )
            else:
                path = os.path.join(self.work_dir, f"{split}{DATA_SUFFIX}")
                caches[split] = cache_features(
                    self._extractor(), dataset_of(dataset), self.memory_budget_bytes, path
                )
        return caches

    def _extractor(self) -> tf_keras.Model:
        return feature_extractor(self.backbone, self.spec)

    def traced_model_call(self, head: tf_keras.Model) -> Callable[[tf.Tensor], tf.Tensor] | None:
        """images -> head(pooled features) through the float32 feature extractor's
        tf.function when a feature pass traced it in this process (None otherwise): the
        export then reuses that trace of the backbone instead of tracing it again. Same
        variables, same computation as model.build_model's network (fine-tuned weights
        included)."""
        if not isinstance(self._backbone, tf_keras.Model):
            return None  # never built: nothing traced
        extractors = _EXTRACTORS.get(self._backbone, {})
        extractor = extractors.get((self.spec.image_size, "float32"))
        if extractor is None:
            return None
        extract = extract_function(extractor)
        if extract.experimental_get_tracing_count() == 0:
            return None
        # The concrete function, not the tf.function: tf.saved_model.save traces the
        # signatures inside its save context, which is part of a tf.function's cache key,
        # so calling `extract` there traced the whole backbone again (ResNet50: 1.2 s of a
        # 5.5 s export). A concrete function is called as it is.
        traced = extract.get_concrete_function()
        return lambda images: head(traced(images), training=False)
