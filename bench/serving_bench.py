"""REST serving cost: the model server against calling the SavedModel in-process.

Why: the REST layer (HTTP, JSON, base64, threads, batching) should cost little next to the
model itself. One run measures, on the same images and the same SavedModel:
- in-process `signatures["serving_default"]` calls at batch 8 and batch 1;
- REST :predict through `python -m serving.server` at concurrency 1 and 8, batch 8 and 1,
  with request batching on (the server's default) and off;
and reports images/s, p50/p99 request latency and REST/in-process throughput at the same batch
size. Results: bench/results/serving.json and serving.md.

    python -m bench.serving_bench [--model-dir DIR] [--images DIR] [--requests-images 128]

Without --model-dir it exports the project's model with a ResNet50 backbone at 224x224 (random
weights: same compute as a trained one) into bench/work/, reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import httpx
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "bench", "work")
RESULTS = os.path.join(ROOT, "bench", "results")
MODEL_NAME = "bench_model"
IMAGE_EXTENSIONS = (".jpg", ".jpeg")


@dataclass
class Result:
    path: str  # "in-process" or "REST"
    batching: str  # server request batching: "on", "off", "-" for in-process
    batch: int
    concurrency: int
    requests: int
    images_per_s: float
    p50_ms: float
    p99_ms: float
    ratio: float | None = None  # images/s over in-process images/s at the same batch size


def default_model() -> str:
    """The project's export with a realistic backbone, built once into bench/work/."""
    export_dir = os.path.join(WORK, "resnet50_224")
    if not os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
        sys.path.insert(0, ROOT)
        from tests import factories

        print("exporting a ResNet50 224x224 model into", export_dir, flush=True)
        factories.export_test_model(export_dir, image_size=224, backbone="resnet50")
    return export_dir


def version_dir(model_dir: str) -> str:
    """A SavedModel directory: the given one, or the latest version under a model directory."""
    if os.path.isfile(os.path.join(model_dir, "saved_model.pb")):
        return model_dir
    versions = [d for d in os.listdir(model_dir) if d.isdigit()]
    if not versions:
        raise SystemExit(f"no saved_model.pb nor version directories in {model_dir}")
    return os.path.join(model_dir, max(versions, key=int))


def load_images(folder: str | None, count: int) -> list[bytes]:
    if folder:
        paths = sorted(
            os.path.join(root, name)
            for root, _, files in os.walk(folder)
            for name in files
            if name.lower().endswith(IMAGE_EXTENSIONS)
        )[:count]
        if not paths:
            raise SystemExit(f"no JPEGs in {folder}")
        images = []
        for path in paths:
            with open(path, "rb") as f:
                images.append(f.read())
        return images
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    images = []
    for _ in range(count):
        # A smooth colour field plus noise: photo-like JPEG sizes (tens of KB at 224x224).
        base = rng.integers(0, 256, size=(4, 4, 3)).astype(np.uint8)
        pixels = np.asarray(Image.fromarray(base).resize((224, 224), Image.BILINEAR), np.int16)
        pixels = np.clip(pixels + rng.integers(-12, 13, size=pixels.shape), 0, 255)
        buffer = io.BytesIO()
        Image.fromarray(pixels.astype(np.uint8)).save(buffer, "JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def batches(images: list[bytes], batch: int, total_images: int) -> list[list[bytes]]:
    count = max(1, total_images // batch)
    return [[images[(i * batch + j) % len(images)] for j in range(batch)] for i in range(count)]


def summarize(path, batching, batch, concurrency, latencies, wall) -> Result:
    images = batch * len(latencies)
    return Result(
        path,
        batching,
        batch,
        concurrency,
        len(latencies),
        images / wall,
        1000 * statistics.median(latencies),
        1000 * float(np.percentile(latencies, 99)),
    )


def bench_in_process(function, images: list[bytes], batch: int, total: int) -> Result:
    import tensorflow as tf

    work = batches(images, batch, total)
    function(image_bytes=tf.constant(work[0]))  # warm-up: first call traces and allocates
    latencies = []
    started = time.perf_counter()
    for chunk in work:
        t0 = time.perf_counter()
        function(image_bytes=tf.constant(chunk))["probabilities"].numpy()
        latencies.append(time.perf_counter() - t0)
    return summarize("in-process", "-", batch, 1, latencies, time.perf_counter() - started)


def bench_rest(url: str, images: list[bytes], batch: int, concurrency: int, total: int, batching):
    import base64

    bodies = [
        json.dumps({"instances": [{"b64": base64.b64encode(i).decode()} for i in chunk]}).encode()
        for chunk in batches(images, batch, total)
    ]
    endpoint = f"{url}/v1/models/{MODEL_NAME}:predict"
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    failures: list[str] = []
    next_index = iter(range(len(bodies)))
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(timeout=300) as client:
            client.post(endpoint, content=bodies[0], headers=headers)  # warm-up + connection
            barrier.wait()
            while True:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    return
                t0 = time.perf_counter()
                response = client.post(endpoint, content=bodies[index], headers=headers)
                elapsed = time.perf_counter() - t0
                with lock:
                    latencies.append(elapsed)
                    if response.status_code != 200:
                        failures.append(response.text[:200])

    barrier = threading.Barrier(concurrency + 1)
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} failed requests, e.g. {failures[0]}")
    return summarize("REST", batching, batch, concurrency, latencies, wall)


class Server:
    def __init__(self, base: str, batching: bool, log_path: str):
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable, "-m", "serving.server", "--model-base-path", base,
            "--port", str(self.port), "--enable-batching" if batching else "--no-enable-batching",
        ]  # fmt: skip
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited; see {log_path}")
            try:
                status = httpx.get(f"{self.url}/v1/models/{MODEL_NAME}", timeout=5).json()
                if any(v["state"] == "AVAILABLE" for v in status.get("model_version_status", [])):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"server not ready; see {log_path}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self._log.close()


