"""What a deployment costs: SavedModel vs float32 TFLite vs int8 TFLite, and batch inference.

One `make run` (TFLITE_EXPORT=true) on a real photo folder, then, side by side in one process tree
(the machine is shared and loaded: compare the rows of one run, not runs):
- per model: size on disk, single-image latency (median), images/s one image at a time (as
  a phone app calls it; the SavedModel also at batch 32) and held-out accuracy, with each
  TFLite model's top-1 agreement with the SavedModel (TFLITE_MIN_AGREEMENT is set from this)
  and the gate's verdict, all on the eval split;
- `make predict-folder` over the eval photos (any nesting): images/s of the BulkInferrer
  step and of the whole command at 1 and 2 Beam workers (DirectRunner multi-processing).
Results: bench/results/deploy.json and deploy.md.

    BENCH_IMAGES=/path/to/photos [BACKBONE=efficientnet_lite0 (default)] [IMAGE_SIZE=224] \\
        [BACKBONE_WEIGHTS=imagenet] python -m bench.deploy_bench

BACKBONE, IMAGE_SIZE and BACKBONE_WEIGHTS come from the environment, so the int8 drop is
measured on real pretrained features wherever such a backbone is installed.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence

from bench.results import RESULTS, write_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "bench", "work", "deploy")
IMAGES_ENV = "BENCH_IMAGES"
REPEATS = 30


def _env(output: str, **knobs: str) -> dict:
    return {
        **os.environ,
        "TF_USE_LEGACY_KERAS": "1",
        "HOME": os.path.join(WORK, "home"),
        "OUTPUT": output,
        "TFLITE_EXPORT": "true",
        "PIPELINE_NAME": "deploy-bench",
        "BACKBONE": os.environ.get("BACKBONE", "efficientnet_lite0"),
        "IMAGE_SIZE": os.environ.get("IMAGE_SIZE", "224"),
        "BACKBONE_WEIGHTS": os.environ.get("BACKBONE_WEIGHTS", "imagenet"),
        # The bench measures costs: the model is pushed (and batch inference has a blessed
        # model) whatever its accuracy; the TFLite gate keeps its defaults and is reported.
        "ACCURACY_THRESHOLD": "0",
        "MIN_CLASS_RECALL": "0",
        "BEAT_MAJORITY_CLASS": "false",
        **knobs,
    }


def _run(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    if result.returncode not in (0, 3):
        raise RuntimeError(result.stdout[-3000:] + result.stderr[-5000:])
    return time.perf_counter() - start


def _median_ms(call, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return round(1000 * sorted(times)[len(times) // 2], 2)


def saved_model_speed(version_dir: str, photos: list[bytes]) -> dict:
    import tensorflow as tf

    serve = tf.saved_model.load(version_dir).signatures["serving_default"]
    serve(image_bytes=tf.constant(photos[:1]))  # traced
    latency = _median_ms(lambda: serve(image_bytes=tf.constant(photos[:1])))
    start = time.perf_counter()
    for photo in photos:
        serve(image_bytes=tf.constant([photo]))
    single = len(photos) / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(0, len(photos), 32):
        serve(image_bytes=tf.constant(photos[i : i + 32]))
    batched = len(photos) / (time.perf_counter() - start)
    return {
        "latency_ms": latency,
        "images_per_second": round(single, 1),
        "images_per_second_batch32": round(batched, 1),
    }


def tflite_speed(path: str, pixels) -> dict:
    import numpy as np
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=path, num_threads=1)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]["index"]

    def run(image):
        interpreter.set_tensor(inp, image[np.newaxis])
        interpreter.invoke()

    run(pixels[0])
    latency = _median_ms(lambda: run(pixels[0]))
    start = time.perf_counter()
    for image in pixels:
        run(image)
    return {
        "latency_ms": latency,
        "images_per_second": round(len(pixels) / (time.perf_counter() - start), 1),
    }


def _dir_bytes(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(folder, name))
        for folder, _, names in os.walk(path)
        for name in names
    )


def batch_inference(env: dict, images: str, workers: int) -> dict:
    from pipeline.configs import PipelineConfig
    from pipeline.metadata import component_executions, latest_run, open_store

    beam_args = f"--direct_running_mode=multi_processing --direct_num_workers={workers}"
    run_env = {**env, "IMAGES": images, "BEAM_PIPELINE_ARGS": beam_args}
    wall = _run([sys.executable, os.path.join(ROOT, "pipeline", "batch_inference.py")], run_env)
    config = PipelineConfig.from_env(run_env)
    with open(os.path.join(config.predictions_dir, "summary.json")) as f:
        counts = json.load(f)
    store = open_store(config.metadata_path)
    batch = component_executions(store, latest_run(store, "deploy-bench-batch-inference"))
    seconds = batch["ImageBulkInferrer"]["seconds"]
    return {
        "workers": workers,
        "photos": counts["predicted"],
        "bulk_inferrer_seconds": seconds,
        "bulk_inferrer_images_per_second": round(counts["predicted"] / seconds, 1),
        "command_seconds": round(wall, 1),
        "command_images_per_second": round(counts["predicted"] / wall, 1),
    }


def main(argv: Sequence[str] | None = None) -> None:
    del argv
    images = os.environ.get(IMAGES_ENV)
    if not images:
        raise SystemExit(f"{IMAGES_ENV}=<photo folder> is required")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    shutil.rmtree(WORK, ignore_errors=True)
    load_at_start = os.getloadavg()
    output = os.path.join(WORK, "output")
    env = _env(output, IMAGES=images)
    train_seconds = _run([sys.executable, os.path.join(ROOT, "pipeline", "local_runner.py")], env)
    with open(os.path.join(output, "run_summary.json")) as f:
        summary = json.load(f)
    tflite = summary["tflite"]
    version_dir = summary["pushed_path"] or ""

    import tensorflow as tf

    from components.tflite_evaluator.executor import read_eval_split
    from models import tflite_export
    from pipeline.configs import PipelineConfig
    from pipeline.metadata import component_executions, latest_run, open_store

    config = PipelineConfig.from_env(env)
    store = open_store(config.metadata_path)
    components = component_executions(store, latest_run(store, config.pipeline_name))
    model_uri = components["Trainer"]["outputs"]["Model"][0].uri
    examples_uri = components["ImageExampleGen"]["outputs"]["Examples"][0].uri
    photos, _ = read_eval_split(examples_uri, "eval")
    size = int(env["IMAGE_SIZE"])
    pixels = tflite_export.decode_pixels(tf.constant(photos), size).numpy()
    saved_dir = version_dir or os.path.join(model_uri, "Format-Serving")
    rows = {
        "SavedModel": {
            "size_bytes": _dir_bytes(saved_dir),
            "accuracy": tflite["saved_model"]["accuracy"],
            **saved_model_speed(saved_dir, photos),
        }
    }
    for name in tflite_export.MODEL_FILES:
        path = os.path.join(tflite_export.tflite_dir(model_uri), name)
        gate = tflite["models"][name]
        rows[name] = {
            "size_bytes": os.path.getsize(path),
            "accuracy": gate["accuracy"],
            "agreement": gate["agreement"],
            "difference_upper": gate["difference"]["upper"],
            "blessed": gate["blessed"],
            **tflite_speed(path, pixels),
        }
    eval_folder = (
        os.path.join(images, "test") if os.path.isdir(os.path.join(images, "test")) else images
    )
    batches = [batch_inference(env, eval_folder, workers) for workers in (1, 2)]
    data = {
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} cores; load average (1, 5, 15 min) at "
            f"start {', '.join(f'{x:.1f}' for x in load_at_start)}, at end "
            f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} (above the core count: "
            "other jobs shared the machine)"
        ),
        "backbone": env["BACKBONE"],
        "backbone_weights": summary["backbone_weights"],
        "image_size": size,
        "eval_photos": len(photos),
        "train_run_seconds": round(train_seconds, 1),
        "models": rows,
        "batch_inference": batches,
    }
    lines = [
        "## Deployment: SavedModel vs TFLite, batch inference",
        "",
        f"{env['BACKBONE']} ({summary['backbone_weights'].get('source')} weights), "
        f"{size} px, {len(photos)} eval photos; {data['machine']}.",
        "",
        "| model | size MB | latency ms (1 image) | images/s (1 at a time) | accuracy | "
        "agreement | gate |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['size_bytes'] / 1e6:.1f} | {r['latency_ms']} | "
            f"{r['images_per_second']} | {r['accuracy']:.4f} | "
            f"{r.get('agreement', 1.0):.4f} | "
            f"{'-' if 'blessed' not in r else ('blessed' if r['blessed'] else 'refused')} |"
        )
    lines.append(
        f"\nSavedModel at batch 32: {rows['SavedModel']['images_per_second_batch32']} images/s."
    )
    lines += [
        "",
        "| predict-folder workers | photos | BulkInferrer images/s | command s "
        "| command images/s |",
        "|---|---|---|---|---|",
    ]
    for b in batches:
        lines.append(
            f"| {b['workers']} | {b['photos']} | {b['bulk_inferrer_images_per_second']} | "
            f"{b['command_seconds']} | {b['command_images_per_second']} |"
        )
    write_results(RESULTS, "deploy", data, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
