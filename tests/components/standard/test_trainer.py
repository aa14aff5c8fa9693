"""Trainer alone: trains on tiny data through run_fn; after the frozen phase the exported
backbone is bit-identical to the weights file, and after fine-tuning the model's
metadata says its backbone weights were changed from the file."""

from __future__ import annotations

import dataclasses
import os

import h5py
import numpy as np
import pytest
import tensorflow as tf
from tfx import v1 as tfx

from components.image_example_gen import ingest
from models import backbones, features, stored_predictions, training_metadata, weights
from models.model import build_backbone
from pipeline.configs import PipelineConfig
from pipeline.image_pipeline import TRAINER_MODULE, TRAINING_KNOBS
from tests.components import harness
from tests.components.conftest import BACKBONE, COLOURS, IMAGE_SIZE


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> str:
    """A user's Keras weights file (BACKBONE_WEIGHTS=<path>): EfficientNet-Lite0's packaged
    ImageNet weights, saved by the test as a notop .h5."""
    path = str(tmp_path_factory.mktemp("weights") / "efficientnet_lite0_notop.h5")
    row = backbones.get_backbone(BACKBONE)
    pretrained = build_backbone(
        BACKBONE, IMAGE_SIZE, weights.resolve_weights(weights.IMAGENET, row)
    )
    pretrained.save_weights(path)
    return path


def _file_weights(path: str) -> dict[str, np.ndarray]:
    """Every weight in a Keras h5 weights file by its variable name, read with h5py."""
    found = {}
    with h5py.File(path, "r") as f:
        for layer in f.attrs["layer_names"]:
            group = f[layer]
            for name in group.attrs["weight_names"]:
                found[name.decode() if isinstance(name, bytes) else name] = group[name][()]
    return found


def _train(root: str, dataset, transform_graph, weights_file: str, **knobs):
    """The Trainer as pipeline/image_pipeline.py configures it, on the shared fixtures."""
    config = dataclasses.replace(
        PipelineConfig(), epochs=1, batch_size=4, backbone=BACKBONE, **knobs
    )
    examples = harness.import_examples(dataset.output_dir)
    transform = harness.import_output(transform_graph, "transform_graph")
    schema = harness.import_schema(root)
    component = tfx.components.Trainer(
        module_file=TRAINER_MODULE,
        examples=examples.outputs[harness.IMPORT_KEY],
        transform_graph=transform.outputs[harness.IMPORT_KEY],
        schema=schema.outputs[harness.IMPORT_KEY],
        train_args=tfx.proto.TrainArgs(splits=[ingest.TRAIN]),
        eval_args=tfx.proto.EvalArgs(splits=[ingest.VALIDATION]),
        custom_config={
            **{name: getattr(config, name) for name in TRAINING_KNOBS},
            "image_size": IMAGE_SIZE,
            "backbone": BACKBONE,
            "weights": weights.resolve_weights(
                weights_file, backbones.get_backbone(BACKBONE)
            ).as_dict(),
            # ingest's report in the Examples artifact overrides these in run_fn.
            "class_names": list(dataset.class_names),
            "class_counts": [],
            "evaluator_split": ingest.EVAL,
        },
    )
    model = harness.LocalRun(root).run(component)["model"][0]
    return os.path.join(model.uri, "Format-Serving")


def _exported_variables(export_dir: str) -> dict[str, np.ndarray]:
    loaded = tf.saved_model.load(export_dir)
    return {v.name: v.numpy() for v in loaded.model_variables}


@pytest.fixture(scope="module")
def frozen_model(tmp_path_factory, dataset, transform_graph, weights_file) -> str:
    return _train(str(tmp_path_factory.mktemp("trainer")), dataset, transform_graph, weights_file)


