"""Ingest cost: ImageExampleGen and StatisticsGen on a real photo folder, 1 vs 2 Beam workers.

Why: the README's "Running at scale" sizing rests on these per-image costs. One run
executes the two Beam components of the pipeline (the project's ImageExampleGen, then
TFX's StatisticsGen) under LocalDagRunner, caching off, once with the default in-memory
DirectRunner (one worker) and once with `--direct_running_mode=multi_processing
--direct_num_workers=2`, on the same folder, side by side. Component seconds come from ML
Metadata (what the run summary shows); stored bytes per image from the artifact's shards.
Results: bench/results/ingest.json and ingest.md.

    BENCH_IMAGES=/path/to/photos python -m bench.ingest_bench   # or --images /path
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence

from bench.results import RESULTS, write_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "bench", "work", "ingest")
IMAGES_ENV = "BENCH_IMAGES"
WORKER_FLAGS = {
    1: ["--direct_running_mode=in_memory", "--direct_num_workers=1"],
    2: ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
}


def run_once(images: str, workers: int) -> dict:
    from ml_metadata import metadata_store
    from tfx import v1 as tfx

    from components.image_example_gen.component import ImageExampleGen
    from pipeline.metadata import component_executions, latest_run

    work = os.path.join(WORK, f"workers_{workers}")
    shutil.rmtree(work, ignore_errors=True)
    connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(
        os.path.join(work, "metadata.sqlite")
    )
    example_gen = ImageExampleGen(images)
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    start = time.perf_counter()
    tfx.orchestration.LocalDagRunner().run(
        tfx.dsl.Pipeline(
            pipeline_name="ingest-bench",
            pipeline_root=os.path.join(work, "root"),
            components=[example_gen, statistics_gen],
            enable_cache=False,
            metadata_connection_config=connection,
            beam_pipeline_args=WORKER_FLAGS[workers],
        )
    )
    wall = time.perf_counter() - start
    store = metadata_store.MetadataStore(connection)
    executions = component_executions(store, latest_run(store, "ingest-bench"))
    examples = executions["ImageExampleGen"]["outputs"]["Examples"][0]
    with open(os.path.join(examples.uri, "ingest_report.json")) as f:
        report = json.load(f)
    images_kept = sum(report["totals"][s] for s in ("train", "validation", "eval"))
    stored = sum(
        os.path.getsize(os.path.join(d, name))
        for d, _, names in os.walk(examples.uri)
        if os.path.basename(d).startswith("Split-")
        for name in names
    )
    result = {"workers": workers, "images": images_kept, "skipped": report["totals"]["skipped"]}
    for node in ("ImageExampleGen", "StatisticsGen"):
        seconds = executions[node]["seconds"]
        result[node] = {"seconds": seconds, "images_per_s": round(images_kept / seconds, 1)}
    result["stored_bytes_per_image"] = round(stored / images_kept)
    result["wall_seconds"] = round(wall, 1)
    return result


def input_bytes(images: str) -> int:
    return sum(
        os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(images) for n in names
    )


def to_markdown(results: dict) -> str:
    rows = [
        "## Ingest (ImageExampleGen) and StatisticsGen, 1 vs 2 DirectRunner workers",
        "",
        f"{results['images']} ({results['input_mb']:.1f} MB of photos), measured "
        f"{results['date']} on {results['cpus']} CPUs shared with other work (the machine "
        "was busy: compare the two rows, not the absolute figures with another day's).",
        "",
        "| workers | ImageExampleGen s | images/s | StatisticsGen s | images/s | "
        "stored bytes/image | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in results["runs"]:
        rows.append(
            f"| {run['workers']} | {run['ImageExampleGen']['seconds']} | "
            f"{run['ImageExampleGen']['images_per_s']} | {run['StatisticsGen']['seconds']} | "
            f"{run['StatisticsGen']['images_per_s']} | {run['stored_bytes_per_image']} | "
            f"{run['wall_seconds']} |"
        )
    return "\n".join(rows) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", default=os.environ.get(IMAGES_ENV, ""))
    args = parser.parse_args(argv)
    if not args.images:
        sys.exit(f"Pass --images DIR or set {IMAGES_ENV}=DIR (an image folder to ingest).")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    images = os.path.abspath(args.images)
    runs = [run_once(images, workers) for workers in (1, 2)]
    results = {
        "images": images,
        "input_mb": input_bytes(images) / 1e6,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "runs": runs,
    }
    write_results(RESULTS, "ingest", results, to_markdown(results))


if __name__ == "__main__":
    main()
