"""The cached frozen phase trains the same head as the ordinary loop, only faster."""

from __future__ import annotations

import numpy as np
import pytest
import tf_keras

from models import backbones, export, feature_cache, model, tf_data, trainer
from models.feature_cache import FeatureSource
from tests.models import training_helpers

IMAGE_SIZE = 32
# Pretrained: the cached and uncached heads must agree on features that differ from photo
# to photo (a random backbone's barely do), and Lite0 builds and exports faster than ResNet50.
BACKBONE = training_helpers.PRETRAINED


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cache")
    transform_output = training_helpers.transform_output(str(tmp / "tft"), IMAGE_SIZE, BACKBONE)
    # tfxio datasets, as run_fn reads them: both training paths see these batches.
    train_ds, eval_ds = training_helpers.datasets(str(tmp), transform_output, 12, 6, 4)
    tf_keras.utils.set_random_seed(0)
    backbone = model.build_backbone(
        BACKBONE, IMAGE_SIZE, training_helpers.backbone_weights(BACKBONE)
    )
    return tmp, transform_output, train_ds, eval_ds, backbone


def _train(setup, cache: bool, name: str):
    tmp, transform_output, train_ds, eval_ds, backbone = setup
    # dropout=0 and no shuffling: both paths see the same batches in the same order, so
    # the same seeded head initialisation must reach the same weights.
    options = trainer.TrainingOptions(
        epochs=3,
        batch_size=4,
        learning_rate=1e-3,
        dropout=0.0,
        seed=7,
        cache_features=cache,
        shuffle=False,
    )
    spec = model.BackboneSpec(BACKBONE, training_helpers.backbone_weights(BACKBONE), IMAGE_SIZE)
    head = model.build_head(spec.feature_dim, 2, 0.0, options.seed)
    source = FeatureSource(spec, backbone, options, str(tmp / name))
    network, history = trainer.train(source, head, train_ds, eval_ds, options)
    return source, head, network, history


def _export(setup, network, name: str, call_model=None) -> str:
    tmp, transform_output = setup[0], setup[1]
    export_dir = str(tmp / f"export_{name}")
    export.export_serving_model(
        network,
        transform_output.transform_features_layer(),
        ["a", "b"],
        {},
        export_dir,
        call_model=call_model,
    )
    return export_dir


def _train_and_export(setup, cache: bool, name: str):
    _, _, network, history = _train(setup, cache, name)
    return _export(setup, network, name), history


def test_tfxio_datasets_have_a_length_so_adam_counts_one_iteration_per_batch(setup):
    """An unknown length makes Keras' first epoch end with a step that hits end-of-data and
    still counts an optimizer iteration: Adam's bias correction is then off by one from
    epoch 2 on, and the uncached path drifts from the cached one."""
    _, _, train_ds, eval_ds, _ = setup
    assert int(train_ds.cardinality()) == 3 and int(eval_ds.cardinality()) == 2  # 12/4, 6/4
    tiny = tf_keras.Sequential(
        [
            tf_keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3)),
            tf_keras.layers.GlobalAveragePooling2D(),
            tf_keras.layers.Dense(2, activation="softmax"),
        ]
    )
    options = trainer.TrainingOptions(epochs=3, shuffle=False)
    trainer.train_network(
        tiny, train_ds, eval_ds, options, learning_rate=1e-3, initial_epoch=0, epochs=3
    )
    assert int(tiny.optimizer.iterations) == 3 * 3


@pytest.mark.slow  # the module's Transform graph and backbone are built for it
def test_no_trainer_dataset_runs_the_tf_data_autotuner(setup, tmp_path):
    """tf.data's autotuner keeps a model thread per iterator, and deleting the iterator
    waits out that thread's sleep: 24.6 s of idle at the end of one 57 s backbone pass
    (models/tf_data.py). The Trainer's datasets, its feature-cache batches
    and the eval split it predicts for the Evaluator all run without it."""
    _, transform_output, train_ds, eval_ds, _ = setup
    cache = feature_cache.FeatureCache(
        2, 3, 0.0, features=np.zeros((2, 3), np.float32), labels=np.zeros(2, np.int64)
    )
    raw = str(tmp_path / "raw" / "eval.tfrecord")
    files = [training_helpers.write_raw_examples(raw, *training_helpers.labelled_images(3))]
    serialized = tf_data.serialized_examples(files, 2)
    parsed = tf_data.parsed_examples_dataset(serialized, transform_output)
    for dataset in (train_ds, eval_ds, cache.dataset(1, shuffle=True), serialized, parsed):
        assert dataset.options().autotune.enabled is False