def test_trains_and_exports_a_model_that_answers(frozen_model, dataset):
    metadata = training_metadata.read_training_metadata(frozen_model)
    assert metadata["class_names"] == list(dataset.class_names) == sorted(COLOURS)
    assert len(metadata["history"]["loss"]) == 1 and np.isfinite(metadata["history"]["loss"][0])
    assert metadata["training_options"]["class_counts"] == [
        dataset.counts["train"][name] for name in dataset.class_names
    ]
    images = harness.coloured_images(2, COLOURS["warm"], size=40, seed=99)
    outputs = tf.saved_model.load(frozen_model).signatures[features.SERVING_SIGNATURE](
        **{features.SERVING_INPUT_KEY: tf.constant(images)}
    )
    probabilities = outputs[features.PROBABILITIES_KEY].numpy()
    assert probabilities.shape == (2, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_frozen_backbone_is_bit_identical_to_the_weights_file(frozen_model, weights_file):
    in_file = _file_weights(weights_file)
    exported = _exported_variables(frozen_model)
    assert set(in_file) <= set(exported)  # every backbone weight, under the same name
    for name, value in in_file.items():
        np.testing.assert_array_equal(exported[name], value, err_msg=name)
    metadata = training_metadata.read_training_metadata(frozen_model)
    assert metadata["backbone_weights_changed"] is False
    assert metadata["backbone_weights"]["sha256"] == weights.sha256_of(weights_file)


def _eval_records(dataset) -> list[bytes]:
    files = tf.io.gfile.glob(os.path.join(dataset.output_dir, ingest.EVAL, "*"))
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


@pytest.fixture(scope="module")
def bfloat16_model(tmp_path_factory, dataset, transform_graph, weights_file) -> str:
    return _train(
        str(tmp_path_factory.mktemp("trainer_bf16")),
        dataset,
        transform_graph,
        weights_file,
        backbone_dtype="bfloat16",
    )


@pytest.mark.parametrize("model_fixture", ["frozen_model", "bfloat16_model"])
def test_stored_eval_predictions_are_what_the_exported_model_answers(
    model_fixture, dataset, request
):
    """The predictions the Trainer stores for the Evaluator (from cached features through
    the head) equal the exported SavedModel's own answers on every eval example; with
    BACKBONE_DTYPE=bfloat16 too, whose head trained on bfloat16 features while the served
    model runs float32 (the eval split gets a float32 pass)."""
    frozen_model = request.getfixturevalue(model_fixture)
    stored = stored_predictions.read(os.path.dirname(frozen_model))
    records = _eval_records(dataset)
    assert stored is not None and len(stored.digests) == len(records) > 0
    assert stored.class_names == tuple(dataset.class_names)
    served = (
        tf.saved_model.load(frozen_model)
        .signatures[features.TF_EXAMPLE_SIGNATURE](
            **{features.TF_EXAMPLE_INPUT_KEY: tf.constant(records)}
        )[features.PROBABILITIES_KEY]
        .numpy()
    )
    table = stored.table()
    by_record = np.stack([table[stored_predictions.example_digest(r)] for r in records])
    np.testing.assert_allclose(by_record, served, atol=1e-5)
    # Pretrained features: the answers differ from example to example, so a prediction
    # stored under another example's digest would be caught.
    assert np.ptp(served[:, 0]) > 1e-3, served
    metadata = training_metadata.read_training_metadata(frozen_model)
    assert metadata["stored_eval_predictions"]["count"] == len(records)


def test_fine_tuning_says_the_weights_changed_from_the_file(
    tmp_path, dataset, transform_graph, weights_file
):
    model_dir = _train(
        str(tmp_path),
        dataset,
        transform_graph,
        weights_file,
        fine_tune_blocks=1,
        fine_tune_epochs=1,
        fine_tune_learning_rate=1e-2,
    )
    metadata = training_metadata.read_training_metadata(model_dir)
    assert metadata["backbone_weights_changed"] is True
    assert len(metadata["history"]["loss"]) == 2
    # It is true: a fine-tuned (top block) kernel differs from the file's.
    in_file, exported = _file_weights(weights_file), _exported_variables(model_dir)
    assert not np.array_equal(in_file["top_conv/kernel:0"], exported["top_conv/kernel:0"])
    # Cached features no longer describe this backbone: no stored eval predictions.
    assert stored_predictions.read(os.path.dirname(model_dir)) is None
    assert "fine-tuning" in metadata["stored_eval_predictions"]["reason"]
