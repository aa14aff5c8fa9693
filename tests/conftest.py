"""Test-wide setup: Keras 2 (tf_keras) before anything imports TensorFlow."""

import os

# Must be set before TensorFlow is first imported (see ../shared notes: once tf.keras
# resolves to Keras 3 in a process it stays so).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
