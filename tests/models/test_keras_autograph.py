"""tf_keras is kept out of AutoGraph's conversion (models/keras_autograph.py):
the rule is in place once the model module is imported, and training gives the same
numbers with or without it (the speed is in bench/results/pipeline.md)."""

from __future__ import annotations

import types

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.autograph.core import config

from models import keras_autograph, model


def _is_skipped(module_name: str) -> bool:
    return any(
        rule.get_action(types.ModuleType(module_name)) == config.Action.DO_NOT_CONVERT
        for rule in config.CONVERSION_RULES
    )


def test_importing_the_model_module_keeps_tf_keras_out_of_autograph():
    assert _is_skipped("tf_keras.src.engine.training")
    assert not _is_skipped("models.model")  # our own code is still converted
    before = len(config.CONVERSION_RULES)
    assert keras_autograph.skip_tf_keras_conversion()
    assert len(config.CONVERSION_RULES) == before  # idempotent


def _trained_head_weights() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    features = rng.normal(size=(64, 8)).astype("float32")
    labels = (features[:, 0] > 0).astype("int64")
    head = model.build_head(8, 2, dropout=0.0, seed=5)
    model.compile_model(head, 0.01, 2, label_smoothing=0.1)
    head.fit(features, labels, batch_size=16, epochs=2, shuffle=False, verbose=0)
    return head.get_weights()


def test_training_gives_the_same_weights_with_and_without_the_rule(monkeypatch):
    skipped = _trained_head_weights()
    package = keras_autograph.TF_KERAS_PACKAGE
    without = tuple(rule for rule in config.CONVERSION_RULES if not rule.matches(package))
    monkeypatch.setattr(config, "CONVERSION_RULES", without)
    assert not _is_skipped("tf_keras.src.engine.training")
    tf.keras.backend.clear_session()
    converted = _trained_head_weights()
    for a, b in zip(skipped, converted):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert len(skipped) == 2 and pytest.approx(0) != float(np.abs(skipped[0]).sum())
