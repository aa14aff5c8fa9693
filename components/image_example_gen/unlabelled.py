"""ImageExampleGen's unlabelled mode: a folder of new photos, any nesting, for batch inference.

Every file under the folder (hidden folders excepted) is decoded with the same decoder and
the same skip rules as training's ingest (ingest.decode_file): what the model cannot read is
skipped and listed with its reason. The kept photos go to one split, `unlabelled`, as
tf.Examples without a label (the image bytes, format, size and the path relative to the
folder). The report (`ingest_report.json` in the artifact) counts the files listed, kept and
skipped: listed = kept + skipped, nothing is dropped silently.
"""

from __future__ import annotations

import json

import apache_beam as beam
import tensorflow as tf

from components.image_example_gen import ingest
from models import features
from models.atomic_files import write_text_atomically
from models.examples import make_example

UNLABELLED = "unlabelled"  # the one output split
LAYOUT = "unlabelled"


def list_unlabelled(images_dir: str) -> ingest.Listing:
    """Every file under images_dir at any depth (hidden folders are not entered)."""
    if not tf.io.gfile.isdir(images_dir):
        raise ingest.IngestError(f"Image folder {images_dir} does not exist or is not a directory.")
    images_dir = images_dir.rstrip("/")
    files = []
    for folder, subdirs, names in tf.io.gfile.walk(images_dir):
        subdirs[:] = sorted(d for d in subdirs if not d.rstrip("/").startswith("."))
        for name in sorted(names):
            path = ingest.join_path(folder, name)
            files.append(ingest.SourceFile(UNLABELLED, "", path, path[len(images_dir) + 1 :]))
    if not files:
        raise ingest.IngestError(f"No files under {images_dir}: nothing to classify.")
    return ingest.Listing(images_dir, LAYOUT, (), tuple(files))


def to_example(image: ingest.DecodedImage) -> bytes:
    example = make_example(
        {
            features.IMAGE_KEY: image.encoded,
            features.IMAGE_FORMAT_KEY: image.image_format.encode(),
            features.HEIGHT_KEY: image.height,
            features.WIDTH_KEY: image.width,
            features.SOURCE_PATH_KEY: image.source.relpath.encode(),
        }
    )
    return example.SerializeToString(deterministic=True)


def build_report(listing: ingest.Listing, kept: list[str], skipped: list[ingest.Skipped]) -> dict:
    return {
        "images_dir": listing.images_dir,
        "layout": LAYOUT,
        "class_names": [],
        "totals": {"listed": len(listing.files), UNLABELLED: len(kept), "skipped": len(skipped)},
        "skipped": [
            {"path": s.source.relpath, "split": None, "class": None, "reason": s.reason}
            for s in sorted(skipped, key=lambda s: s.source.relpath)
        ],
        "warnings": [],
    }


@beam.ptransform_fn
def IngestUnlabelledImages(  # noqa: N802 - Beam's PTransform naming
    pipeline: beam.Pipeline, listing: ingest.Listing, listing_path: str, report_path: str
) -> beam.PCollection:
    """Listing file -> serialized tf.Examples of the decodable photos; writes the report."""
    decoded = (
        pipeline
        | "ReadListing" >> beam.io.ReadFromText(listing_path)
        | "ParseListing" >> beam.Map(lambda line: ingest.SourceFile(**json.loads(line)))
        | "Decode" >> beam.Map(ingest.decode_file)
    )
    valid, skipped = decoded | "Valid" >> beam.Partition(
        lambda r, _: 0 if isinstance(r, ingest.DecodedImage) else 1, 2
    )
    kept = valid | "KeptPaths" >> beam.Map(lambda d: d.source.relpath)
    _ = (
        pipeline
        | "ReportTrigger" >> beam.Create([None])
        | "Report"
        >> beam.Map(
            lambda _, k, s: write_text_atomically(
                report_path, json.dumps(build_report(listing, k, s), indent=2) + "\n"
            ),
            beam.pvalue.AsList(kept),
            beam.pvalue.AsList(skipped),
        )
    )
    return valid | "ToExample" >> beam.Map(to_example)


def generate(executor, pipeline: beam.Pipeline, exec_properties: dict) -> dict:
    """ImageExampleGen's GenerateExamplesByBeam in unlabelled mode: {UNLABELLED: examples}."""
    from tfx.types import standard_component_specs

    listing = list_unlabelled(exec_properties[standard_component_specs.INPUT_BASE_KEY])
    listing_path = ingest.write_listing(listing, executor._get_tmp_dir())
    return {
        UNLABELLED: pipeline
        | "IngestUnlabelledImages"
        >> IngestUnlabelledImages(listing, listing_path, executor._report_path)
    }


def record(examples, report: dict) -> None:
    """The report's counts as custom properties of the Examples artifact (ML Metadata)."""
    for key, value in report["totals"].items():
        examples.set_int_custom_property(f"{key}_files", int(value))
