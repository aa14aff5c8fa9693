"""The training metadata file a model carries in assets.extra/, written once, read anywhere.

Why a module of its own: the Trainer writes it (export.py), and the run summary, the
evaluation report and tests read it from the exported model; readers downstream of the
Trainer should not import the Trainer's modules (Keras, the export graph) to read a JSON
file. Paths go through tf.io.gfile, so a model on gs:// (Vertex) reads and writes the same.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from models.atomic_files import write_text_atomically
from models.features import TRAINING_METADATA_FILE


def write_training_metadata(export_dir: str, metadata: dict) -> None:
    path = os.path.join(export_dir, TRAINING_METADATA_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    write_text_atomically(path, json.dumps(metadata, indent=2, sort_keys=True))


def read_training_metadata(export_dir: str) -> dict:
    with tf.io.gfile.GFile(os.path.join(export_dir, TRAINING_METADATA_FILE)) as f:
        return json.load(f)