def markdown(results: list[Result], meta: dict) -> str:
    lines = [
        "# REST serving vs in-process SavedModel",
        "",
        f"Model: {meta['model']}; {meta['images']} distinct JPEGs ({meta['image_kb']:.1f} KB "
        f"mean), {meta['images_per_scenario']} images per scenario; {meta['machine']}.",
        "",
        "| path | server batching | batch | concurrency | requests | images/s | p50 ms | "
        "p99 ms | REST / in-process |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}"
        lines.append(
            f"| {r.path} | {r.batching} | {r.batch} | {r.concurrency} | {r.requests} | "
            f"{r.images_per_s:.2f} | {r.p50_ms:.0f} | {r.p99_ms:.0f} | {ratio} |"
        )
    lines += ["", meta["note"], ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serving_bench", description=__doc__)
    parser.add_argument("--model-dir", help="a SavedModel, or a model directory of versions")
    parser.add_argument("--images", help="folder of JPEGs (default: 64 generated 224x224)")
    parser.add_argument("--num-images", type=int, default=64)
    parser.add_argument("--requests-images", type=int, default=256, help="images sent per scenario")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    export_dir = version_dir(args.model_dir) if args.model_dir else default_model()
    images = load_images(args.images, args.num_images)
    total = args.requests_images
    results = []
    import tensorflow as tf

    function = tf.saved_model.load(export_dir).signatures["serving_default"]
    for batch in (8, 1):
        print(f"in-process batch {batch} ...", flush=True)
        results.append(bench_in_process(function, images, batch, total))

    os.makedirs(WORK, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK) as base:
        os.makedirs(os.path.join(base, MODEL_NAME))
        os.symlink(os.path.abspath(export_dir), os.path.join(base, MODEL_NAME, "1"))
        for batching in (True, False):
            log_path = os.path.join(base, f"server-batching-{batching}.log")
            server = Server(base, batching, log_path)
            try:
                for batch, concurrency in ((8, 1), (8, 8), (1, 1), (1, 8)):
                    label = "on" if batching else "off"
                    print(f"REST batching {label} batch {batch} concurrency {concurrency} ...")
                    results.append(bench_rest(server.url, images, batch, concurrency, total, label))
            finally:
                server.stop()

    in_process = {r.batch: r.images_per_s for r in results if r.path == "in-process"}
    for r in results:
        if r.path == "REST":
            r.ratio = r.images_per_s / in_process[r.batch]
    at_8 = {
        (r.batching, r.concurrency): r.ratio for r in results if r.path == "REST" and r.batch == 8
    }
    note = (
        f"REST / in-process throughput at batch 8 (server defaults, batching on): "
        f"{at_8[('on', 1)]:.2f} at concurrency 1, {at_8[('on', 8)]:.2f} at concurrency 8 "
        f"(goal >= 0.9). At concurrency 8 REST beats the in-process loop, which makes one "
        f"call at a time: the server overlaps two calls (--num-threads = CPUs) and merges "
        f"queued requests (batching on vs off is the measured gain of batching)."
    )
    meta = {
        "model": os.path.abspath(export_dir),
        "images": len(images),
        "image_kb": sum(map(len, images)) / len(images) / 1024,
        "images_per_scenario": total,
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}",
        "note": note,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "serving.json"), "w") as f:
        json.dump({"meta": meta, "results": [asdict(r) for r in results]}, f, indent=2)
    table = markdown(results, meta)
    with open(os.path.join(args.out, "serving.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
