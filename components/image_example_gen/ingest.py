"""Image-folder ingest: list the photos, then decode, validate and split them on Beam workers.

Two layouts: `<dir>/train/<class>/*` with a held-out `<dir>/test/<class>/*` (or eval/,
validation/, val/), or a bare `<dir>/<class>/*`. Three splits come out:
- train: fitting;
- validation: early stopping and the Trainer's other decisions, carved out of train/ (or
  out of the bare folder) by a hash of each file's content, `validation_fraction` of it;
- eval: the user's test/ folder untouched (or `eval_fraction` of the bare folder, by the
  same hash), seen only by the Evaluator.
Hashing the content, not the name, keeps a file in its split when it is renamed or moved
between class folders, and puts byte-identical copies in the same split.

Every file is decoded with the decoder the model uses; what cannot be is skipped and listed
with its reason in the report, never silently dropped. The original encoded bytes are
stored, except for 8-bit paletted BMPs, which TensorFlow decodes wrongly (palette index as
grey) and which are converted to PNG. Files are read through tf.io.gfile, so the folder may
be local or in a bucket (gs://...).

The one exception to that rule: a local folder is listed at the bytes level (os.listdir and
os.stat on bytes paths), because names that are not UTF-8 (Latin-1 from old cameras and
Windows shares, Shift-JIS, lone surrogates) make TF's listing, glob and TFX's input
fingerprint fail. Such a file is skipped and reported with \\x escapes and the `convmv` fix,
like a corrupt file, and the run goes on (bucket object names are always UTF-8).

The listing happens in one process (it is what TFX fingerprints anyway); decoding, the
report's aggregation and writing run as a Beam pipeline, so the work scales with the runner.
The pipeline uses this through ImageExampleGen (component.py, executor.py); tools/ingest.py
writes the same records to a folder outside the pipeline (`make ingest`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import io
import json
import os
from collections.abc import Iterable

import apache_beam as beam
import tensorflow as tf

from models import features
from models.atomic_files import write_text_atomically
from models.examples import make_example

TRAIN, VALIDATION, EVAL = "train", "validation", "eval"
SPLITS = (TRAIN, VALIDATION, EVAL)
# Folder names accepted for the held-out split next to `train/`, in order of preference.
EVAL_DIR_NAMES = ("test", "eval", "validation", "val")
# A file of the bare layout has no split until its content is hashed.
UNSPLIT = "unsplit"
# Larger images are skipped: decoding one would take more memory than a worker should
# (Pillow's decompression-bomb limit is 89 Mpixel).
MAX_PIXELS = 89_478_485
# The listing Beam reads: a file, so a million paths do not go into the job graph.
LISTING_FILE = "listing.jsonl"

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
    role: str  # TRAIN or EVAL (by folder), or UNSPLIT (bare layout)
    class_name: str
    path: str  # as listed: absolute, or a bucket URL (\\x escapes when not UTF-8)
    relpath: str  # relative to the image folder, as recorded in examples and the report
    name_problem: str = ""  # why the file cannot be opened by its name (skipped unread)


@dataclasses.dataclass(frozen=True)
class Listing:
    images_dir: str
    layout: str  # "split" (train/ + held-out folder) or "flat" (bare <class>/ folders)
    class_names: tuple[str, ...]
    files: tuple[SourceFile, ...]


@dataclasses.dataclass(frozen=True)
class SplitOptions:
    validation_fraction: float = 0.2  # of train/ (or of the bare folder)
    eval_fraction: float = 0.2  # of the bare folder only

    def check(self) -> None:
        for name in ("validation_fraction", "eval_fraction"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise IngestError(f"{name.upper()} must be between 0 and 1, got {value}.")
        if self.validation_fraction + self.eval_fraction >= 1.0:
            raise IngestError(
                "VALIDATION_FRACTION + EVAL_FRACTION must leave images to train on, got "
                f"{self.validation_fraction} + {self.eval_fraction}."
            )


@dataclasses.dataclass(frozen=True)
class DecodedImage:
    source: SourceFile
    encoded: bytes  # what the record stores: the file's bytes, or PNG for converted BMPs
    image_format: str
    height: int
    width: int
    sha256: str  # of the file's original bytes: split assignment and duplicate detection
    converted: str = ""  # why the bytes were converted, if they were


@dataclasses.dataclass(frozen=True)
class Skipped:
    source: SourceFile
    reason: str


@dataclasses.dataclass(frozen=True)
class KeptFile:
    """What the report says of an ingested file (the record itself goes to its split)."""

    split: str
    class_name: str
    relpath: str
    sha256: str
    converted: str  # how its bytes were converted, if they were


def sniff_format(head: bytes) -> str | None:
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        return "heif/avif"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def bmp_bits_per_pixel(encoded: bytes) -> int | None:
    """Bits per pixel of a BMP (BITMAPINFOHEADER or later), None for the old OS/2 header."""
    if len(encoded) < 30 or int.from_bytes(encoded[14:18], "little") < 40:
        return None
    return int.from_bytes(encoded[28:30], "little")


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def join_path(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name


def is_bucket(path: str) -> bool:
    return "://" in path


@dataclasses.dataclass(frozen=True)
class _Entry:
    """One name in a folder: decoded, or shown with \\x escapes when it is not UTF-8."""

    name: str
    is_dir: bool
    utf8: bool = True


def escaped_name(raw: bytes) -> str:
    """A file name as text, losslessly: bytes that are not UTF-8 shown as \\x escapes."""
    return raw.decode("utf-8", "backslashreplace")


def _entries(path: str) -> list[_Entry]:
    """The folder's entries, sorted by name.

    A local folder is listed at the bytes level: the one place where files do not go
    through tf.io.gfile, whose listing fails on names that are not UTF-8. A symlink to a
    folder counts as a folder (as gfile.isdir says).
    """
    if is_bucket(path):  # object names are UTF-8; gfile marks bucket folders with a slash
        return sorted(
            (
                _Entry(n.rstrip("/"), n.endswith("/") or tf.io.gfile.isdir(join_path(path, n)))
                for n in tf.io.gfile.listdir(path)
            ),
            key=lambda e: e.name,
        )
    entries = []
    raw_dir = os.fsencode(path)
    for raw in os.listdir(raw_dir):
        is_dir = os.path.isdir(os.path.join(raw_dir, raw))
        try:
            entries.append(_Entry(raw.decode("utf-8"), is_dir))
        except UnicodeDecodeError:
            entries.append(_Entry(escaped_name(raw), is_dir, utf8=False))
    return sorted(entries, key=lambda e: e.name)


def _subdirs(path: str) -> list[str]:
    """Visible sub-folder names with UTF-8 names."""
    return [e.name for e in _entries(path) if e.is_dir and e.utf8 and not _is_hidden(e.name)]


def name_problem(entry_kind: str) -> str:
    """The report's reason for a name that is not UTF-8."""
    return (
        f"{entry_kind} name is not valid UTF-8 (shown with \\x escapes): TensorFlow cannot "
        "open it by name; rename it, e.g. `convmv -r -f latin1 -t utf8 --notest <folder>` "
        "(or -f shift-jis, cp1252, ...: the encoding it was written in)"
    )


