"""Ingest: layouts, splits, every kind of file a user's folder holds, clear failures.

File-level behaviour is tested on `decode_file` (what each Beam worker runs); the Beam
pipeline itself (`folder_ingest.ingest`, the same transform ImageExampleGen runs) is run a few
times on small folders.
"""

from __future__ import annotations

import hashlib
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components.image_example_gen import ingest
from models import features, ingest_report, preprocessing
from tools import ingest as folder_ingest
from tools import samples


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
                    samples.image_bytes(
                        40 + i,
                        30 + 2 * i,
                        "jpeg",
                        seed=label * 100 + i + (50 if split == "test" else 0),
                    ),
                )
    return str(root)


def read_examples(result: folder_ingest.IngestResult, split: str) -> list[tf.train.Example]:
    files = sorted(tf.io.gfile.glob(os.path.join(result.output_dir, split, "*")))
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return [tf.train.Example.FromString(r.numpy()) for r in dataset]


def feature(example: tf.train.Example, key: str):
    value = example.features.feature[key]
    return (value.bytes_list.value or value.int64_list.value)[0]


def source(path, role: str = ingest.TRAIN, class_name: str = "cat") -> ingest.SourceFile:
    return ingest.SourceFile(role, class_name, str(path), os.path.basename(str(path)))


