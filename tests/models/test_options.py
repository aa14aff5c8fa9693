"""Class weights, label smoothing and early stopping: computed and applied."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from models import model, trainer
from models.options import class_weights_from_counts


def test_class_weights_are_inverse_frequency():
    assert class_weights_from_counts([30, 10]) == {0: 40 / 60, 1: 2.0}
    assert class_weights_from_counts([5, 5, 0]) == {0: 1.0, 1: 1.0, 2: 0.0}
    options = trainer.TrainingOptions(class_weights=True, class_counts=(30, 10))
    assert options.class_weight(2) == {0: 40 / 60, 1: 2.0}
    assert trainer.TrainingOptions(class_counts=(30, 10)).class_weight(2) is None
    with pytest.raises(ValueError, match="class_counts"):
        trainer.TrainingOptions(class_weights=True).class_weight(2)


def _features(n=24, dim=8):
    rng = np.random.default_rng(0)
    labels = (np.arange(n) % 4 == 0).astype(np.int64)  # imbalanced: 1 in 4 is class 1
    features = rng.normal(0, 1, (n, dim)).astype(np.float32) + labels[:, None]
    return features, labels


def test_class_weights_reach_the_loss():
    """Training with the knob equals training with per-example weights w[label]."""
    features, labels = _features()
    counts = tuple(int(c) for c in np.bincount(labels))
    options = trainer.TrainingOptions(
        epochs=2, batch_size=8, class_weights=True, class_counts=counts, shuffle=False
    )
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(8)

    weighted = model.build_head(8, 2, 0.0, 3)
    trainer.train_network(
        weighted, dataset, dataset, options, learning_rate=1e-2, initial_epoch=0, epochs=2
    )

    weights = class_weights_from_counts(counts)
    sample_weights = np.array([weights[int(y)] for y in labels], np.float32)
    manual = model.build_head(8, 2, 0.0, 3)
    model.compile_model(manual, 1e-2)
    manual.fit(
        tf.data.Dataset.from_tensor_slices((features, labels, sample_weights)).batch(8),
        epochs=2,
        verbose=0,
    )
    unweighted = model.build_head(8, 2, 0.0, 3)
    plain = trainer.TrainingOptions(epochs=2, batch_size=8, shuffle=False)
    trainer.train_network(
        unweighted, dataset, dataset, plain, learning_rate=1e-2, initial_epoch=0, epochs=2
    )

    for a, b in zip(weighted.get_weights(), manual.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(weighted.get_weights()[0], unweighted.get_weights()[0])


def test_label_smoothing_loss_matches_keras_categorical_one():
    labels = tf.constant([0, 1, 1])
    probabilities = tf.constant([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    smoothed = model.sparse_loss(2, 0.1)(labels, probabilities)
    expected = tf_keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(
        tf.one_hot(labels, 2), probabilities
    )
    np.testing.assert_allclose(smoothed.numpy(), expected.numpy(), rtol=1e-6)
    assert isinstance(model.sparse_loss(2, 0.0), tf_keras.losses.SparseCategoricalCrossentropy)


def test_early_stopping_restores_the_best_weights():
    assert not [
        c
        for c in trainer._callbacks(trainer.TrainingOptions(), None)
        if isinstance(c, tf_keras.callbacks.EarlyStopping)
    ]
    (stopper,) = trainer._callbacks(trainer.TrainingOptions(early_stopping_patience=2), None)
    assert isinstance(stopper, tf_keras.callbacks.EarlyStopping)
    assert stopper.monitor == "val_loss" and stopper.patience == 2 and stopper.restore_best_weights

    # A learning rate that diverges: training stops and keeps the best epoch's weights.
    features, labels = _features()
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(8)
    head = model.build_head(8, 2, 0.0, 3)
    options = trainer.TrainingOptions(
        epochs=30, batch_size=8, early_stopping_patience=1, shuffle=False, label_smoothing=0.1
    )
    history = trainer.train_network(
        head, dataset, dataset, options, learning_rate=5.0, initial_epoch=0, epochs=30
    )
    assert len(history["loss"]) < 30
    np.testing.assert_allclose(
        head.evaluate(dataset, verbose=0)[0], min(history["val_loss"]), rtol=1e-4
    )
