"""Keep AutoGraph out of tf_keras' own code, as TensorFlow keeps it out of `keras`'s.

Why: every tf.function trace (Keras fit and predict, a SavedModel export) runs AutoGraph,
which rewrites Python control flow into graph ops, on each function it reaches unless the
function's package is on TensorFlow's do-not-convert list
(tensorflow/python/autograph/core/config.py). Keras 2 is written to trace without
conversion, so the list has `keras`. With TF_USE_LEGACY_KERAS=1 the same Keras 2 code is the
`tf_keras` package, which the list (TF 2.16) lacks: every trace re-converted hundreds of
Keras functions. Measured on the Tuner's first trial (a dense head, load average ~6): 60 s
of tracing with the conversion, 8 s without (tests/models/test_keras_autograph.py checks the rule
and that training and export give the same numbers either way).

The list is TensorFlow's internal module attribute, read at every conversion; if a later
TensorFlow moves it, this does nothing and says so in the log.
"""

from __future__ import annotations

import logging

TF_KERAS_PACKAGE = "tf_keras"


def skip_tf_keras_conversion() -> bool:
    """Add a do-not-convert rule for tf_keras (once). True if the rule is in place."""
    try:
        from tensorflow.python.autograph.core import config, config_lib
    except ImportError:  # a TensorFlow without this internal module
        logging.info("AutoGraph's conversion rules not found: tf_keras is converted as usual.")
        return False
    rules = config.CONVERSION_RULES
    if not any(
        isinstance(rule, config_lib.DoNotConvert) and rule.matches(TF_KERAS_PACKAGE)
        for rule in rules
    ):
        config.CONVERSION_RULES = (config_lib.DoNotConvert(TF_KERAS_PACKAGE), *rules)
    return True