def _undecodable_dirs(path: str, images_dir: str, role: str) -> list[SourceFile]:
    """Sub-folders of `path` (class folders) whose names are not UTF-8, as skipped entries."""
    return [
        _bad_name(join_path(path, e.name), images_dir, role, e.name, "class folder")
        for e in _entries(path)
        if e.is_dir and not e.utf8
    ]


def _bad_name(path: str, images_dir: str, role: str, class_name: str, kind: str) -> SourceFile:
    return SourceFile(role, class_name, path, path[len(images_dir) + 1 :], name_problem(kind))


def local_fingerprint(split_name: str, input_base: str, pattern: str) -> str:
    """TFX's input fingerprint (io_utils.generate_fingerprint's format and checksums),
    computed with a bytes-level listing, so names that are not UTF-8 count too."""
    level = [os.fsencode(input_base)]
    for part in os.fsencode(pattern).split(b"/"):
        level = [
            os.path.join(d, n)
            for d in level
            if os.path.isdir(d)
            for n in sorted(os.listdir(d))
            if fnmatch.fnmatchcase(n, part)
        ]
    total_bytes = xor_checksum = sum_checksum = 0
    for path in level:
        try:
            stat = os.stat(path)
        except OSError:  # a dangling symlink: TFX would not see it either
            continue
        total_bytes += stat.st_size
        mtime = int(stat.st_mtime_ns / 1e9)
        xor_checksum ^= mtime
        sum_checksum += mtime
    return (
        f"split:{split_name},num_files:{len(level)},total_bytes:{total_bytes},"
        f"xor_checksum:{xor_checksum},sum_checksum:{sum_checksum}"
    )


