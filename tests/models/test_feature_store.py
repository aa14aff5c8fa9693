"""Backbone features persist across runs under their key, are verified on read, and a
head-only re-run (or the Trainer after the Tuner) runs no backbone pass."""

from __future__ import annotations

import dataclasses
import glob
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from tfx import v1 as tfx

from models import feature_cache, model, tf_data, trainer, training_metadata
from tests.models import training_helpers

IMAGE_SIZE = 32
# Pretrained: stored and recomputed features are compared, which a random backbone's (the
# same vector for every image, for random MobileNetV2) would pass even in the wrong order.
BACKBONE = training_helpers.PRETRAINED
N_TRAIN, N_EVAL = 8, 4


def _raw_files(tmp_path, eval_seed: int = 100) -> tuple[str, str]:
    train = training_helpers.write_raw_examples(
        str(tmp_path / "raw" / "train.tfrecord"), *training_helpers.labelled_images(N_TRAIN)
    )
    eval_ = training_helpers.write_raw_examples(
        str(tmp_path / f"raw_{eval_seed}" / "eval.tfrecord"),
        *training_helpers.labelled_images(N_EVAL, seed=eval_seed),
    )
    return train, eval_


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """Raw files, a Transform graph, their datasets and a backbone shared by the tests."""
    tmp = tmp_path_factory.mktemp("store")
    transform_dir = str(tmp / "transform")
    transform_output = training_helpers.transform_output(transform_dir, IMAGE_SIZE, BACKBONE)
    train, eval_ = _raw_files(tmp)
    tf_keras.utils.set_random_seed(0)
    backbone = model.build_backbone(
        BACKBONE, IMAGE_SIZE, training_helpers.backbone_weights(BACKBONE)
    )

    def dataset(path):
        return tf_data.make_dataset(
            [path], training_helpers.data_accessor(), transform_output, 4, False, 0
        )

    datasets = {path: dataset(path) for path in (train, eval_)}
    return tmp, transform_dir, datasets, train, eval_, backbone, dataset


def _features(parts, store: str, eval_: str | None = None, eval_dataset=None, built=None, **key):
    """FeatureSource.features through the store, as run_fn and tuner_fn call it. With a `built`
    list, each split's dataset is passed as a function that records its split there."""
    tmp, transform_dir, datasets, train, default_eval, backbone, _ = parts
    eval_ = eval_ or default_eval
    options = trainer.TrainingOptions(batch_size=4, feature_cache_dir=store)
    spec = model.BackboneSpec(
        BACKBONE, training_helpers.backbone_weights(BACKBONE), IMAGE_SIZE, seed=options.seed
    )
    keys = feature_cache.cache_keys({"train": [train], "eval": [eval_]}, transform_dir, spec)
    keys = {split: dataclasses.replace(k, **key) for split, k in keys.items()}
    sources = {
        "train": datasets[train],
        "eval": datasets[default_eval] if eval_dataset is None else eval_dataset,
    }
    if built is not None:

        def source(split, dataset):
            return lambda: built.append(split) or dataset

        sources = {split: source(split, dataset) for split, dataset in sources.items()}
    source = feature_cache.FeatureSource(spec, backbone, options, str(tmp), keys=keys)
    return source.features(sources)


def test_every_part_of_the_key_changes_its_digest():
    key = feature_cache.CacheKey("a" * 64, "b" * 64, "resnet50", "c" * 64, 224, "float32")
    changes = {
        "examples_sha256": "d" * 64,
        "transform_graph_sha256": "e" * 64,
        "backbone": "mobilenet_v2",
        "weights": "random-seed-1",
        "image_size": 160,
        "compute_dtype": "bfloat16",
    }
    assert set(changes) == {f.name for f in dataclasses.fields(feature_cache.CacheKey)}
    digests = {dataclasses.replace(key, **{name: value}).digest for name, value in changes.items()}
    assert len(digests | {key.digest}) == len(changes) + 1


def test_stored_features_are_reused_and_a_key_change_recomputes_them(parts, tmp_path):
    store = str(tmp_path / "store")
    first = _features(parts, store)
    assert [first[s].backbone_images for s in ("train", "eval")] == [N_TRAIN, N_EVAL]
    assert not first["train"].reused
    # The comparisons below can fail: each image has features of its own.
    assert not np.allclose(first["train"].features[0], first["train"].features[1])

    again = _features(parts, store)
    assert [again[s].backbone_images for s in ("train", "eval")] == [0, 0]
    assert again["train"].reused and again["eval"].reused
    np.testing.assert_array_equal(again["train"].features, first["train"].features)
    np.testing.assert_array_equal(again["eval"].labels, first["eval"].labels)

    # Other weights: nothing is reused across keys.
    assert _features(parts, store, weights="0" * 64)["train"].backbone_images == N_TRAIN
    # Other eval records (content, not path): eval is recomputed, train still reused.
    _, other_eval = _raw_files(tmp_path, eval_seed=555)
    changed = _features(parts, store, eval_=other_eval, eval_dataset=parts[6](other_eval))
    assert changed["train"].backbone_images == 0
    assert changed["eval"].backbone_images == N_EVAL
    assert feature_cache.store_size_bytes(store) > 0