def pil_bytes(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


# --- The Beam pipeline --------------------------------------------------------------


def test_split_layout_keeps_original_bytes_records_facts_and_holds_out_test(tmp_path):
    images = make_split_folder(tmp_path / "images")
    png = samples.image_bytes(25, 35, "png", seed=5)
    write(os.path.join(images, "train", "dog", "x.png"), png)
    write(os.path.join(images, "train", "cat", "notes.txt"), b"not an image")
    result = folder_ingest.ingest(images, str(tmp_path / "out"))

    assert result.class_names == ("cat", "dog")
    assert result.counts["eval"] == {"cat": 3, "dog": 3}  # test/ untouched
    assert result.counts["train"]["dog"] + result.counts["validation"]["dog"] == 4
    examples = {
        feature(e, features.SOURCE_PATH_KEY): e
        for split in ("train", "validation")
        for e in read_examples(result, split)
    }
    example = examples[b"train/dog/x.png"]
    assert feature(example, features.IMAGE_KEY) == png  # never re-encoded
    assert feature(example, features.IMAGE_FORMAT_KEY) == b"png"
    assert (feature(example, features.HEIGHT_KEY), feature(example, features.WIDTH_KEY)) == (25, 35)
    assert feature(example, features.LABEL_KEY) == 1
    assert feature(example, features.LABEL_TEXT_KEY) == b"dog"
    eval_paths = {feature(e, features.SOURCE_PATH_KEY) for e in read_examples(result, "eval")}
    assert all(p.startswith(b"test/") for p in eval_paths) and len(eval_paths) == 6
    with open(os.path.join(result.output_dir, "labels.txt")) as f:
        assert f.read() == "cat\ndog\n"
    with open(os.path.join(result.output_dir, ingest_report.REPORT_FILE)) as f:
        report = json.load(f)
    assert report["skipped"] == [
        {
            "path": "train/cat/notes.txt",
            "split": "train",
            "class": "cat",
            "reason": "not an image (content matches no image format)",
        }
    ]


def test_flat_layout_three_way_split_by_content_interleaved_and_deterministic(tmp_path):
    root = tmp_path / "flat"
    for c, name in enumerate(("a", "b", "c")):
        for i in range(20):
            write(
                os.path.join(root, name, f"{i}.png"),
                samples.image_bytes(8, 8, "png", seed=c * 100 + i),
            )
    # The same photo in two class folders: one split for both copies, reported.
    duplicate = samples.image_bytes(8, 8, "png", seed=999)
    write(os.path.join(root, "a", "dup.png"), duplicate)
    write(os.path.join(root, "b", "dup.png"), duplicate)
    options = ingest.SplitOptions(validation_fraction=0.25, eval_fraction=0.25)
    result = folder_ingest.ingest(str(root), str(tmp_path / "out"), options)

    counts = result.counts
    for name in ("a", "b", "c"):
        assert sum(counts[s][name] for s in ingest.SPLITS) == (21 if name != "c" else 20)
    assert sum(counts["eval"].values()) >= 6 and sum(counts["validation"].values()) >= 6
    # Each file's split is its content hash's, whatever its name or folder.
    for split in ingest.SPLITS:
        for example in read_examples(result, split):
            sha = hashlib.sha256(feature(example, features.IMAGE_KEY)).hexdigest()
            u = int(sha[:12], 16) / float(1 << 48)
            expected = "eval" if u < 0.25 else "validation" if u < 0.5 else "train"
            assert split == expected
    [dup] = result.report["duplicates"]
    assert sorted(dup["paths"]) == ["a/dup.png", "b/dup.png"] and len(dup["splits"]) == 1
    # Records are not grouped by class (a shuffle buffer smaller than a class would then
    # see one class only): labels alternate often in write order.
    labels = [feature(e, features.LABEL_KEY) for e in read_examples(result, "train")]
    changes = sum(a != b for a, b in zip(labels, labels[1:]))
    assert changes >= len(labels) // 4, labels
    again = folder_ingest.ingest(str(root), str(tmp_path / "out2"), options)
    assert again.report == {**result.report}
    for split in ingest.SPLITS:
        assert [e.SerializeToString() for e in read_examples(again, split)] == [
            e.SerializeToString() for e in read_examples(result, split)
        ]


def test_folder_whose_class_has_no_valid_image_fails_clearly(tmp_path):
    root = tmp_path / "images"
    for i in range(3):
        write(os.path.join(root, "cat", f"{i}.jpg"), samples.image_bytes(seed=i))
    write(os.path.join(root, "dog", "broken.jpg"), samples.image_bytes()[:100])
    with pytest.raises(ingest.IngestError, match=r"No valid training image for class\(es\) 'dog'"):
        folder_ingest.ingest(str(root), str(tmp_path / "out"))


def test_cli_prints_counts_and_fails_with_exit_code_2(tmp_path, capsys):
    images = make_split_folder(tmp_path / "images")
    assert folder_ingest.main([images, str(tmp_path / "out")]) == 0
    assert "eval            6 images (cat=3, dog=3)" in capsys.readouterr().out
    assert folder_ingest.main([str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err


# --- Listing: layouts and unusable folders (no file is read) -------------------------


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("one_class", "Only one class"),
        ("loose_files", "No class folders"),
        ("missing", "does not exist"),
        ("train_only", "has train/ but no held-out folder"),
        ("extra_eval_class", "class folders that train/ lacks"),
        ("empty_class_folder", "No training files for class(es) 'dog'"),
    ],
)
def test_unusable_folders_fail_with_a_clear_message(tmp_path, setup, message):
    root = tmp_path / "images"
    jpeg = samples.image_bytes()
    if setup == "one_class":
        write(os.path.join(root, "cat", "1.jpg"), jpeg)
    elif setup == "loose_files":
        write(os.path.join(root, "1.jpg"), jpeg)
    elif setup == "train_only":
        write(os.path.join(root, "train", "cat", "1.jpg"), jpeg)
    elif setup == "extra_eval_class":
        make_split_folder(root)
        write(os.path.join(root, "test", "bird", "1.jpg"), jpeg)
    elif setup == "empty_class_folder":
        write(os.path.join(root, "cat", "1.jpg"), jpeg)
        os.makedirs(os.path.join(root, "dog"))
    with pytest.raises(ingest.IngestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ingest.list_folder(str(root))


def test_non_utf8_file_name_is_skipped_and_reported_and_the_run_goes_on(tmp_path, capsys):
    """A Latin-1 name from an old camera: TF's listing cannot read it; ingest skips it.
    (More names and encodings: test_odd_names.py.)"""
    images = make_split_folder(tmp_path / "images")
    latin1 = os.path.join(os.fsencode(images), b"train", b"cat", b"caf\xe9.jpg")
    with open(latin1, "wb") as f:
        f.write(samples.image_bytes())
    [odd] = [f for f in ingest.list_folder(images).files if f.name_problem]
    assert odd.relpath == "train/cat/caf\\xe9.jpg"  # the exact name, losslessly
    assert "convmv" in odd.name_problem
    assert folder_ingest.main([images, str(tmp_path / "out")]) == 0
    assert "caf\\xe9.jpg: file name is not valid UTF-8" in capsys.readouterr().out


def test_listing_interleaves_classes(tmp_path):
    root = tmp_path / "flat"
    for name in ("a", "b"):
        for i in range(10):
            write(os.path.join(root, name, f"{i}.png"), b"x")
    classes = [f.class_name for f in ingest.list_folder(str(root)).files]
    assert classes != sorted(classes)
    assert sum(a != b for a, b in zip(classes, classes[1:])) >= 5


# --- Every kind of file, on one worker -----------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("zero.jpg", b"", "empty file"),
        ("truncated.jpg", samples.image_bytes(60, 60, "jpeg")[:300], "corrupt or truncated jpeg"),
        ("truncated.png", samples.image_bytes(60, 60, "png")[:200], "corrupt or truncated png"),
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
def test_bad_files_are_skipped_with_their_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    result = ingest.decode_file(source(path))
    assert isinstance(result, ingest.Skipped)
    assert reason in result.reason


def test_unreadable_files_folders_and_symlinks(tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(samples.image_bytes(10, 12, "png"))
    (tmp_path / "link.png").symlink_to(good)
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    (tmp_path / "sub").mkdir()
    linked = ingest.decode_file(source(tmp_path / "link.png"))
    assert isinstance(linked, ingest.DecodedImage) and linked.encoded == good.read_bytes()
    dangling = ingest.decode_file(source(tmp_path / "dangling.png"))
    assert isinstance(dangling, ingest.Skipped) and dangling.reason.startswith("unreadable")
    folder = ingest.decode_file(source(tmp_path / "sub"))
    assert isinstance(folder, ingest.Skipped) and "folder inside a class folder" in folder.reason


def served_pixels(encoded: bytes, size: int) -> np.ndarray:
    """What Transform and the served model compute from the stored bytes."""
    return preprocessing.decode_and_resize(tf.constant([encoded]), size).numpy()[0]


def test_paletted_bmp_is_stored_as_png_with_its_true_colours(tmp_path):
    """TF decodes an 8-bit BMP's palette index as grey: (200,30,10) came out (20,20,20)."""
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[:, :4] = (200, 30, 10)
    rgb[:, 4:] = (10, 90, 220)
    paletted = Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=4)
    path = tmp_path / "old.bmp"
    path.write_bytes(pil_bytes(paletted, "BMP"))
    result = ingest.decode_file(source(path))
    assert isinstance(result, ingest.DecodedImage)
    assert result.image_format == "png" and "paletted BMP" in result.converted
    decoded = tf.io.decode_image(result.encoded, channels=3).numpy()
    np.testing.assert_array_equal(decoded, np.asarray(paletted.convert("RGB")))
    # The served graph refuses the original file (HTTP 400), never answers for grey.
    with pytest.raises(tf.errors.InvalidArgumentError, match="Paletted BMP"):
        tf.function(lambda x: preprocessing.decode_and_resize(x, 8))(
            tf.constant([path.read_bytes()])
        )
    truecolour = pil_bytes(Image.fromarray(rgb), "BMP")  # 24-bit BMPs stay as they are
    assert served_pixels(truecolour, 8).shape == (8, 8, 3)


def _exif_rotated_jpeg(rgb: np.ndarray) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    return pil_bytes(Image.fromarray(rgb), "JPEG", exif=exif.tobytes(), quality=95)


@pytest.mark.parametrize(
    "kind",
    [
        "cmyk_jpeg",
        "progressive_jpeg",
        "png16",
        "paletted_png",
        "animated_gif",
        "exif_rotated",
        "one_pixel",
        "grey_alpha_png",
    ],
)
def test_real_world_formats_decode_the_same_in_ingest_and_in_the_model(tmp_path, kind):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (12, 20, 3), dtype=np.uint8)
    image = Image.fromarray(rgb)
    if kind == "cmyk_jpeg":
        data = pil_bytes(image.convert("CMYK"), "JPEG", quality=95)
    elif kind == "progressive_jpeg":
        data = pil_bytes(image, "JPEG", progressive=True, quality=95)
    elif kind == "png16":
        data = pil_bytes(Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), "PNG")
    elif kind == "paletted_png":
        data = pil_bytes(image.convert("P", palette=Image.ADAPTIVE), "PNG")
    elif kind == "animated_gif":
        frames = [image.convert("P"), Image.fromarray(255 - rgb).convert("P")]
        data = pil_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:])
    elif kind == "exif_rotated":
        data = _exif_rotated_jpeg(rgb)
    elif kind == "one_pixel":
        data = pil_bytes(Image.fromarray(rgb[:1, :1]), "PNG")
    else:
        data = pil_bytes(image.convert("LA"), "PNG")
    path = tmp_path / "photo"
    path.write_bytes(data)
    result = ingest.decode_file(source(path))
    assert isinstance(result, ingest.DecodedImage), result
    assert result.encoded == data and not result.converted  # stored as it came
    # Ingest's facts are those of the pixels the model sees: EXIF orientation is ignored
    # (stored orientation, 20 wide x 12 high), an animation contributes its first frame.
    first = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    assert (result.height, result.width) == first.shape[:2]
    if kind == "exif_rotated":
        assert (result.height, result.width) == (12, 20)
    expected = tf.image.resize(first, [16, 16], antialias=True).numpy()
    np.testing.assert_allclose(served_pixels(data, 16), expected, atol=1e-4)


def test_huge_image_is_skipped_before_decoding(tmp_path):
    huge = Image.new("1", (9500, 9500))  # 90 Mpixel, a few KB as PNG
    path = tmp_path / "huge.png"
    path.write_bytes(pil_bytes(huge, "PNG"))
    result = ingest.decode_file(source(path))
    assert isinstance(result, ingest.Skipped) and result.reason.startswith("too large: 90 Mpixel")