def _layout(images_dir: str) -> tuple[str, str | None, list[str]]:
    """(layout, held-out folder name, top-level folders); IngestError when unusable."""
    if not tf.io.gfile.isdir(images_dir):
        raise IngestError(f"Image folder {images_dir} does not exist or is not a directory.")
    top = _subdirs(images_dir)
    if "train" not in top:
        return "flat", None, top
    eval_dir = next((d for d in EVAL_DIR_NAMES if d in top), None)
    if eval_dir is None:
        raise IngestError(
            f"{images_dir} has train/ but no held-out folder; add one of "
            f"{', '.join(n + '/' for n in EVAL_DIR_NAMES)} with the same class folders, "
            "or put the class folders directly in the image folder to split automatically."
        )
    return "split", eval_dir, top


# The fingerprinted glob of each layout (input_pattern). A compile that may not read the
# folder (Vertex: IMAGES_LAYOUT) names the layout instead of listing it.
LAYOUT_PATTERNS = {"split": "*/*/*", "flat": "*/*"}


def input_pattern(images_dir: str) -> str:
    """The glob (relative to images_dir) that covers every file ingest may read.

    TFX fingerprints the files it matches (path, size, mtime): a change re-runs ingest,
    no change lets the run use its cache. Files deeper than `<class>/<file>` are not
    ingested (they are reported), so they need not be fingerprinted.
    """
    layout, _, _ = _layout(images_dir)
    return LAYOUT_PATTERNS[layout]


def class_names(images_dir: str) -> list[str]:
    """The sorted class folder names: label N is the N-th. Lists folders only."""
    layout, _, top = _layout(images_dir)
    return _subdirs(join_path(images_dir, "train")) if layout == "split" else top


def _class_files(images_dir: str, role: str, class_name: str, class_dir: str) -> list[SourceFile]:
    """Every entry of a class folder (decode_file says why one is not an image)."""
    files = []
    for entry in _entries(class_dir):
        path = join_path(class_dir, entry.name)
        if entry.utf8:
            files.append(SourceFile(role, class_name, path, path[len(images_dir) + 1 :]))
        else:
            kind = "folder" if entry.is_dir else "file"
            files.append(_bad_name(path, images_dir, role, class_name, kind))
    return files


def _list_split_layout(images_dir: str, eval_dir: str) -> tuple[list[str], list[SourceFile]]:
    """train/<class>/* and the held-out <eval_dir>/<class>/*: class names and files."""
    roots = {TRAIN: join_path(images_dir, "train"), EVAL: join_path(images_dir, eval_dir)}
    class_names = _subdirs(roots[TRAIN])
    files = []
    for role, root in roots.items():
        extra = set(_subdirs(root)) - set(class_names)
        if extra:
            raise IngestError(
                f"{root} has class folders that train/ lacks: {sorted(extra)}. "
                "Every class needs training images; add them to train/ or remove the folders."
            )
        for class_name in _subdirs(root):
            files += _class_files(images_dir, role, class_name, join_path(root, class_name))
        files += _undecodable_dirs(root, images_dir, role)
    return class_names, files


def _list_flat_layout(images_dir: str, class_names: list[str]) -> list[SourceFile]:
    """<class>/*: files with no split until their content is hashed."""
    files = [
        source
        for class_name in class_names
        for source in _class_files(
            images_dir, UNSPLIT, class_name, join_path(images_dir, class_name)
        )
    ]
    return files + _undecodable_dirs(images_dir, images_dir, UNSPLIT)


def _check_classes(images_dir: str, class_names: list[str], files: list[SourceFile]) -> None:
    """IngestError unless there are two or more classes, each with files to train on."""
    if not class_names:
        loose = [e.name for e in _entries(images_dir) if not e.is_dir]
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
    empty = [
        c
        for c in class_names
        if not any(f.class_name == c and f.role != EVAL and not f.name_problem for f in files)
    ]
    if empty:
        raise IngestError(
            f"No training files for class(es) {', '.join(map(repr, empty))} in {images_dir}. "
            "Add images or remove the class folder."
        )


