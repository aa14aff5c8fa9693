"""Ingest outside the pipeline (`make ingest`): the records ImageExampleGen writes, in a folder
usable with ImportExampleGen (the EXAMPLES knob), through the same Beam transform.

    python -m tools.ingest IMAGES_DIR OUTPUT_DIR [--eval-fraction 0.2]
        [--validation-fraction 0.2] [--beam-pipeline-args "--direct_num_workers=2"]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import tempfile

import apache_beam as beam
import tensorflow as tf

from components.image_example_gen import ingest as image_ingest
from models.atomic_files import write_text_atomically
from models.ingest_report import LABELS_FILE, REPORT_FILE


@dataclasses.dataclass(frozen=True)
class IngestResult:
    output_dir: str  # holds <split>/data_tfrecord-*.gz: EXAMPLES for ImportExampleGen
    class_names: tuple[str, ...]
    report: dict

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        return self.report["counts"]

    @property
    def skipped(self) -> list[dict]:
        return self.report["skipped"]

    def total(self, split: str) -> int:
        return self.report["totals"][split]


def ingest(
    images_dir: str,
    output_dir: str,
    options: image_ingest.SplitOptions | None = None,
    beam_pipeline_args: list[str] | None = None,
) -> IngestResult:
    """Outside the pipeline (the CLI, `make ingest`): the same records, in a folder.

    Writes `<output_dir>/<split>/data_tfrecord-*.gz` (through ExampleGen's WriteSplit, as
    ImageExampleGen does), labels.txt and the report.
    """
    from tfx.components.example_gen.write_split import WriteSplit

    options = options or image_ingest.SplitOptions()
    options.check()
    listing = image_ingest.list_folder(images_dir)
    report_path = image_ingest.join_path(output_dir, REPORT_FILE)
    with tempfile.TemporaryDirectory() as tmp:
        listing_path = image_ingest.write_listing(listing, tmp)
        with beam.Pipeline(argv=beam_pipeline_args or []) as pipeline:
            splits = pipeline | image_ingest.IngestImages(
                listing, listing_path, options, report_path
            )
            for name, records in splits.items():
                split_dir = image_ingest.join_path(output_dir, name)
                if tf.io.gfile.exists(split_dir):
                    tf.io.gfile.rmtree(split_dir)
                _ = records | f"Write[{name}]" >> WriteSplit(split_dir, None)
    with tf.io.gfile.GFile(report_path) as f:
        report = json.load(f)
    image_ingest.check_report(report)
    write_text_atomically(
        image_ingest.join_path(output_dir, LABELS_FILE),
        "".join(f"{n}\n" for n in listing.class_names),
    )
    return IngestResult(output_dir, listing.class_names, report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images_dir", help="<dir>/<class>/* or <dir>/{train,test}/<class>/*")
    parser.add_argument("output_dir", help="where <split>/ records, labels.txt and the report go")
    parser.add_argument(
        "--eval-fraction", type=float, default=image_ingest.SplitOptions.eval_fraction
    )
    parser.add_argument(
        "--validation-fraction", type=float, default=image_ingest.SplitOptions.validation_fraction
    )
    parser.add_argument("--beam-pipeline-args", default="", help="e.g. --direct_num_workers=2")
    args = parser.parse_args(argv)
    options = image_ingest.SplitOptions(args.validation_fraction, args.eval_fraction)
    try:
        result = ingest(
            args.images_dir, args.output_dir, options, shlex.split(args.beam_pipeline_args)
        )
    except image_ingest.IngestError as exc:
        print(f"ingest failed: {exc}", file=sys.stderr)
        return 2
    print(image_ingest.format_summary(result.report, args.output_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
