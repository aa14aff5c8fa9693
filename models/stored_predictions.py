"""A model's predictions on the eval split, stored beside it by the Trainer, read by the Evaluator.

Why: with a frozen backbone the Trainer can predict the eval split from cached backbone
features in milliseconds, while the Evaluator would otherwise run every eval photo through
the whole network, once for the candidate and once more for the baseline (the last blessed
model). With the predictions stored in each Model artifact, a head-only re-run scores
both models without a backbone pass: the baseline's were stored by the run that trained it.

Trust: the Evaluator does not take them on faith. It runs the exported SavedModel itself
on a fixed sample of the eval examples (about one in CHECK_ONE_IN, chosen by content, and
at least one per worker) and stops with an error when a stored prediction differs from
the model's by more than TOLERANCE. Any example without a stored prediction (new eval
data, a fine-tuned model, STORED_EVAL_PREDICTIONS=false) is scored by the model as usual.

Layout: `<Model artifact>/eval_predictions/predictions.npz`, beside `Format-Serving/` (so
the Pusher, which copies the SavedModel only, never ships it), written atomically. Each
example is found by the SHA-256 of its serialized tf.Example: the bytes the Evaluator
reads are the bytes the Trainer read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from collections.abc import Iterable, Sequence

import numpy as np
import tensorflow as tf

from models.atomic_files import write_atomically

STORED_PREDICTIONS_DIR = "eval_predictions"
STORED_PREDICTIONS_FILE = "predictions.npz"
# Check about one example in this many against the model (by digest: the same examples
# on every run), plus the first example each Evaluator worker sees.
CHECK_ONE_IN = 32
# Largest |stored - model| probability accepted: float32 noise from a different batch
# composition is ~1e-6; an export that computes something else is off by far more.
TOLERANCE = 1e-4
_DIGEST_BYTES = 16


def example_digest(serialized: bytes) -> bytes:
    """How an example is found: the SHA-256 (first 16 bytes) of its serialized bytes."""
    return hashlib.sha256(serialized).digest()[:_DIGEST_BYTES]


def is_checked(digest: bytes) -> bool:
    """Whether the Evaluator checks this example's stored prediction against the model."""
    return digest[0] % CHECK_ONE_IN == 0


def path_for_model(model_uri: str) -> str:
    """The file in a Model artifact (its uri, the parent of Format-Serving/)."""
    return os.path.join(model_uri, STORED_PREDICTIONS_DIR, STORED_PREDICTIONS_FILE)


@dataclasses.dataclass(frozen=True)
class StoredPredictions:
    """Probabilities per example digest, and the class names they index."""

    digests: np.ndarray  # bytes (S16) [N]
    probabilities: np.ndarray  # float32 [N, num_classes]
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.digests) != len(self.probabilities):
            raise ValueError(
                f"{len(self.digests)} digests for {len(self.probabilities)} predictions"
            )

    def table(self) -> dict[bytes, np.ndarray]:
        return {bytes(d): p for d, p in zip(self.digests, self.probabilities)}


def build(
    serialized_examples: Iterable[bytes], probabilities: np.ndarray, class_names: Sequence[str]
) -> StoredPredictions:
    digests = np.array([example_digest(s) for s in serialized_examples], dtype=f"S{_DIGEST_BYTES}")
    return StoredPredictions(
        digests, np.asarray(probabilities, np.float32), tuple(str(c) for c in class_names)
    )


def write(model_uri: str, predictions: StoredPredictions) -> str:
    """Write atomically into the Model artifact; returns the file's path."""
    path = path_for_model(model_uri)

    def write_file(tmp_path: str) -> None:
        buffer = io.BytesIO()
        np.savez(
            buffer,
            digests=predictions.digests,
            probabilities=predictions.probabilities,
            class_names=np.array(predictions.class_names, dtype=object).astype(str),
        )
        with tf.io.gfile.GFile(tmp_path, "wb") as f:
            f.write(buffer.getvalue())

    write_atomically(path, write_file)
    return path


def read(model_uri: str) -> StoredPredictions | None:
    """The stored predictions of the model at `model_uri`, or None when it has none."""
    path = path_for_model(model_uri)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "rb") as f:
        data = np.load(io.BytesIO(f.read()), allow_pickle=False)
        return StoredPredictions(
            data["digests"], data["probabilities"], tuple(str(c) for c in data["class_names"])
        )