def list_folder(images_dir: str) -> Listing:
    """Find the layout, class names and files; IngestError for an unusable folder.

    Lists only (no file is read), so it is cheap enough to run when the pipeline is
    compiled, where it stops a run with a clear message before anything starts.
    """
    if not is_bucket(images_dir):
        images_dir = os.path.abspath(images_dir)
    images_dir = images_dir.rstrip("/")
    layout, eval_dir, top = _layout(images_dir)
    if layout == "split":
        class_names, files = _list_split_layout(images_dir, eval_dir)
    else:
        class_names, files = top, _list_flat_layout(images_dir, top)
    _check_classes(images_dir, class_names, files)
    # Records are written in this order (on one worker; many workers mix further): a hash
    # of the path interleaves the classes, so no stretch of records is one class.
    files.sort(key=lambda f: hashlib.sha256(f.relpath.encode()).hexdigest())
    return Listing(images_dir, layout, tuple(class_names), tuple(files))


def _paletted_bmp_to_png(encoded: bytes) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(encoded)).convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()


def _header_pixels(encoded: bytes) -> int | None:
    """Width x height from the header, without decoding; None when Pillow cannot tell."""
    from PIL import Image

    try:
        width, height = Image.open(io.BytesIO(encoded)).size
    except Exception:  # noqa: BLE001 - TF's decoder below gives the reason
        return None
    return width * height


