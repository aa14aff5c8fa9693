"""TUNE=true: the Tuner searches the head on cached features; the Trainer takes its best
hyperparameters through TFX's `hyperparameters` channel and reuses the features."""

from __future__ import annotations

import keras_tuner
import pytest

from components.modules import export, trainer, tuner
from tests import training_helpers

IMAGE_SIZE = 32
BACKBONE = "mobilenet_v2"


def test_the_search_space_and_budget_come_from_the_knobs():
    options = tuner.TuningOptions.from_config(
        {"tune_trials": 7, "tune_epochs": "2, 4", "tune_dropouts": "0.1", "epochs": 9}
    )
    assert options.tune_trials == 7
    space = options.search_space()
    assert {hp.name for hp in space.space} == set(trainer.TUNED_HYPERPARAMETERS)
    assert space.get("epochs") == 2 and {v for v in space._hps["epochs"][0].values} == {2, 4}
    with pytest.raises(ValueError, match="empty"):
        tuner.TuningOptions(tune_dropouts=" , ").search_space()


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
    metadata = export.read_training_metadata(train_args.serving_model_dir)
    assert metadata["training_options"]["learning_rate"] == best.get("learning_rate")
    assert metadata["training_options"]["dropout"] == best.get("dropout")
    assert len(metadata["history"]["loss"]) == best.get("epochs")
    # The Tuner computed the features; the Trainer ran no backbone pass.
    assert metadata["feature_cache"]["reused"] and metadata["feature_cache"]["backbone_images"] == 0
