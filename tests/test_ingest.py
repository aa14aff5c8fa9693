"""Ingest: layouts, every kind of bad file, clear failures, deterministic output."""

from __future__ import annotations

import json
import os

import pytest
import tensorflow as tf

from components import ingest
from components.modules import features
from tests import factories


def write(path, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def make_split_folder(root, per_class: int = 3) -> str:
    for split in ("train", "test"):
        for label, name in enumerate(("cat", "dog")):
            for i in range(per_class):
                write(
                    os.path.join(root, split, name, f"{i}.jpg"),
                    factories.image_bytes(40 + i, 30 + 2 * i, "jpeg", seed=label * 100 + i),
                )
    return str(root)


def read_examples(result: ingest.IngestResult, split: str) -> list[tf.train.Example]:
    split_dir = os.path.join(result.tfrecord_dir, split)
    files = sorted(os.path.join(split_dir, f) for f in os.listdir(split_dir))
    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files)]


def feature(example: tf.train.Example, key: str):
    value = example.features.feature[key]
    return (value.bytes_list.value or value.int64_list.value)[0]


def test_split_layout_keeps_original_bytes_and_records_facts(tmp_path):
    images = make_split_folder(tmp_path / "images")
    png = factories.image_bytes(25, 35, "png", seed=5)
    write(os.path.join(images, "train", "dog", "x.png"), png)
    result = ingest.ingest(images, str(tmp_path / "out"), progress=False)

    assert result.class_names == ["cat", "dog"]
    assert result.counts == {"train": {"cat": 3, "dog": 4}, "eval": {"cat": 3, "dog": 3}}
    examples = {feature(e, features.SOURCE_PATH_KEY): e for e in read_examples(result, "train")}
    example = examples[b"train/dog/x.png"]
    assert feature(example, features.IMAGE_KEY) == png  # never re-encoded
    assert feature(example, features.IMAGE_FORMAT_KEY) == b"png"
    assert (feature(example, features.HEIGHT_KEY), feature(example, features.WIDTH_KEY)) == (25, 35)
    assert feature(example, features.LABEL_KEY) == 1
    assert feature(example, features.LABEL_TEXT_KEY) == b"dog"
    with open(result.labels_path) as f:
        assert f.read() == "cat\ndog\n"


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("zero.jpg", b"", "empty file"),
        ("truncated.jpg", factories.image_bytes(60, 60, "jpeg")[:300], "corrupt or truncated jpeg"),
        ("truncated.png", factories.image_bytes(60, 60, "png")[:200], "corrupt or truncated png"),
        ("notes.txt", b"hello, not an image", "not an image"),
        ("fake.jpg", b"<html>an error page saved as jpg</html>", "not an image"),
        (
            "photo.webp",
            b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 20,
            "unsupported image format webp",
        ),
        ("scan.tif", b"II*\x00" + b"\x00" * 40, "unsupported image format tiff"),
        (".DS_Store", b"\x00\x00\x00\x01Bud1", "hidden file"),
    ],
)
def test_bad_files_are_skipped_and_reported(tmp_path, name, content, reason):
    images = make_split_folder(tmp_path / "images")
    write(os.path.join(images, "train", "cat", name), content)
    result = ingest.ingest(images, str(tmp_path / "out"), progress=False)

    assert result.counts["train"] == {"cat": 3, "dog": 3}  # every valid image kept
    with open(result.report_path) as f:
        report = json.load(f)
    assert report["totals"]["skipped"] == 1
    [skipped] = report["skipped"]
    assert skipped["path"] == f"train/cat/{name}"
    assert (skipped["split"], skipped["class"]) == ("train", "cat")
    assert reason in skipped["reason"]


def test_gif_and_bmp_are_accepted(tmp_path):
    images = make_split_folder(tmp_path / "images")
    write(os.path.join(images, "train", "cat", "a.gif"), factories.image_bytes(20, 20, "gif"))
    write(os.path.join(images, "train", "cat", "b.bmp"), factories.image_bytes(20, 20, "bmp"))
    result = ingest.ingest(images, str(tmp_path / "out"), progress=False)
    assert result.counts["train"]["cat"] == 5 and not result.skipped


def test_same_input_gives_byte_identical_output_and_keeps_mtimes(tmp_path):
    images = make_split_folder(tmp_path / "images")
    first = ingest.ingest(images, str(tmp_path / "a"), progress=False)
    second = ingest.ingest(images, str(tmp_path / "b"), progress=False)

    def snapshot(root):
        out = {}
        for dirpath, _, files in os.walk(root):
            for name in files:
                path = os.path.join(dirpath, name)
                with open(path, "rb") as f:
                    out[os.path.relpath(path, root)] = f.read()
        return out

    assert snapshot(first.output_dir) == snapshot(second.output_dir)
    shard = os.path.join(
        first.tfrecord_dir, "train", os.listdir(os.path.join(first.tfrecord_dir, "train"))[0]
    )
    mtime = os.stat(shard).st_mtime_ns
    ingest.ingest(images, str(tmp_path / "a"), progress=False)
    assert os.stat(shard).st_mtime_ns == mtime  # ImportExampleGen's fingerprint survives


def test_flat_layout_is_split_deterministically_by_fraction(tmp_path):
    root = tmp_path / "flat"
    for name in ("a", "b", "c"):
        for i in range(10):
            write(os.path.join(root, name, f"{i}.jpg"), factories.image_bytes(20, 20, seed=i))
    result = ingest.ingest(str(root), str(tmp_path / "out"), eval_fraction=0.3, progress=False)
    assert result.class_names == ["a", "b", "c"]
    assert result.counts["eval"] == {"a": 3, "b": 3, "c": 3}
    assert result.counts["train"] == {"a": 7, "b": 7, "c": 7}
    again = ingest.ingest(str(root), str(tmp_path / "out2"), eval_fraction=0.3, progress=False)
    paths = lambda r: sorted(feature(e, features.SOURCE_PATH_KEY) for e in read_examples(r, "eval"))  # noqa: E731
    assert paths(result) == paths(again)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("one_class", "Only one class"),
        ("empty_class", "No valid training image for class(es) 'dog'"),
        ("loose_files", "No class folders"),
        ("missing", "does not exist"),
        ("train_only", "has train/ but no held-out folder"),
        ("extra_eval_class", "class folders that train/ lacks"),
    ],
)
def test_unusable_folders_fail_with_a_clear_message(tmp_path, setup, message):
    root = tmp_path / "images"
    jpeg = factories.image_bytes()
    if setup == "one_class":
        write(os.path.join(root, "cat", "1.jpg"), jpeg)
    elif setup == "empty_class":
        write(os.path.join(root, "cat", "1.jpg"), jpeg)
        write(os.path.join(root, "cat", "2.jpg"), jpeg)
        write(os.path.join(root, "dog", "broken.jpg"), jpeg[:100])
    elif setup == "loose_files":
        write(os.path.join(root, "1.jpg"), jpeg)
    elif setup == "train_only":
        write(os.path.join(root, "train", "cat", "1.jpg"), jpeg)
    elif setup == "extra_eval_class":
        make_split_folder(root)
        write(os.path.join(root, "test", "bird", "1.jpg"), jpeg)
    with pytest.raises(ingest.IngestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ingest.ingest(str(root), str(tmp_path / "out"), progress=False)


def test_cli_prints_counts_and_fails_with_exit_code_2(tmp_path, capsys):
    images = make_split_folder(tmp_path / "images")
    assert ingest.main([images, str(tmp_path / "out")]) == 0
    assert "train      6 images (cat=3, dog=3)" in capsys.readouterr().out
    assert ingest.main([str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