def _read(source: SourceFile) -> bytes | Skipped:
    """The file's bytes, or why it cannot be read."""
    if _is_hidden(os.path.basename(source.path)):
        return Skipped(source, "hidden file")
    try:
        if tf.io.gfile.isdir(source.path):
            return Skipped(
                source,
                "a folder inside a class folder: only files directly in "
                "<class>/ are ingested; move its images up",
            )
        with tf.io.gfile.GFile(source.path, "rb") as f:
            encoded = f.read()
    except (tf.errors.OpError, OSError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        return Skipped(
            source,
            f"unreadable: {message.splitlines()[0]} (a broken symlink or missing permission?)",
        )
    if not encoded:
        return Skipped(source, "empty file (0 bytes)")
    return encoded


def _format_problem(encoded: bytes) -> tuple[str | None, str]:
    """(the image format, "") or (None, why the model's decoder will not take the file)."""
    image_format = sniff_format(encoded[:16])
    if image_format is None:
        return None, "not an image (content matches no image format)"
    if image_format not in features.SUPPORTED_FORMATS:
        return None, (
            f"unsupported image format {image_format} (supported: "
            f"{', '.join(features.SUPPORTED_FORMATS)}); convert it to JPEG or PNG"
        )
    pixels = _header_pixels(encoded)
    if pixels is not None and pixels > MAX_PIXELS:
        return None, (
            f"too large: {pixels / 1e6:.0f} Mpixel (limit {MAX_PIXELS / 1e6:.0f}); downscale it"
        )
    return image_format, ""


def _decode(
    source: SourceFile, stored: bytes, image_format: str, sha256: str, converted: str
) -> DecodedImage | Skipped:
    """Decode with the model's decoder: the image's facts, or why it is broken."""
    try:
        image = tf.io.decode_image(stored, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as exc:
        detail = exc.message.split("}}")[-1].strip().splitlines()[0]
        return Skipped(source, f"corrupt or truncated {image_format}: {detail}")
    height, width = int(image.shape[0]), int(image.shape[1])
    if height == 0 or width == 0:
        return Skipped(source, f"{image_format} with no pixels ({width}x{height})")
    return DecodedImage(source, stored, image_format, height, width, sha256, converted)


def decode_file(source: SourceFile) -> DecodedImage | Skipped:
    """Read and decode one file with the model's decoder: its facts, or why it is skipped."""
    if source.name_problem:
        return Skipped(source, source.name_problem)
    encoded = _read(source)
    if isinstance(encoded, Skipped):
        return encoded
    image_format, problem = _format_problem(encoded)
    if image_format is None:
        return Skipped(source, problem)
    sha256 = hashlib.sha256(encoded).hexdigest()
    if image_format == "bmp" and (bmp_bits_per_pixel(encoded) or 24) <= 8:
        # TF decodes the palette index as grey; PNG keeps the colours and decodes the same
        # in Transform and in the served model.
        try:
            stored = _paletted_bmp_to_png(encoded)
        except Exception as exc:  # noqa: BLE001 - any Pillow failure means a broken file
            return Skipped(source, f"corrupt or truncated bmp: {exc}")
        converted = "paletted BMP (TF decodes it wrongly): stored as PNG"
        return _decode(source, stored, "png", sha256, converted)
    return _decode(source, encoded, image_format, sha256, "")


def _unit_hash(sha256: str) -> float:
    """A stable pseudo-random number in [0, 1) per content, independent of the machine."""
    return int(sha256[:12], 16) / float(1 << 48)


def assign_split(image: DecodedImage, options: SplitOptions) -> str:
    if image.source.role == EVAL:
        return EVAL
    u = _unit_hash(image.sha256)
    if image.source.role == TRAIN:
        return VALIDATION if u < options.validation_fraction else TRAIN
    if u < options.eval_fraction:
        return EVAL
    return VALIDATION if u < options.eval_fraction + options.validation_fraction else TRAIN


def to_example(image: DecodedImage, label: int) -> bytes:
    example = make_example(
        {
            features.IMAGE_KEY: image.encoded,
            features.IMAGE_FORMAT_KEY: image.image_format.encode(),
            features.HEIGHT_KEY: image.height,
            features.WIDTH_KEY: image.width,
            features.LABEL_KEY: label,
            features.LABEL_TEXT_KEY: image.source.class_name.encode(),
            features.SOURCE_PATH_KEY: image.source.relpath.encode(),
        }
    )
    return example.SerializeToString(deterministic=True)


def _duplicates(kept: list[KeptFile]) -> list[dict]:
    """Files with byte-identical content: their paths and the splits they landed in."""
    by_content: dict[str, list[KeptFile]] = {}
    for file in kept:
        by_content.setdefault(file.sha256, []).append(file)
    return [
        {
            "sha256": sha,
            "paths": [f.relpath for f in copies],
            "splits": sorted({f.split for f in copies}),
        }
        for sha, copies in sorted(by_content.items())
        if len(copies) > 1
    ]


def _warnings(class_names: tuple[str, ...], counts: dict, duplicates: list[dict]) -> list[str]:
    warnings = [
        f"class {name!r} has no evaluation image: its accuracy is not measured"
        for name in class_names
        if counts[EVAL][name] == 0
    ]
    leaks = [d for d in duplicates if EVAL in d["splits"] and len(d["splits"]) > 1]
    if leaks:
        warnings.append(
            f"{len(leaks)} file(s) in the eval split are byte-identical to training or "
            "validation files (listed under duplicates): the eval metrics are optimistic"
        )
    return warnings


def build_report(
    listing: Listing,
    options: SplitOptions,
    kept: Iterable[KeptFile],
    skipped: Iterable[Skipped],
) -> dict:
    """The ingest report (written as JSON): counts, skipped and converted files, duplicates."""
    kept = sorted(kept, key=lambda k: k.relpath)
    skipped = sorted(skipped, key=lambda s: s.source.relpath)
    counts = {split: {name: 0 for name in listing.class_names} for split in SPLITS}
    for file in kept:
        counts[file.split][file.class_name] += 1
    duplicates = _duplicates(kept)
    return {
        "images_dir": listing.images_dir,
        "layout": listing.layout,
        "validation_fraction": options.validation_fraction,
        "eval_fraction": options.eval_fraction if listing.layout == "flat" else None,
        "class_names": list(listing.class_names),
        "counts": counts,
        "totals": {
            **{split: sum(counts[split].values()) for split in SPLITS},
            "skipped": len(skipped),
        },
        "skipped": [
            {
                "path": s.source.relpath,
                "split": None if s.source.role == UNSPLIT else s.source.role,
                "class": s.source.class_name,
                "reason": s.reason,
            }
            for s in skipped
        ],
        "converted": [{"path": k.relpath, "how": k.converted} for k in kept if k.converted],
        "duplicates": duplicates,
        "warnings": _warnings(listing.class_names, counts, duplicates),
    }


def check_report(report: dict) -> None:
    """IngestError when the valid images cannot make a pipeline run."""
    counts, images_dir = report["counts"], report["images_dir"]
    empty = [name for name in report["class_names"] if counts[TRAIN][name] == 0]
    if empty:
        reasons = {s["class"]: s["reason"] for s in report["skipped"]}
        raise IngestError(
            "No valid training image for class(es) "
            + ", ".join(
                f"{name!r}" + (f" (e.g. skipped: {reasons[name]})" if name in reasons else "")
                for name in empty
            )
            + f" in {images_dir}. Add decodable JPEG/PNG/GIF/BMP files "
            "or remove the class folder."
        )
    if not any(counts[VALIDATION].values()):
        raise IngestError(
            f"No validation image from {images_dir}: the Trainer needs some. Add images or "
            "raise VALIDATION_FRACTION."
        )
    if not any(counts[EVAL].values()):
        raise IngestError(
            f"No valid evaluation image in {images_dir}; the Evaluator needs some. Add images "
            "to the held-out folder or raise EVAL_FRACTION."
        )


def write_listing(listing: Listing, directory: str) -> str:
    """The listing as JSON lines for Beam to read: one file, not the whole list in the job graph."""
    path = join_path(directory, LISTING_FILE)
    write_text_atomically(
        path, "".join(json.dumps(dataclasses.asdict(f)) + "\n" for f in listing.files)
    )
    return path


@beam.ptransform_fn
def IngestImages(  # noqa: N802 - Beam's PTransform naming
    pipeline: beam.Pipeline,
    listing: Listing,
    listing_path: str,
    options: SplitOptions,
    report_path: str,
) -> dict[str, beam.PCollection]:
    """Listing file -> {split: serialized tf.Examples}; writes the report to report_path."""
    label_of = {name: index for index, name in enumerate(listing.class_names)}
    decoded = (
        pipeline
        | "ReadListing" >> beam.io.ReadFromText(listing_path)
        | "ParseListing" >> beam.Map(lambda line: SourceFile(**json.loads(line)))
        | "Decode" >> beam.Map(decode_file)
    )
    valid, skipped = decoded | "Valid" >> beam.Partition(
        lambda r, _: 0 if isinstance(r, DecodedImage) else 1, 2
    )
    with_split = valid | "AssignSplit" >> beam.Map(lambda d: (assign_split(d, options), d))
    parts = with_split | "BySplit" >> beam.Partition(lambda kv, _: SPLITS.index(kv[0]), 3)
    splits = {
        name: parts[index]
        | f"ToExample[{name}]"
        >> beam.Map(lambda kv: to_example(kv[1], label_of[kv[1].source.class_name]))
        for index, name in enumerate(SPLITS)
    }
    # The report needs the facts of each kept file, not its bytes.
    kept = with_split | "KeptFacts" >> beam.Map(
        lambda kv: KeptFile(
            kv[0], kv[1].source.class_name, kv[1].source.relpath, kv[1].sha256, kv[1].converted
        )
    )
    _ = (
        pipeline
        | "ReportTrigger" >> beam.Create([None])
        | "Report"
        >> beam.Map(
            lambda _, k, s: write_text_atomically(
                report_path, json.dumps(build_report(listing, options, k, s), indent=2) + "\n"
            ),
            beam.pvalue.AsList(kept),
            beam.pvalue.AsList(skipped),
        )
    )
    return splits


def format_summary(report: dict, location: str) -> str:
    lines = [f"Ingested {len(report['class_names'])} classes -> {location}"]
    for split in SPLITS:
        per_class = ", ".join(f"{k}={v}" for k, v in report["counts"][split].items())
        lines.append(f"  {split:10s} {report['totals'][split]:6d} images ({per_class})")
    lines.append(f"  skipped {len(report['skipped'])} files")
    for entry in report["skipped"][:10]:
        lines.append(f"    {entry['path']}: {entry['reason']}")
    if len(report["skipped"]) > 10:
        lines.append(f"    ... and {len(report['skipped']) - 10} more")
    for warning in report["warnings"]:
        lines.append(f"  warning: {warning}")
    return "\n".join(lines)
