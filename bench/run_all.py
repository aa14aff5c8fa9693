"""`make bench`: every benchmark in one run, their Markdown tables in one file.

Runs the serving benchmark, the front ends' fuzz run (fuzz_bench), then the training
benchmark, then (when BENCH_IMAGES names a photo folder) the ingest benchmark and the
whole-pipeline benchmark; each writes its own
bench/results/<name>.json and .md, and their Markdown is concatenated into
bench/results/README.md. About 20-30 minutes on 2 cores, plus 15-30 for the pipeline
benchmark.

    [BENCH_IMAGES=/path/to/photos] python -m bench.run_all
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from bench import (
    deploy_bench,
    fuzz_bench,
    ingest_bench,
    pipeline_bench,
    serving_bench,
    training_bench,
    transfer_bench,
)
from bench.results import RESULTS

BENCHES = (
    ("serving", serving_bench.main),
    ("fuzz", fuzz_bench.main),
    ("training", training_bench.main),
) + (
    (
        ("ingest", ingest_bench.main),
        ("pipeline", pipeline_bench.main),
        ("transfer", transfer_bench.main),  # real features on the real photos
        ("deploy", deploy_bench.main),
    )
    if os.environ.get(ingest_bench.IMAGES_ENV)
    else ()
)


def main(argv: Sequence[str] | None = None) -> None:
    del argv  # each benchmark runs with its defaults
    sections = []
    if not os.environ.get(ingest_bench.IMAGES_ENV):
        print(f"{ingest_bench.IMAGES_ENV} not set: no ingest and pipeline benchmarks", flush=True)
    for name, run in BENCHES:
        start = time.perf_counter()
        print(f"== {name} benchmark", flush=True)
        run([])
        print(f"== {name} benchmark: {time.perf_counter() - start:.0f} s", flush=True)
        with open(os.path.join(RESULTS, f"{name}.md")) as f:
            sections.append(f.read().strip())
    text = "# Benchmark results\n\nWritten by `make bench` (python -m bench.run_all).\n\n"
    text += "\n\n".join(sections) + "\n"
    with open(os.path.join(RESULTS, "README.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
