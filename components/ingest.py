"""Ingest an image folder into sharded TFRecords of tf.Example for ImportExampleGen.

Accepts `<dir>/{train,test}/<class>/*` or a bare `<dir>/<class>/*` (split into train
and eval deterministically). Every file is decoded with the decoder the model uses;
whatever cannot be decoded is skipped and listed with its reason in the ingest report,
never silently dropped. The original encoded bytes are stored as they are. The same
input gives byte-identical output, and files whose content did not change keep their
modification time, so ImportExampleGen's fingerprint (and every cached component
downstream of it) survives a re-ingest.

    python -m components.ingest IMAGES_DIR OUTPUT_DIR [--eval-fraction 0.2]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator

import tensorflow as tf
from tqdm import tqdm

from components.modules import features

TRAIN, EVAL = "train", "eval"
SPLITS = (TRAIN, EVAL)
# Folder names accepted for the held-out split next to `train/`, in order of preference.
EVAL_DIR_NAMES = ("test", "eval", "validation", "val")
REPORT_FILE = "ingest_report.json"
LABELS_FILE = "labels.txt"
TFRECORD_DIR = "tfrecords"
SHARD_TARGET_BYTES = 64 << 20

_MAGIC = (  # leading bytes -> format
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"\x00\x00\x01\x00", "ico"),
    (b"%PDF", "pdf"),
)


class IngestError(ValueError):
    """The folder cannot be ingested; the message says what is wrong and how to fix it."""


@dataclasses.dataclass(frozen=True)
class SourceFile:
    split: str
    class_name: str
    path: str  # absolute
    relpath: str  # relative to the image folder, as recorded in examples and the report


@dataclasses.dataclass(frozen=True)
class DecodedImage:
    source: SourceFile
    encoded: bytes
    image_format: str
    height: int
    width: int


@dataclasses.dataclass(frozen=True)
class IngestResult:
    output_dir: str
    class_names: list[str]
    counts: dict[str, dict[str, int]]  # split -> class -> valid images
    skipped: list[dict]
    report_path: str
    labels_path: str
    tfrecord_dir: str  # holds train/ and eval/ shards: ImportExampleGen's input_base

    def total(self, split: str) -> int:
        return sum(self.counts[split].values())


def sniff_format(head: bytes) -> str | None:
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        return "heif/avif"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _subdirs(path: str) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not _is_hidden(e.name))


def _walk_files(root: str) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for name in sorted(filenames):
            yield os.path.join(dirpath, name)


def _split_fraction(relpath: str) -> float:
    """A stable pseudo-random number in [0, 1) per file, independent of the machine."""
    return int(hashlib.sha256(relpath.encode()).hexdigest()[:12], 16) / float(1 << 48)


def discover(images_dir: str, eval_fraction: float) -> tuple[str, list[str], list[SourceFile]]:
    """Find (layout, class names, files) in either supported layout."""
    images_dir = os.path.abspath(images_dir)
    if not os.path.isdir(images_dir):
        raise IngestError(f"Image folder {images_dir} does not exist or is not a directory.")
    top = _subdirs(images_dir)
    if "train" in top:
        layout = "split"
        eval_dir = next((d for d in EVAL_DIR_NAMES if d in top), None)
        if eval_dir is None:
            raise IngestError(
                f"{images_dir} has train/ but no held-out folder; add one of "
                f"{', '.join(n + '/' for n in EVAL_DIR_NAMES)} with the same class folders, "
                "or put the class folders directly in the image folder to split automatically."
            )
        split_roots = {
            TRAIN: os.path.join(images_dir, "train"),
            EVAL: os.path.join(images_dir, eval_dir),
        }
        class_names = _subdirs(split_roots[TRAIN])
        files = []
        for split, root in split_roots.items():
            for class_name in _subdirs(root):
                for path in _walk_files(os.path.join(root, class_name)):
                    files.append(
                        SourceFile(split, class_name, path, os.path.relpath(path, images_dir))
                    )
            extra = set(_subdirs(root)) - set(class_names)
            if extra:
                raise IngestError(
                    f"{root} has class folders that train/ lacks: {sorted(extra)}. "
                    "Every class needs training images; add them to train/ or remove the folders."
                )
    else:
        layout = "flat"
        if not 0.0 < eval_fraction < 1.0:
            raise IngestError(f"eval_fraction must be between 0 and 1, got {eval_fraction}.")
        class_names = top
        files = []
        for class_name in class_names:
            paths = list(_walk_files(os.path.join(images_dir, class_name)))
            rels = [os.path.relpath(p, images_dir) for p in paths]
            # Sort by a hash of the path: which files go to eval does not depend on the
            # order the file system lists them, and adding files moves few others.
            by_hash = sorted(
                zip(rels, paths, strict=False), key=lambda rp: (_split_fraction(rp[0]), rp[0])
            )
            n_eval = round(len(by_hash) * eval_fraction)
            if len(by_hash) >= 2:
                n_eval = min(max(n_eval, 1), len(by_hash) - 1)
            eval_rels = {rel for rel, _ in by_hash[:n_eval]}
            for rel, path in zip(rels, paths, strict=False):
                files.append(SourceFile(EVAL if rel in eval_rels else TRAIN, class_name, path, rel))
    if not class_names:
        loose = [e.name for e in os.scandir(images_dir) if e.is_file()]
        raise IngestError(
            f"No class folders in {images_dir}"
            + (f" (found {len(loose)} loose files)" if loose else "")
            + ". Expected <dir>/<class>/<image> or <dir>/train/<class>/<image> with "
            "<dir>/test/<class>/<image>."
        )
    if len(class_names) < 2:
        raise IngestError(
            f"Only one class ({class_names[0]!r}) in {images_dir}: a classifier needs at least "
            "two class folders."
        )
    return layout, class_names, files


def _decode(source: SourceFile) -> DecodedImage | str:
    """The decoded image's facts, or the reason the file is skipped."""
    name = os.path.basename(source.path)
    if _is_hidden(name):
        return "hidden file"
    try:
        with open(source.path, "rb") as f:
            encoded = f.read()
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    if not encoded:
        return "empty file (0 bytes)"
    image_format = sniff_format(encoded[:16])
    if image_format is None:
        return "not an image (content matches no image format)"
    if image_format not in features.SUPPORTED_FORMATS:
        return (
            f"unsupported image format {image_format} (supported: "
            f"{', '.join(features.SUPPORTED_FORMATS)}); convert it to JPEG or PNG"
        )
    try:
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as exc:
        detail = exc.message.split("}}")[-1].strip().splitlines()[0]
        return f"corrupt or truncated {image_format}: {detail}"
    height, width = int(image.shape[0]), int(image.shape[1])
    if height == 0 or width == 0:
        return f"{image_format} with no pixels ({width}x{height})"
    return DecodedImage(source, encoded, image_format, height, width)


