"""Whole-pipeline cost against the compute floor, on a real photo folder, in one run.

Why: a user iterates (change a learning rate, run again); what they wait for is the
pipeline's wall time, not a component's. This bench measures, side by side in one
process tree (the machine is shared and noisy, so only ratios measured together mean
anything):
- the floor: a bare Keras ResNet50 `predict` at IMAGE_SIZE on photos of the folder, best
  of several passes, scaled to one backbone pass per photo plus one more per eval photo
  (the Evaluator's);
- the first `make run` (fresh OUTPUT, process start included) and its ratio to the floor,
  with every component's seconds and the Trainer's phases;
- a head-only re-run (LEARNING_RATE changed) and its ratio to the first run, and a second
  one (DROPOUT changed, after the TUNE=true run) to show how far the same work moves;
- TUNE=true on the same OUTPUT: the Tuner's seconds for its trials, against one backbone
  pass over the training set;
- BACKBONE_DTYPE=bfloat16: the backbone pass's speed against float32 (bare, and inside
  the Trainer), the features' agreement, and the Evaluator's accuracy with each.
Results: bench/results/pipeline.json and pipeline.md.

    BENCH_IMAGES=/path/to/photos python -m bench.pipeline_bench [--image-size 224]

The backbone has random weights (ImageNet weights cannot be downloaded here): the same
compute as pretrained ones, but accuracy only compares runs with each other.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence

from bench.results import RESULTS, write_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "bench", "work", "pipeline")
IMAGES_ENV = "BENCH_IMAGES"
EXIT_NOT_PUSHED = 3  # pipeline/summary.py's exit code (not imported: it pulls in TFMA)
# The knobs every run shares: random weights (offline), and a gate a chance-level model
# (random weights) passes, so the first run is pushed and the re-runs' Evaluator scores a
# baseline too, as a user's re-run after a blessed run does.
BASE_KNOBS = {
    "BACKBONE_WEIGHTS": "random",
    "ACCURACY_THRESHOLD": "0.1",
    "MIN_CLASS_RECALL": "0",
    "BEAT_MAJORITY_CLASS": "false",
    "TFLITE_EXPORT": "false",  # the TFLite files' cost is bench/deploy_bench.py's
}


def _setup_env() -> None:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)


def sample_images(images_dir: str, image_size: int, count: int):
    """`count` photos of the folder, decoded, resized and preprocessed like Transform does."""
    import tensorflow as tf

    from models import preprocessing
    from serving.client import image_files

    paths = list(image_files([images_dir], (".jpg", ".jpeg", ".png")))[:count]
    if not paths:
        raise SystemExit(f"no JPEG/PNG photos under {images_dir}")
    encoded = tf.constant([tf.io.read_file(p).numpy() for p in paths])
    return preprocessing.preprocess_images(encoded, image_size, "resnet50")


def backbone_passes(images, image_size: int, passes: int) -> dict:
    """Bare predict of ResNet50 (+ pooling), float32 and bfloat16, best of `passes` each,
    and how far the bfloat16 features are from the float32 ones."""
    import numpy as np
    import tf_keras

    from models import model
    from tools import samples

    tf_keras.utils.set_random_seed(0)
    backbone = model.build_backbone("resnet50", image_size, samples.random_weights("resnet50"))
    result = {"images": int(images.shape[0])}
    features = {}
    for dtype in ("float32", "bfloat16"):
        extractor = model.build_feature_extractor(backbone, image_size, dtype, "resnet50")
        extractor.predict(images[:32], batch_size=32, verbose=0)  # warm-up and tracing
        best = math.inf
        for _ in range(passes):
            start = time.perf_counter()
            out = extractor.predict(images, batch_size=32, verbose=0)
            best = min(best, time.perf_counter() - start)
        features[dtype] = np.asarray(out, np.float32)
        result[f"{dtype}_images_per_s"] = images.shape[0] / best
        print(f"bare predict {dtype}: {result[f'{dtype}_images_per_s']:.1f} images/s", flush=True)
    f32, bf16 = features["float32"], features["bfloat16"]
    cosine = np.sum(f32 * bf16, axis=1) / (
        np.linalg.norm(f32, axis=1) * np.linalg.norm(bf16, axis=1) + 1e-12
    )
    result.update(
        bf16_speedup=result["bfloat16_images_per_s"] / result["float32_images_per_s"],
        bf16_cosine_min=float(cosine.min()),
        bf16_cosine_mean=float(cosine.mean()),
        bf16_relative_error=float(np.linalg.norm(f32 - bf16) / np.linalg.norm(f32)),
    )
    return result


def run_pipeline(name: str, images_dir: str, output: str, image_size: int, **knobs) -> dict:
    """`python pipeline/local_runner.py` as `make run` starts it; wall includes start-up."""
    env = {
        **os.environ,
        **BASE_KNOBS,
        "IMAGES": images_dir,
        "OUTPUT": output,
        "IMAGE_SIZE": str(image_size),
        **{k.upper(): str(v) for k, v in knobs.items()},
    }
    print(f"pipeline run '{name}' ({knobs or 'first run'}) ...", flush=True)
    start = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, os.path.join(ROOT, "pipeline", "local_runner.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    # 3: ran to the end but not blessed (a random backbone's head may get worse): still timed.
    if completed.returncode not in (0, EXIT_NOT_PUSHED):
        print(
            f"run '{name}' exited {completed.returncode}:\n{completed.stderr[-4000:]}", flush=True
        )
        return {"failed": completed.returncode, "wall_seconds": wall}
    with open(os.path.join(output, "run_summary.json")) as f:
        summary = json.load(f)
    serving = glob.glob(
        os.path.join(output, "pipeline_root", "Trainer", "model", "*", "Format-Serving")
    )
    latest = max(serving, key=lambda p: int(p.split(os.sep)[-2]))
    with open(os.path.join(latest, "assets.extra", "training_metadata.json")) as f:
        metadata = json.load(f)
    history = metadata["history"]
    result = {
        "wall_seconds": wall,
        # The pipeline's own clock starts after imports: the rest is process start-up.
        "startup_seconds": wall - summary["wall_seconds"],
        "components": {n: c["seconds"] for n, c in summary["components"].items()},
        "states": {n: c["state"] for n, c in summary["components"].items()},
        "accuracy": summary.get("eval_metrics", {}).get("sparse_categorical_accuracy"),
        "pushed": completed.returncode == 0,
        "feature_cache": summary.get("feature_cache"),
        "tuner": {k: v for k, v in summary.get("tuner", {}).items() if k != "all"} or None,
        "counts": {s: sum(c.values()) for s, c in summary["ingest"]["counts"].items()},
        # The eval predictions the Trainer stored for the Evaluator (or why none).
        "stored_eval_predictions": metadata.get("stored_eval_predictions"),
        "trainer_phases": {
            k: history[k][-1]
            for k in ("feature_seconds", "frozen_seconds", "cache_images_per_s")
            if k in history
        },
    }
    print(f"  {wall:.0f} s: {result['components']}", flush=True)
    return result


def _stored(run: dict) -> str:
    stored = run.get("stored_eval_predictions") or {}
    if not stored.get("count"):
        return f"none ({stored.get('reason', 'not recorded')})"
    return (
        f"{stored['count']} in {stored['seconds']:.1f} s "
        f"({stored['backbone_images']} images through the backbone)"
    )


def markdown(results: dict) -> str:
    m, f, b = results["meta"], results["floor"], results["backbone"]
    failed = [k for k, run in results["runs"].items() if "failed" in run]
    if failed:
        return "# Pipeline bench\n\nFAILED runs: " + ", ".join(failed) + " (see pipeline.json)\n"
    first, rerun, tune = (results["runs"][k] for k in ("first", "rerun", "tune"))
    rerun2 = results["runs"].get("rerun2")
    # Without the bf16 pipeline run (--no-bf16-run), its column stays empty.
    bf16 = results["runs"].get("bf16", {"components": {}, "states": {}, "trainer_phases": {}})
    load = ", ".join(f"{x:.1f}" for x in m["load_average_before"])
    after = ", ".join(f"{x:.1f}" for x in m["load_average_after"])
    lines = [
        "# Pipeline: first run, head-only re-run and Tuner against the compute floor",
        "",
        f"{m['train_images']} train + {m['eval_images']} eval (+ validation) photos from "
        f"`{m['images']}` at "
        f"{m['image_size']} px, ResNet50 with RANDOM weights (same compute as ImageNet ones), "
        f"{m['cpus']} CPUs, {m['machine']}. Load average {load} before the bench and "
        f"{after} after it: absolute seconds move with the machine's load; the ratios were "
        "measured side by side in one run.",
        "",
        "| measure | seconds | ratio | goal |",
        "|---|---|---|---|",
        f"| floor: bare `predict`, best of {m['floor_passes']} passes "
        f"({b['float32_images_per_s']:.1f} images/s) x one pass per photo (+ eval again "
        "without a validation split) | "
        f"{f['seconds']:.0f} | 1.00 | |",
        f"| first run (`make run`, fresh OUTPUT, process start included) | "
        f"{first['wall_seconds']:.0f} | {first['wall_seconds'] / f['seconds']:.2f}x floor "
        "| <= 1.3x |",
        f"| the issue's floor: one pass per photo plus one more per eval photo "
        f"({f['issue_passes']} passes) | {f['issue_seconds']:.0f} | "
        f"first run {first['wall_seconds'] / f['issue_seconds']:.2f}x | <= 1.3x |",
        f"| head-only re-run (LEARNING_RATE=0.002) | {rerun['wall_seconds']:.0f} | "
        f"{rerun['wall_seconds'] / first['wall_seconds']:.2f}x first run | <= 0.3x |",
        *(
            [
                f"| second head-only re-run (DROPOUT=0.3, after the TUNE=true run) | "
                f"{rerun2['wall_seconds']:.0f} | "
                f"{rerun2['wall_seconds'] / first['wall_seconds']:.2f}x first run | <= 0.3x |"
            ]
            if rerun2
            else []
        ),
        f"| Tuner component, {(tune['tuner'] or {}).get('trials')} trials on cached features | "
        f"{tune['components'].get('Tuner', float('nan')):.1f} | "
        f"{tune['components'].get('Tuner', float('nan')) / f['train_pass_seconds']:.2f}x one "
        "backbone pass over the training set | <= 0.5x |",
        "",
        "Where the first run's seconds go (component seconds from ML Metadata):",
        "",
        "| component | first run | head-only re-run | TUNE=true re-run | bf16 run |",
        "|---|---|---|---|---|",
    ]
    for name in first["components"] | tune["components"]:
        cells = []
        for run in (first, rerun, tune, bf16):
            seconds, state = run["components"].get(name), run["states"].get(name, "")
            cells.append("" if seconds is None else f"{seconds:.1f} {state.lower()}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(
        "| process start and imports (wall minus the pipeline's clock) | "
        + " | ".join(
            f"{r.get('startup_seconds', math.nan):.1f}" for r in (first, rerun, tune, bf16)
        )
        + " |"
    )
    lines.append(
        "| wall | "
        + " | ".join(f"{r['wall_seconds']:.0f}" for r in (first, rerun, tune, bf16))
        + " |"
    )
    phases = first["trainer_phases"]
    lines += [
        "",
        f"Inside the first run's Trainer: backbone pass over train + eval "
        f"{phases.get('feature_seconds', float('nan')):.1f} s "
        f"({phases.get('cache_images_per_s', float('nan')):.1f} images/s), head training "
        f"{phases.get('frozen_seconds', 0) - phases.get('feature_seconds', 0):.1f} s; the rest "
        "of the Trainer is reading the Transform graph, building the backbone and the export.",
        f"The re-run's Trainer ran {rerun['feature_cache']['backbone_images']} images through "
        f"the backbone (features reused: {rerun['feature_cache']['reused']}); cache on disk: "
        f"{rerun['feature_cache']['size_bytes'] / 1e6:.1f} MB.",
        f"Eval predictions the Trainer stored for the Evaluator: first run "
        f"{_stored(first)}, re-run {_stored(rerun)}; the Evaluator checks about one in "
        "32 of the candidate's (and the first) against its model; the baseline's were "
        "checked when it was the candidate.",
        "",
        "| backbone pass | float32 | bfloat16 | ratio |",
        "|---|---|---|---|",
        f"| bare predict, {b['images']} photos, images/s | {b['float32_images_per_s']:.1f} | "
        f"{b['bfloat16_images_per_s']:.1f} | {b['bf16_speedup']:.2f}x |",
        f"| inside the Trainer, train + eval, s | "
        f"{first['trainer_phases'].get('feature_seconds', float('nan')):.1f} | "
        f"{bf16['trainer_phases'].get('feature_seconds', float('nan')):.1f} | |",
        f"| eval accuracy (Evaluator, float32 model served) | {first['accuracy']:.3f} | "
        f"{bf16.get('accuracy') or math.nan:.3f} | |",
        "",
        f"bfloat16 features against float32 on the same photos: cosine similarity min "
        f"{b['bf16_cosine_min']:.4f}, mean {b['bf16_cosine_mean']:.4f}; relative error "
        f"{b['bf16_relative_error']:.4f}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline_bench", description=__doc__)
    parser.add_argument(
        "--images",
        default=os.environ.get(IMAGES_ENV, ""),
        help=f"photo folder (default: ${IMAGES_ENV})",
    )
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--floor-passes", type=int, default=3)
    parser.add_argument("--floor-images", type=int, default=128)
    parser.add_argument(
        "--no-bf16-run",
        dest="bf16_run",
        action="store_false",
        help="skip the BACKBONE_DTYPE=bfloat16 pipeline run (bare bf16 figures stay)",
    )
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    if not args.images:
        raise SystemExit(f"give a photo folder: {IMAGES_ENV}=/path/to/photos or --images")
    images_dir = os.path.abspath(args.images)
    _setup_env()
    load_before = os.getloadavg()
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    output = os.path.join(WORK, "output")

    images = sample_images(images_dir, args.image_size, args.floor_images)
    backbone = backbone_passes(images, args.image_size, args.floor_passes)
    del images
    runs = {"first": run_pipeline("first", images_dir, output, args.image_size)}
    runs["rerun"] = run_pipeline(
        "head-only", images_dir, output, args.image_size, learning_rate=0.002
    )
    runs["tune"] = run_pipeline("tune", images_dir, output, args.image_size, tune="true")
    runs["rerun2"] = run_pipeline("head-only-2", images_dir, output, args.image_size, dropout=0.3)
    if args.bf16_run:
        runs["bf16"] = run_pipeline(
            "bf16", images_dir, output, args.image_size, backbone_dtype="bfloat16"
        )
    if "failed" in runs["first"]:
        raise SystemExit("the first run failed: nothing to compare")
    counts = runs["first"]["counts"]
    rate = backbone["float32_images_per_s"]
    # One backbone pass per photo (the Trainer's features of every split it reads, the
    # Evaluator's eval pass), plus one more per eval photo when the Trainer also validates
    # on eval (no validation split).
    passes = sum(counts.values()) + (0 if "validation" in counts else counts["eval"])
    # The issue's definition counts the eval photos twice in any case.
    issue_passes = sum(counts.values()) + counts["eval"]
    floor = {
        "seconds": passes / rate,
        "train_pass_seconds": counts["train"] / rate,
        "issue_passes": issue_passes,
        "issue_seconds": issue_passes / rate,
    }
    results = {
        "meta": {
            "images": images_dir,
            "image_size": args.image_size,
            "train_images": counts["train"],
            "eval_images": counts["eval"],
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "floor_passes": args.floor_passes,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "floor": floor,
        "backbone": backbone,
        "runs": runs,
        "ratios": {
            "first_run_to_floor": runs["first"]["wall_seconds"] / floor["seconds"],
            "first_run_to_issue_floor": runs["first"]["wall_seconds"] / floor["issue_seconds"],
            "rerun_to_first_run": runs["rerun"]["wall_seconds"] / runs["first"]["wall_seconds"],
            "second_rerun_to_first_run": runs["rerun2"]["wall_seconds"]
            / runs["first"]["wall_seconds"],
            "tuner_to_train_pass": runs["tune"].get("components", {}).get("Tuner", math.nan)
            / floor["train_pass_seconds"],
        },
    }
    write_results(args.out, "pipeline", results, markdown(results))


if __name__ == "__main__":
    main()