def test_cached_and_uncached_training_export_the_same_predictions(setup):
    cached_dir, cached_history = _train_and_export(setup, cache=True, name="cached")
    uncached_dir, uncached_history = _train_and_export(setup, cache=False, name="uncached")
    assert "cache_images_per_s" in cached_history
    assert "cache_images_per_s" not in uncached_history
    np.testing.assert_allclose(cached_history["loss"], uncached_history["loss"], rtol=1e-5)
    np.testing.assert_allclose(cached_history["val_loss"], uncached_history["val_loss"], rtol=1e-5)
    images, _ = training_helpers.labelled_images(6, seed=500)
    cached = training_helpers.serve(cached_dir, images)
    uncached = training_helpers.serve(uncached_dir, images)
    assert cached.shape == (6, 2)
    np.testing.assert_allclose(cached, uncached, atol=1e-4)
    # ...on answers that differ from photo to photo, as real features make them.
    assert np.ptp(cached[:, 0]) > 1e-3, cached
    # The heads did learn something (not both stuck at the initialisation).
    assert cached_history["loss"][-1] != cached_history["loss"][0]


def test_export_reuses_the_feature_pass_trace_of_the_backbone(setup):
    """The Trainer exports through the feature pass's traced backbone (traced_model_call):
    tf.saved_model.save traces the signatures in its save context, which used to trace the
    backbone a second time (ResNet50: 1.2 s of a 5.5 s export). Same answers either way."""
    source, head, network, _ = _train(setup, cache=True, name="traced")
    extract = feature_cache.extract_function(source._extractor())
    assert extract.experimental_get_tracing_count() == 1  # the feature pass's trace
    traced_dir = _export(setup, network, "traced", call_model=source.traced_model_call(head))
    assert extract.experimental_get_tracing_count() == 1  # not traced again by the export
    plain_dir = _export(setup, network, "plain")
    images, _ = training_helpers.labelled_images(6, seed=900)
    np.testing.assert_allclose(
        training_helpers.serve(traced_dir, images),
        training_helpers.serve(plain_dir, images),
        atol=1e-6,
    )


def test_feature_cache_spills_to_disk_past_the_budget_with_identical_content(setup):
    tmp, _, train_ds, _, backbone = setup
    extractor = model.build_feature_extractor(backbone, IMAGE_SIZE)
    in_memory = feature_cache.cache_features(
        extractor, train_ds, 1 << 30, str(tmp / "m" / "train.tfrecord")
    )
    spilled = feature_cache.cache_features(
        extractor, train_ds, 0, str(tmp / "s" / "train.tfrecord")
    )
    dim = backbones.get_backbone(BACKBONE).feature_dim
    assert in_memory.spill_path is None and in_memory.features.shape == (12, dim)
    assert spilled.spill_path is not None and spilled.features is None
    assert in_memory.num_examples == spilled.num_examples == 12
    rows_memory = list(in_memory.dataset(5).unbatch().as_numpy_iterator())
    rows_spilled = list(spilled.dataset(5).unbatch().as_numpy_iterator())
    assert len(rows_memory) == len(rows_spilled) == 12
    for (f1, l1), (f2, l2) in zip(rows_memory, rows_spilled, strict=True):
        np.testing.assert_array_equal(f1, f2)
        assert l1 == l2
    # Shuffled epochs differ in order but hold the same examples.
    shuffled = spilled.dataset(12, shuffle=True, seed=1)
    first, second = (next(iter(shuffled))[1].numpy() for _ in range(2))
    assert sorted(first) == sorted(second) == sorted(r[1] for r in rows_memory)


def test_caching_is_a_knob_and_defaults_on():
    assert trainer.uses_cache(trainer.TrainingOptions())
    assert not trainer.uses_cache(trainer.TrainingOptions(cache_features=False))
    assert not trainer.uses_cache(trainer.TrainingOptions(augmentation="flip"))
    options = trainer.TrainingOptions.from_config(
        {"cache_features": False, "class_counts": [3, 4], "unrelated": 1, "epochs": None}
    )
    assert not options.cache_features and options.class_counts == (3, 4) and options.epochs == 5
