"""TUNE=true: the Tuner searches the head on cached features; the Trainer takes its best
hyperparameters through TFX's `hyperparameters` channel and reuses the features."""

from __future__ import annotations

import keras_tuner
import pytest

from models import trainer, training_metadata, tuner
from models.options import TUNED_HYPERPARAMETERS
from tests.models import training_helpers

IMAGE_SIZE = 32
BACKBONE = training_helpers.PRETRAINED  # trials compare heads on real features


def test_the_search_space_and_budget_come_from_the_knobs():
    options = tuner.TuningOptions.from_config(
        {"tune_trials": 7, "tune_epochs": "2, 4", "tune_dropouts": "0.1", "epochs": 9}
    )
    assert options.tune_trials == 7
    space = tuner.search_space(options)
    assert {hp.name for hp in space.space} == set(TUNED_HYPERPARAMETERS)
    assert space.get("epochs") == 2 and {v for v in space._hps["epochs"][0].values} == {2, 4}
    with pytest.raises(ValueError, match="empty"):
        tuner.search_space(tuner.TuningOptions(tune_dropouts=" , "))


def test_the_trainer_takes_the_tuned_values_and_nothing_else():
    options = trainer.TrainingOptions(epochs=5, batch_size=32)
    tuned = options.with_hyperparameters(
        {"learning_rate": 0.01, "dropout": 0.5, "epochs": 3, "label_smoothing": 0.1, "seed": 9}
    )
    assert (tuned.learning_rate, tuned.dropout, tuned.epochs, tuned.label_smoothing) == (
        0.01,
        0.5,
        3,
        0.1,
    )
    assert tuned.seed == options.seed and tuned.batch_size == 32
    assert options.with_hyperparameters(None) is options


@pytest.mark.slow  # ~40 s: a few tiny trials, then one run_fn with its export
def test_tuner_searches_cached_features_and_the_trainer_uses_the_best(tmp_path):
    train = training_helpers.write_raw_examples(
        str(tmp_path / "raw" / "train.tfrecord"), *training_helpers.labelled_images(8)
    )
    eval_ = training_helpers.write_raw_examples(
        str(tmp_path / "raw" / "eval.tfrecord"), *training_helpers.labelled_images(4, seed=100)
    )
    config = {
        "feature_cache_dir": str(tmp_path / "FeatureCache"),
        "tune_trials": 3,
        "tune_epochs": "1,2",
        "tune_learning_rates": "0.001,0.01",
    }
    tune_args = training_helpers.fn_args(
        tmp_path, BACKBONE, IMAGE_SIZE, [train], [eval_], run="tuner", **config
    )
    # What TFX's Tuner executor does: tuner_fn, then search(**fit_kwargs).
    result = tuner.tuner_fn(tune_args)
    result.tuner.search(**result.fit_kwargs)
    trials = result.tuner.oracle.get_best_trials(10)
    assert len(trials) == 3
    assert all(t.status == keras_tuner.engine.trial.TrialStatus.COMPLETED for t in trials)
    best = result.tuner.get_best_hyperparameters()[0]
    assert best.get("epochs") in (1, 2) and best.get("learning_rate") in (0.001, 0.01)

    # The Trainer: FnArgs.hyperparameters is the best HyperParameters' config, as TFX's
    # Trainer executor reads it from the best_hyperparameters artifact.
    train_args = training_helpers.fn_args(
        tmp_path, BACKBONE, IMAGE_SIZE, [train], [eval_], **config
    )
    train_args.hyperparameters = best.get_config()
    trainer.run_fn(train_args)
    metadata = training_metadata.read_training_metadata(train_args.serving_model_dir)
    assert metadata["training_options"]["learning_rate"] == best.get("learning_rate")
    assert metadata["training_options"]["dropout"] == best.get("dropout")
    assert len(metadata["history"]["loss"]) == best.get("epochs")
    # The Tuner computed the features; the Trainer ran no backbone pass.
    assert metadata["feature_cache"]["reused"] and metadata["feature_cache"]["backbone_images"] == 0


def test_every_trial_scores_what_a_fresh_head_with_its_values_scores(tmp_path):
    """Trials share one traced head (speed); each must still start from the seeded head and
    a fresh optimizer, and train with its own learning rate, dropout and smoothing."""
    import numpy as np
    import tensorflow as tf

    from models import model

    rng = np.random.default_rng(0)
    dim, classes = 16, 3
    centres = rng.normal(size=(classes, dim)) * 0.6

    def split(n: int) -> tf.data.Dataset:
        labels = rng.integers(0, classes, n)
        feats = (centres[labels] + rng.normal(size=(n, dim))).astype("float32")
        return tf.data.Dataset.from_tensor_slices((feats, labels)).batch(8)

    train, validation = split(96), split(40)
    options = tuner.TuningOptions(
        tune_trials=6,
        tune_learning_rates="0.003,0.03",
        tune_dropouts="0.0,0.9",
        tune_epochs="2,3",
        tune_label_smoothings="0.0,0.2",
    )
    search = tuner.build_tuner(options, dim, classes, seed=7, directory=str(tmp_path))
    search.search(x=train, validation_data=validation, verbose=0)
    trials = sorted(search.oracle.trials.values(), key=lambda t: int(t.trial_id))
    dropouts = [t.hyperparameters.get("dropout") for t in trials]
    # The check below means something only if a dropout-0.9 trial ran before a 0.0 one.
    assert 0.9 in dropouts and 0.0 in dropouts[dropouts.index(0.9) :]
    compared = 0
    for trial in trials:
        hp = trial.hyperparameters
        if hp.get("dropout"):
            continue  # dropout masks are random: compared only without dropout
        fresh = model.build_head(dim, classes, 0.0, seed=7)
        model.compile_model(fresh, hp.get("learning_rate"), classes, hp.get("label_smoothing"))
        history = fresh.fit(train, validation_data=validation, epochs=hp.get("epochs"), verbose=0)
        metrics = trial.metrics
        assert metrics.get_last_value("val_accuracy") == pytest.approx(
            history.history["val_accuracy"][-1], abs=1e-6
        )
        assert metrics.get_last_value("val_loss") == pytest.approx(
            history.history["val_loss"][-1], rel=1e-4
        )
        compared += 1
    assert compared >= 2
