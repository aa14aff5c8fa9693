"""ImageExampleGen's unlabelled mode: any nesting, training's decoder and skip rules."""

from __future__ import annotations

import apache_beam as beam
import tensorflow as tf

from components.image_example_gen import ingest, unlabelled
from models import features
from models.ingest_report import read_report
from tools import samples


def test_every_file_at_any_depth_is_an_example_or_a_listed_skip(tmp_path):
    images = tmp_path / "photos"
    (images / "a" / "b").mkdir(parents=True)
    (images / ".hidden_dir").mkdir()
    (images / "top.jpg").write_bytes(samples.image_bytes(20, 30, "jpeg", seed=1))
    (images / "a" / "b" / "deep.png").write_bytes(samples.image_bytes(10, 12, "png", seed=2))
    (images / "a" / "readme.txt").write_text("no photo")
    (images / ".hidden_dir" / "x.jpg").write_bytes(samples.image_bytes(8, 8, "jpeg"))
    listing = unlabelled.list_unlabelled(str(images))
    assert sorted(f.relpath for f in listing.files) == ["a/b/deep.png", "a/readme.txt", "top.jpg"]
    listing_path = ingest.write_listing(listing, str(tmp_path))
    report_path = str(tmp_path / "report" / "ingest_report.json")
    out = tmp_path / "records"
    with beam.Pipeline() as pipeline:
        _ = (
            pipeline
            | unlabelled.IngestUnlabelledImages(listing, listing_path, report_path)
            | beam.io.WriteToTFRecord(str(out / "part"))
        )
    records = tf.data.TFRecordDataset(tf.io.gfile.glob(str(out / "part*")))
    examples = [tf.train.Example.FromString(r.numpy()) for r in records]
    paths = sorted(
        e.features.feature[features.SOURCE_PATH_KEY].bytes_list.value[0] for e in examples
    )
    assert paths == [b"a/b/deep.png", b"top.jpg"]
    assert all(features.LABEL_KEY not in e.features.feature for e in examples)
    report = read_report(str(tmp_path / "report"))
    assert report["totals"] == {"listed": 3, "unlabelled": 2, "skipped": 1}
    [skipped] = report["skipped"]
    assert skipped["path"] == "a/readme.txt"