def test_a_hit_builds_no_input_pipeline(parts, tmp_path):
    """run_fn passes its datasets as functions: a split whose features come from the store
    does not count its records or trace the Transform graph into tf.data."""
    store = str(tmp_path / "store")
    built: list[str] = []
    first = _features(parts, store, built=built)
    assert sorted(built) == ["eval", "train"]
    assert first["train"].backbone_images == N_TRAIN
    built.clear()
    again = _features(parts, store, built=built)
    assert built == []
    assert again["train"].reused and again["eval"].reused
    # A new key for eval only: only its pipeline is built.
    _, other_eval = _raw_files(tmp_path, eval_seed=556)
    _features(parts, store, eval_=other_eval, eval_dataset=parts[6](other_eval), built=built)
    assert built == ["eval"]


def test_a_corrupt_or_torn_cache_file_is_detected_and_recomputed(parts, tmp_path, caplog):
    store = str(tmp_path / "store")
    first = _features(parts, store)
    # One folder per key; train and eval have different keys (different records).
    (data,) = glob.glob(os.path.join(store, "*", "train" + feature_cache.DATA_SUFFIX))
    (eval_manifest,) = glob.glob(os.path.join(store, "*", "eval" + feature_cache.MANIFEST_SUFFIX))
    with open(data, "r+b") as f:  # flip one byte in the middle of the features
        f.seek(os.path.getsize(data) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    redone = _features(parts, store)
    assert "corrupt" in caplog.text
    assert redone["train"].backbone_images == N_TRAIN and redone["eval"].backbone_images == 0
    np.testing.assert_allclose(redone["train"].features, first["train"].features, atol=1e-5)

    # A write cut short: the data file truncated, its manifest still there.
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 3)
    assert _features(parts, store)["train"].backbone_images == N_TRAIN
    # A manifest never written (crash between the two renames): not trusted either.
    os.remove(eval_manifest)
    assert _features(parts, store)["eval"].backbone_images == N_EVAL
    # No temporary file is left behind.
    assert not glob.glob(os.path.join(store, "*", "*.tmp-*"))
    assert _features(parts, store)["train"].reused


def _fn_args(tmp_path, store: str, **config) -> tfx.components.FnArgs:
    # The same record files for every run, as ImportExampleGen's cached artifact is.
    # (Re-serialising the same tf.Examples may order their feature map differently: the
    # key, over the files' bytes, would then rightly see other records.)
    train, eval_ = (
        str(tmp_path / "raw" / "train.tfrecord"),
        str(tmp_path / "raw_100" / "eval.tfrecord"),
    )
    if not os.path.exists(train):
        _raw_files(tmp_path)
    return training_helpers.fn_args(
        tmp_path, BACKBONE, IMAGE_SIZE, [train], [eval_], feature_cache_dir=store, **config
    )


@pytest.mark.slow  # ~40 s: two run_fn calls with their exports
def test_a_head_only_rerun_runs_no_backbone_pass_and_serves_the_same_features(tmp_path):
    store = str(tmp_path / "FeatureCache")
    first = _fn_args(tmp_path, store)
    trainer.run_fn(first)
    record = training_metadata.read_training_metadata(first.serving_model_dir)["feature_cache"]
    assert record["backbone_images"] == N_TRAIN + N_EVAL and not record["reused"]

    # Every head knob changed; the backbone pass is not run again.
    head_only = _fn_args(
        tmp_path,
        store,
        run="2",
        learning_rate=0.01,
        dropout=0.5,
        epochs=2,
        label_smoothing=0.1,
        class_weights=True,
        class_counts=[4, 4],
        early_stopping_patience=3,
        batch_size=2,
    )
    trainer.run_fn(head_only)
    metadata = training_metadata.read_training_metadata(head_only.serving_model_dir)
    assert metadata["feature_cache"] == {**record, "backbone_images": 0, "reused": True}
    assert len(metadata["history"]["loss"]) == 2
    # The exported backbone is the one whose features were reused (the same weights):
    # only the heads' variables differ between the two models.
    first_vars, second_vars = (
        {v.name: v.numpy() for v in tf.saved_model.load(d).model_variables}
        for d in (first.serving_model_dir, head_only.serving_model_dir)
    )
    assert first_vars.keys() == second_vars.keys()
    differing = {n for n in first_vars if not np.array_equal(first_vars[n], second_vars[n])}
    assert differing and all(n.startswith("head_") for n in differing), differing