def _to_example(image: DecodedImage, label: int) -> tf.train.Example:
    def b(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def i(value: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    return tf.train.Example(
        features=tf.train.Features(
            feature={
                features.IMAGE_KEY: b(image.encoded),
                features.IMAGE_FORMAT_KEY: b(image.image_format.encode()),
                features.HEIGHT_KEY: i(image.height),
                features.WIDTH_KEY: i(image.width),
                features.LABEL_KEY: i(label),
                features.LABEL_TEXT_KEY: b(image.source.class_name.encode()),
                features.SOURCE_PATH_KEY: b(image.source.relpath.encode()),
            }
        )
    )


def _write_if_changed(path: str, data: bytes) -> None:
    """Replace `path` only when its content differs, so unchanged files keep their mtime."""
    if os.path.exists(path):
        with open(path, "rb") as f:
            if f.read() == data:
                return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are meant to be shared
    os.replace(tmp, path)


def _tfrecord_bytes(records: Iterable[bytes]) -> bytes:
    """Serialise records in TFRecord framing (length, CRCs) without touching disk."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "shard")
        with tf.io.TFRecordWriter(path) as writer:
            for record in records:
                writer.write(record)
        with open(path, "rb") as f:
            return f.read()


def _write_shards(split_dir: str, records: list[bytes]) -> list[str]:
    total_bytes = sum(len(r) for r in records)
    num_shards = max(1, math.ceil(total_bytes / SHARD_TARGET_BYTES))
    per_shard = math.ceil(len(records) / num_shards) if records else 0
    names = []
    for shard in range(num_shards):
        name = f"images-{shard:05d}-of-{num_shards:05d}.tfrecord"
        chunk = records[shard * per_shard : (shard + 1) * per_shard]
        _write_if_changed(os.path.join(split_dir, name), _tfrecord_bytes(chunk))
        names.append(name)
    if os.path.isdir(split_dir):  # drop shards of an earlier run with another shard count
        for stale in set(os.listdir(split_dir)) - set(names):
            os.remove(os.path.join(split_dir, stale))
    return names


def ingest(
    images_dir: str,
    output_dir: str,
    eval_fraction: float = 0.2,
    workers: int | None = None,
    progress: bool = True,
) -> IngestResult:
    """Validate every image under images_dir and write TFRecords, labels and a report."""
    layout, class_names, files = discover(images_dir, eval_fraction)
    label_of = {name: index for index, name in enumerate(class_names)}
    files.sort(key=lambda s: (SPLITS.index(s.split), label_of[s.class_name], s.relpath))

    valid: dict[str, list[bytes]] = {split: [] for split in SPLITS}
    counts = {split: {name: 0 for name in class_names} for split in SPLITS}
    skipped = []
    # decode_image releases the GIL, so threads use every core; map keeps input order.
    with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        results = pool.map(_decode, files)
        for source, result in tqdm(
            zip(files, results, strict=False),
            total=len(files),
            desc="ingest",
            unit="file",
            disable=not progress,
            file=sys.stderr,
        ):
            if isinstance(result, str):
                skipped.append(
                    {
                        "path": source.relpath,
                        "split": source.split,
                        "class": source.class_name,
                        "reason": result,
                    }
                )
                continue
            example = _to_example(result, label_of[source.class_name])
            valid[source.split].append(example.SerializeToString(deterministic=True))
            counts[source.split][source.class_name] += 1

    empty = [name for name in class_names if counts[TRAIN][name] == 0]
    if empty:
        reasons = {s["class"]: s["reason"] for s in skipped if s["split"] == TRAIN}
        raise IngestError(
            "No valid training image for class(es) "
            + ", ".join(
                f"{name!r}" + (f" (e.g. skipped: {reasons[name]})" if name in reasons else "")
                for name in empty
            )
            + f" in {os.path.abspath(images_dir)}. Add decodable JPEG/PNG/GIF/BMP files "
            "or remove the class folder."
        )
    if not any(counts[EVAL].values()):
        raise IngestError(
            f"No valid evaluation image in {os.path.abspath(images_dir)}; the Evaluator "
            "needs some. Add images to the held-out folder or raise the eval fraction."
        )
    warnings = [
        f"class {name!r} has no evaluation image: its accuracy is not measured"
        for name in class_names
        if counts[EVAL][name] == 0
    ]

    tfrecord_dir = os.path.join(output_dir, TFRECORD_DIR)
    shards = {
        split: _write_shards(os.path.join(tfrecord_dir, split), valid[split]) for split in SPLITS
    }
    labels_path = os.path.join(output_dir, LABELS_FILE)
    _write_if_changed(labels_path, "".join(f"{name}\n" for name in class_names).encode())
    report = {
        "images_dir": os.path.abspath(images_dir),
        "layout": layout,
        "eval_fraction": eval_fraction if layout == "flat" else None,
        "class_names": class_names,
        "counts": counts,
        "totals": {
            TRAIN: sum(counts[TRAIN].values()),
            EVAL: sum(counts[EVAL].values()),
            "skipped": len(skipped),
        },
        "skipped": skipped,
        "warnings": warnings,
        "tfrecords": {
            split: [f"{TFRECORD_DIR}/{split}/{n}" for n in shards[split]] for split in SPLITS
        },
    }
    report_path = os.path.join(output_dir, REPORT_FILE)
    _write_if_changed(report_path, (json.dumps(report, indent=2) + "\n").encode())
    return IngestResult(
        output_dir, class_names, counts, skipped, report_path, labels_path, tfrecord_dir
    )


def format_summary(result: IngestResult) -> str:
    lines = [f"Ingested {len(result.class_names)} classes -> {result.tfrecord_dir}"]
    for split in SPLITS:
        per_class = ", ".join(f"{k}={v}" for k, v in result.counts[split].items())
        lines.append(f"  {split:5s} {result.total(split):6d} images ({per_class})")
    lines.append(f"  skipped {len(result.skipped)} files (details: {result.report_path})")
    for entry in result.skipped[:10]:
        lines.append(f"    {entry['path']}: {entry['reason']}")
    if len(result.skipped) > 10:
        lines.append(f"    ... and {len(result.skipped) - 10} more")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images_dir", help="<dir>/<class>/* or <dir>/{train,test}/<class>/*")
    parser.add_argument("output_dir", help="where tfrecords/, labels.txt and the report go")
    parser.add_argument(
        "--eval-fraction",
        type=float,
        default=0.2,
        help="share of each class held out when there is no test/ folder",
    )
    parser.add_argument("--workers", type=int, default=None, help="decode threads")
    args = parser.parse_args(argv)
    try:
        result = ingest(args.images_dir, args.output_dir, args.eval_fraction, args.workers)
    except IngestError as exc:
        print(f"ingest failed: {exc}", file=sys.stderr)
        return 2
    print(format_summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
