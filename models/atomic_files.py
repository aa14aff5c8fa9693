"""Files that readers see whole or not at all: write a temporary name, then rename.

One helper for every writer that must never expose half a file (ingest's listing and
report, the feature cache, the warm-up records, bench results). Through tf.io.gfile, so the
same call works on local paths and on buckets.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable

import tensorflow as tf


def write_atomically(path: str, write: Callable[[str], None]) -> None:
    """write(temporary path), then rename it onto `path`; the temporary file never stays."""
    tf.io.gfile.makedirs(os.path.dirname(path) or ".")
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        write(tmp)
        tf.io.gfile.rename(tmp, path, overwrite=True)
    finally:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)


def write_text_atomically(path: str, text: str) -> None:
    def write(tmp: str) -> None:
        with tf.io.gfile.GFile(tmp, "w") as f:
            f.write(text)

    write_atomically(path, write)
