"""ImageExampleGen alone under TFX's LocalDagRunner: records, splits, labels, the report.

The component is built exactly as the pipeline builds it, on a small folder the test
writes, in a pipeline of its own with its own SQLite ML Metadata. A second run with
nothing changed is served from cache (TFX's input fingerprint); a changed photo re-runs it.
"""

from __future__ import annotations

import json
import os

import pytest
import tensorflow as tf
from ml_metadata import metadata_store
from tfx import v1 as tfx

from components.image_example_gen import ingest
from components.image_example_gen.component import ImageExampleGen
from models import features
from models.ingest_report import REPORT_FILE
from pipeline.configs import DEFAULT_BEAM_PIPELINE_ARGS
from pipeline.metadata import component_executions, latest_run
from tools import ingest as folder_ingest
from tools import samples

PIPELINE_NAME = "example-gen-test"


def run_example_gen(images: str, root: str, beam_pipeline_args: list[str] | None = None) -> dict:
    """Run the component; its execution as the run summary reads it from ML Metadata."""
    connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(
        os.path.join(root, "metadata.sqlite")
    )
    tfx.orchestration.LocalDagRunner().run(
        tfx.dsl.Pipeline(
            pipeline_name=PIPELINE_NAME,
            pipeline_root=os.path.join(root, "pipeline_root"),
            components=[ImageExampleGen(images, validation_fraction=0.3)],
            enable_cache=True,
            metadata_connection_config=connection,
            beam_pipeline_args=beam_pipeline_args or list(DEFAULT_BEAM_PIPELINE_ARGS),
        )
    )
    store = metadata_store.MetadataStore(connection)
    return component_executions(store, latest_run(store, PIPELINE_NAME))["ImageExampleGen"]


def records(uri: str, split: str) -> list[tf.train.Example]:
    files = sorted(tf.io.gfile.glob(os.path.join(uri, f"Split-{split}", "*")))
    assert files and all(f.endswith(".gz") for f in files)  # ExampleGen's gzip'd shards
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return [tf.train.Example.FromString(r.numpy()) for r in dataset]


def value(example: tf.train.Example, key: str):
    feature = example.features.feature[key]
    return (feature.bytes_list.value or feature.int64_list.value)[0]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("example_gen")
    images = root / "images"
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220)}
    for split, count in (("train", 8), ("test", 3)):
        for c, (name, colour) in enumerate(colours.items()):
            (images / split / name).mkdir(parents=True)
            for i in range(count):
                (images / split / name / f"{i}.png").write_bytes(
                    samples.image_bytes(
                        16, 16, "png", seed=c * 100 + i + 50 * (split == "test"), color=colour
                    )
                )
    (images / "train" / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return {"root": root, "images": str(images), "first": run_example_gen(str(images), str(root))}


def test_records_splits_labels_and_report(folder):
    execution = folder["first"]
    assert execution["state"] == "COMPLETE"
    [examples] = execution["outputs"]["Examples"]
    assert json.loads(examples.properties["split_names"].string_value) == list(ingest.SPLITS)
    by_split = {split: records(examples.uri, split) for split in ingest.SPLITS}
    # test/ is the eval split, untouched; train/ gave train and validation.
    assert len(by_split["eval"]) == 6
    assert all(value(e, features.SOURCE_PATH_KEY).startswith(b"test/") for e in by_split["eval"])
    assert len(by_split["train"]) + len(by_split["validation"]) == 16
    assert by_split["validation"]
    for examples_of_split in by_split.values():
        for example in examples_of_split:
            label_text = value(example, features.LABEL_TEXT_KEY).decode()
            assert value(example, features.LABEL_KEY) == ["blue", "red"].index(label_text)
            assert f"/{label_text}/" in value(example, features.SOURCE_PATH_KEY).decode()
            assert value(example, features.IMAGE_FORMAT_KEY) == b"png"
    with open(os.path.join(examples.uri, REPORT_FILE)) as f:
        report = json.load(f)
    assert report["class_names"] == ["blue", "red"]
    assert report["counts"]["eval"] == {"blue": 3, "red": 3}
    [skipped] = report["skipped"]
    assert skipped["path"] == "train/red/broken.jpg"
    assert skipped["reason"].startswith("corrupt or truncated jpeg")
    # ... and in ML Metadata, with the artifact.
    custom = examples.custom_properties
    assert json.loads(custom["class_names"].string_value) == ["blue", "red"]
    assert custom["skipped_files"].int_value == 1
    assert custom["eval_images"].int_value == 6


def test_unchanged_photos_are_cached_and_a_changed_photo_reruns(folder):
    again = run_example_gen(folder["images"], str(folder["root"]))
    assert again["state"] == "CACHED"
    assert again["outputs"]["Examples"][0].uri == folder["first"]["outputs"]["Examples"][0].uri
    photo = os.path.join(folder["images"], "test", "blue", "0.png")
    with open(photo, "wb") as f:
        f.write(samples.image_bytes(20, 16, "png", seed=7, color=(30, 30, 200)))
    # Re-run on two DirectRunner worker processes: BEAM_PIPELINE_ARGS reaches the workers
    # that decode the photos. (New Beam flags alone would re-run it too: they are part of
    # TFX's cache key.)
    multi = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    changed = run_example_gen(folder["images"], str(folder["root"]), multi)
    assert changed["state"] == "COMPLETE"
    eval_records = records(changed["outputs"]["Examples"][0].uri, "eval")
    widths = {
        value(e, features.SOURCE_PATH_KEY): value(e, features.WIDTH_KEY) for e in eval_records
    }
    assert widths[b"test/blue/0.png"] == 16 and len(widths) == 6
    heights = {
        value(e, features.SOURCE_PATH_KEY): value(e, features.HEIGHT_KEY) for e in eval_records
    }
    assert heights[b"test/blue/0.png"] == 20


def test_examples_knob_reads_image_tfrecords_with_import_example_gen(folder, tmp_path):
    """EXAMPLES=<make ingest's folder>: TFX's ImportExampleGen over the same records."""
    from pipeline.configs import PipelineConfig
    from pipeline.image_pipeline import example_gen_and_classes

    result = folder_ingest.ingest(folder["images"], str(tmp_path / "data"))
    config = PipelineConfig(examples=result.output_dir, output=str(tmp_path / "out"))
    example_gen, classes = example_gen_and_classes(config, "")
    assert type(example_gen).__name__ == "ImportExampleGen"
    assert classes == {
        "class_names": ["blue", "red"],
        "class_counts": [result.counts["train"]["blue"], result.counts["train"]["red"]],
    }
    connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(
        str(tmp_path / "metadata.sqlite")
    )
    tfx.orchestration.LocalDagRunner().run(
        tfx.dsl.Pipeline(
            pipeline_name=PIPELINE_NAME,
            pipeline_root=str(tmp_path / "root"),
            components=[example_gen],
            metadata_connection_config=connection,
        )
    )
    store = metadata_store.MetadataStore(connection)
    execution = component_executions(store, latest_run(store, PIPELINE_NAME))["ImportExampleGen"]
    [examples] = execution["outputs"]["Examples"]
    for split in ingest.SPLITS:
        assert len(records(examples.uri, split)) == result.report["totals"][split]
