"""Shared fixtures of the component tests: one tiny ingested dataset, built once.

Two separable colour classes with unequal counts, so label distributions are checkable;
64 px images, which Transform resizes to IMAGE_SIZE with EfficientNet-Lite0's preprocessing:
the Trainer's tests train on its packaged ImageNet weights, whose features differ from
image to image (a random backbone's barely do, so a prediction compared between two paths
would agree even if one were wrong).
"""

from __future__ import annotations

import glob
import os

import pytest
import tensorflow as tf
from tfx import v1 as tfx

from components.image_example_gen import ingest
from models import features
from pipeline.image_pipeline import TRANSFORM_MODULE
from tests.components import harness
from tools import ingest as folder_ingest

IMAGE_SIZE = 32
SOURCE_SIZE = 64
BACKBONE = "efficientnet_lite0"
COLOURS = {"cool": (40, 90, 220), "warm": (220, 60, 40)}  # sorted: cool = 0, warm = 1
# Images per folder; ingest holds out VALIDATION_FRACTION of train/ (by content hash) as
# the validation split and test/ becomes eval. Tests read the resulting counts from the
# ingest report (dataset.counts).
COUNTS = {"train": {"cool": 3, "warm": 5}, "test": {"cool": 2, "warm": 1}}
VALIDATION_FRACTION = 0.4


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> folder_ingest.IngestResult:
    """The records ingest writes for COUNTS images per folder (test/ becomes split eval)."""
    root = tmp_path_factory.mktemp("dataset")
    images = {
        split: {
            name: harness.coloured_images(count, COLOURS[name], SOURCE_SIZE, seed=10 * i)
            for i, (name, count) in enumerate(classes.items())
        }
        for split, classes in COUNTS.items()
    }
    result = harness.ingest_images(
        str(root), images, options=ingest.SplitOptions(validation_fraction=VALIDATION_FRACTION)
    )
    assert all(result.total(split) for split in ingest.SPLITS), result.counts
    return result


@pytest.fixture(scope="session")
def statistics(tmp_path_factory, dataset):
    """StatisticsGen's output on the dataset (shared by the schema and validator tests)."""
    run = harness.LocalRun(str(tmp_path_factory.mktemp("statistics_run")))
    examples = harness.import_examples(dataset.output_dir)
    outputs = run.run(tfx.components.StatisticsGen(examples=examples.outputs[harness.IMPORT_KEY]))
    return outputs["statistics"][0]


def validate(statistics_artifact, root: str):
    """ExampleValidator alone on `statistics_artifact` against the committed schema."""
    statistics = harness.import_output(statistics_artifact, "statistics")
    schema = harness.import_schema(root)
    validator = tfx.components.ExampleValidator(
        statistics=statistics.outputs[harness.IMPORT_KEY],
        schema=schema.outputs[harness.IMPORT_KEY],
    )
    return harness.LocalRun(root).run(validator)["anomalies"][0]


def _rewrite(tfrecord_dir: str, out_dir: str, split: str, change) -> None:
    """Copy every split's records, applying `change` to the first tf.Example of `split`."""
    for name in ingest.SPLITS:
        paths = sorted(glob.glob(os.path.join(tfrecord_dir, name, "*")))
        records = [r.numpy() for r in tf.data.TFRecordDataset(paths, compression_type="GZIP")]
        if name == split:
            first = tf.train.Example.FromString(records[0])
            change(first.features.feature)
            records[0] = first.SerializeToString()
        os.makedirs(os.path.join(out_dir, name), exist_ok=True)
        path = os.path.join(out_dir, name, "data_tfrecord-00000-of-00001.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for record in records:
                writer.write(record)


def _set_label(label: int):
    def change(feature_map):
        feature_map[features.LABEL_KEY].int64_list.value[0] = label

    return change


@pytest.fixture(scope="session")
def broken_anomalies(tmp_path_factory, dataset):
    """ExampleValidator's anomalies for the dataset with one example's image missing
    (train) and one label below the schema's domain (eval)."""
    root = tmp_path_factory.mktemp("broken")
    out = str(root / "tfrecords")
    _rewrite(dataset.output_dir, out, "train", lambda f: f.pop(features.IMAGE_KEY))
    _rewrite(out, out, "eval", _set_label(-1))
    examples = harness.import_examples(out)
    statistics_gen = tfx.components.StatisticsGen(examples=examples.outputs[harness.IMPORT_KEY])
    statistics = harness.LocalRun(str(root / "statistics_run")).run(statistics_gen)
    return validate(statistics["statistics"][0], str(root / "validator_run"))


@pytest.fixture(scope="session")
def transform_graph(tmp_path_factory, dataset):
    """Transform's output on the dataset, configured as the pipeline configures it."""
    root = str(tmp_path_factory.mktemp("transform_run"))
    examples = harness.import_examples(dataset.output_dir)
    schema = harness.import_schema(root)
    transform = tfx.components.Transform(
        examples=examples.outputs[harness.IMPORT_KEY],
        schema=schema.outputs[harness.IMPORT_KEY],
        module_file=TRANSFORM_MODULE,
        custom_config={"image_size": IMAGE_SIZE, "backbone": BACKBONE},
        materialize=False,
        disable_statistics=True,
    )
    return harness.LocalRun(root).run(transform)["transform_graph"][0]
