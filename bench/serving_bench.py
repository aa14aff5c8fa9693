"""Serving cost: REST and gRPC through the model server against the in-process SavedModel.

Why: the API layers (HTTP + JSON + base64, or gRPC + TensorProto; threads; batching) should
cost little next to the model itself, and warm-up should take the first-request cost off a
freshly loaded version. One run measures, on the same images and the same SavedModel:
- REST :predict and gRPC Predict (official stubs) through one `python -m serving.server` with
  `make serve`'s setting (--enable_batching, our batching defaults), batch 1 and 8,
  concurrency 1, 8 and 32, each pair right after in-process `signatures["serving_default"]`
  calls on the same requests, one call at a time (the ratio's denominator: measured back to
  back, so a change of the machine's load hits both);
- the first request's latency on a version hot-swapped in while the server runs, with the
  version's warm-up records replayed on load (the default) and with --no-enable-model-warmup;
and reports images/s, p50/p99 request latency and API/in-process throughput.
Results: bench/results/serving.json and serving.md.

    python -m bench.serving_bench [--model-dir DIR] [--images DIR] [--requests-images 256] \\
        [--backbone resnet50]

Each scenario sends --requests-images images, or one request per client if that is more, so
the run stays short on a shared machine (a few minutes with Lite0 on 2 cores). Few requests make
p99 close to the maximum; raise --requests-images on a quiet machine.

Without --model-dir it exports the project's model with the pretrained EfficientNet-Lite0
backbone (its packaged ImageNet weights) at 224x224 into bench/work/, reused by later runs;
--backbone resnet50 measures the heavier default backbone (random weights: ResNet50's ImageNet
file cannot be downloaded here; same compute as a trained one).

A scenario whose requests fail is reported with its failure count and first error instead of
ending the run.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import httpx
import numpy as np

from bench.results import RESULTS, write_results
from serving.client import image_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "bench", "work")
MODEL_NAME = "bench_model"
JPEG_EXTENSIONS = (".jpg", ".jpeg")
GRPC_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


@dataclass
class Result:
    path: str  # "in-process", "REST" or "gRPC"
    batching: str  # server request batching: "on", "off", "-" for in-process
    batch: int
    concurrency: int
    requests: int
    images_per_s: float
    p50_ms: float
    p99_ms: float
    ratio: float | None = None  # images/s over in-process images/s at the same batch size
    failures: int = 0  # requests that failed (their latency is still counted)
    first_error: str = ""


DEFAULT_BACKBONE = "efficientnet_lite0"


def default_model(backbone: str = DEFAULT_BACKBONE) -> str:
    """The project's export with a real backbone at 224 px, built once into bench/work/:
    pretrained where the weights can be had here (efficientnet_lite0), else random."""
    weights = "imagenet" if backbone.startswith("efficientnet_lite") else "random"
    export_dir = os.path.join(WORK, f"{backbone}_224_{weights}")
    if not os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
        sys.path.insert(0, ROOT)
        from tools import samples

        print(f"exporting a {backbone} 224x224 model ({weights}) into", export_dir, flush=True)
        samples.export_untrained_model(
            export_dir, image_size=224, backbone=backbone, backbone_weights=weights
        )
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
        paths = list(image_files([folder], JPEG_EXTENSIONS))[:count]
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


def summarize(path, batching, batch, concurrency, latencies, wall, failures=()) -> Result:
    images = batch * (len(latencies) - len(failures))  # answered images only
    return Result(
        path,
        batching,
        batch,
        concurrency,
        len(latencies),
        images / wall,
        1000 * statistics.median(latencies),
        1000 * float(np.percentile(latencies, 99)),
        failures=len(failures),
        first_error=failures[0] if failures else "",
    )


def bench_in_process(function, images: list[bytes], batch: int, total: int) -> Result:
    import tensorflow as tf

    work = batches(images, batch, total)
    function(image_bytes=tf.constant(work[0]))  # one more warm-up: the batch's own shape
    function(image_bytes=tf.constant(work[0]))  # warm-up: first call traces and allocates
    latencies = []
    started = time.perf_counter()
    for chunk in work:
        t0 = time.perf_counter()
        function(image_bytes=tf.constant(chunk))["probabilities"].numpy()
        latencies.append(time.perf_counter() - t0)
    return summarize("in-process", "-", batch, 1, latencies, time.perf_counter() - started)


def run_clients(send, payloads: list, concurrency: int) -> tuple[list[float], float, list[str]]:
    """`concurrency` threads sending the payloads (each thread warms up once first); returns
    the latencies, the wall time and the failed requests' errors."""
    latencies: list[float] = []
    failures: list[str] = []
    next_index = iter(range(len(payloads)))
    lock = threading.Lock()
    barrier = threading.Barrier(concurrency + 1)

    def worker() -> None:
        try:
            send(payloads[0])  # warm-up + connection
        except Exception as exc:
            with lock:
                failures.append(f"warm-up: {str(exc)[:200]}")
        barrier.wait()
        while True:
            with lock:
                index = next(next_index, None)
            if index is None:
                return
            t0 = time.perf_counter()
            try:
                send(payloads[index])
            except Exception as exc:
                with lock:
                    failures.append(str(exc)[:200])
            with lock:
                latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return latencies, wall, failures


def rest_body(chunk: list[bytes]) -> bytes:
    return json.dumps(
        {"instances": [{"b64": base64.b64encode(i).decode()} for i in chunk]}
    ).encode()


def rest_sender(url: str):
    endpoint = f"{url}/v1/models/{MODEL_NAME}:predict"
    local = threading.local()

    def send(body: bytes) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=300)
        response = local.client.post(
            endpoint, content=body, headers={"Content-Type": "application/json"}
        )
        if response.status_code != 200:
            raise RuntimeError(response.text[:200])

    return send


def grpc_request(chunk: list[bytes]):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(chunk))
    return request


def grpc_sender(channel):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def send(request) -> None:
        stub.Predict(request, timeout=300)

    return send


def bench_api(kind: str, send, payloads: list, batch: int, concurrency: int) -> Result:
    latencies, wall, failures = run_clients(send, payloads, concurrency)
    if failures:
        print(f"  {len(failures)} failed requests, e.g. {failures[0]}", flush=True)
    return summarize(kind, "on", batch, concurrency, latencies, wall, failures)


def push_version(export_dir: str, model_dir: str, version: int, warmup: bool) -> None:
    """A new version made of links to the export's files, with or without warm-up records,
    published with one rename."""
    temporary = os.path.join(model_dir, f".push-{version}")
    os.makedirs(os.path.join(temporary, "assets.extra"))
    for name in os.listdir(export_dir):
        if name != "assets.extra":
            os.symlink(os.path.join(export_dir, name), os.path.join(temporary, name))
    if warmup:
        from models import warmup as warmup_records

        warmup_records.write_warmup_requests(temporary)
    os.rename(temporary, os.path.join(model_dir, str(version)))


def first_request_after_swap(base: str, export_dir: str, images, warmup: bool) -> dict:
    """Start a server on version 1, hot-swap version 2 in, time its first and second request."""
    from serving.process import ServerProcess

    model_dir = os.path.join(base, MODEL_NAME)
    label = "with" if warmup else "without"
    server = ServerProcess(
        base,
        os.path.join(base, f"server-warmup-{label}.log"),
        *([] if warmup else ["--no-enable-model-warmup"]),
        poll=0.5,
    )
    try:
        server.wait_available(MODEL_NAME)
        version = 2 + int(warmup)
        loading = time.perf_counter()
        push_version(export_dir, model_dir, version, warmup)
        server.wait_available(MODEL_NAME, timeout=600, version=version)
        load_seconds = time.perf_counter() - loading
        send = rest_sender(server.url)
        body = rest_body(images[:8])
        t0 = time.perf_counter()
        send(body)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        send(body)
        second = time.perf_counter() - t0
    finally:
        server.stop()
        shutil.rmtree(os.path.join(model_dir, str(2 + int(warmup))), ignore_errors=True)
    return {
        "warmup": label,
        "first_request_ms": 1000 * first,
        "second_request_ms": 1000 * second,
        "push_to_available_s": load_seconds,
    }


def markdown(results: list[Result], swaps: list[dict], meta: dict) -> str:
    lines = [
        "# Serving: REST and gRPC vs in-process SavedModel",
        "",
        f"Model: {meta['model']}; {meta['images']} distinct JPEGs ({meta['image_kb']:.1f} KB "
        f"mean), at least {meta['images_per_scenario']} images per scenario (one request "
        f"per client if more); {meta['machine']}.",
        "",
        "| path | server batching | batch | concurrency | requests | images/s | p50 ms | "
        "p99 ms | API / in-process | failed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}"
        lines.append(
            f"| {r.path} | {r.batching} | {r.batch} | {r.concurrency} | {r.requests} | "
            f"{r.images_per_s:.2f} | {r.p50_ms:.0f} | {r.p99_ms:.0f} | {ratio} | {r.failures} |"
        )
    errors = [r for r in results if r.failures]
    lines += [f"- {r.path} batch {r.batch} x {r.concurrency}: {r.first_error}" for r in errors]
    lines += [
        "",
        "First request (batch 8, REST) on a version hot-swapped in while the server runs:",
        "",
        "| warm-up on load | first request ms | second request ms | push to AVAILABLE s |",
        "|---|---|---|---|",
    ]
    for swap in swaps:
        lines.append(
            f"| {swap['warmup']} | {swap['first_request_ms']:.0f} | "
            f"{swap['second_request_ms']:.0f} | {swap['push_to_available_s']:.1f} |"
        )
    lines += ["", meta["note"], ""]
    return "\n".join(lines)


BATCHES = (1, 8)
CONCURRENCIES = (1, 8, 32)
# `make serve`'s setting; the REST deadline (TF Serving's 30 s default) lifted so that deep
# queues at concurrency 32 on a loaded machine are measured rather than cut off (gRPC clients
# set their own deadline: 300 s here).
SERVE_FLAGS = ("--enable_batching", "--rest_api_timeout_in_ms=600000")


def scenario_images(total: int, batch: int, concurrency: int) -> int:
    return max(total, batch * concurrency)


def bench_server(base: str, images: list[bytes], total: int, function) -> list[Result]:
    """REST and gRPC through one `python -m serving.server` over the model base path `base`,
    at each batch size and concurrency; before each pair, the in-process `function` on the
    same requests, so that each ratio compares calls measured back to back."""
    import grpc

    from serving.process import ServerProcess

    results = []
    server = ServerProcess(base, os.path.join(base, "server.log"), *SERVE_FLAGS)
    try:
        server.wait_available(MODEL_NAME, timeout=600)
        with grpc.insecure_channel(server.grpc_target, options=GRPC_OPTIONS) as channel:
            for batch in BATCHES:
                for concurrency in CONCURRENCIES:
                    count = scenario_images(total, batch, concurrency)
                    work = batches(images, batch, count)
                    print(f"in-process batch {batch} ({concurrency}) ...", flush=True)
                    results.append(bench_in_process(function, images, batch, count))
                    print(f"REST batch {batch} concurrency {concurrency} ...", flush=True)
                    send = rest_sender(server.url)
                    bodies = [rest_body(chunk) for chunk in work]
                    results.append(bench_api("REST", send, bodies, batch, concurrency))
                    print(f"gRPC batch {batch} concurrency {concurrency} ...", flush=True)
                    send = grpc_sender(channel)
                    requests = [grpc_request(chunk) for chunk in work]
                    results.append(bench_api("gRPC", send, requests, batch, concurrency))
    finally:
        server.stop()
    return results


def add_ratios(results: list[Result]) -> dict[tuple[str, int, int], float]:
    """Sets each API row's ratio to the in-process row measured just before it (same batch
    size, same requests); returns (path, batch, concurrency) -> ratio."""
    in_process = None
    for r in results:
        if r.path == "in-process":
            in_process = r.images_per_s
        else:
            r.ratio = r.images_per_s / in_process
    return {(r.path, r.batch, r.concurrency): r.ratio for r in results if r.path != "in-process"}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serving_bench", description=__doc__)
    parser.add_argument("--model-dir", help="a SavedModel, or a model directory of versions")
    parser.add_argument("--images", help="folder of JPEGs (default: 64 generated 224x224)")
    parser.add_argument("--num-images", type=int, default=64)
    parser.add_argument(
        "--requests-images", type=int, default=256, help="images sent per scenario (at least)"
    )
    parser.add_argument(
        "--backbone", default=DEFAULT_BACKBONE, help="backbone of the default model"
    )
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    meta_load = ", ".join(f"{x:.1f}" for x in os.getloadavg())

    export_dir = version_dir(args.model_dir) if args.model_dir else default_model(args.backbone)
    images = load_images(args.images, args.num_images)
    total = args.requests_images
    import tensorflow as tf

    function = tf.saved_model.load(export_dir).signatures["serving_default"]
    os.makedirs(WORK, exist_ok=True)
    swaps = []
    with tempfile.TemporaryDirectory(dir=WORK) as base:
        os.makedirs(os.path.join(base, MODEL_NAME))
        os.symlink(os.path.abspath(export_dir), os.path.join(base, MODEL_NAME, "1"))
        results = bench_server(base, images, total, function)
        del function
        for warmup in (False, True):
            print(f"hot swap, warm-up {'on' if warmup else 'off'} ...", flush=True)
            swaps.append(first_request_after_swap(base, export_dir, images, warmup))
    ratios = add_ratios(results)
    goal = ", ".join(
        f"{path} {ratios[(path, 8, 8)]:.2f}" for path in ("REST", "gRPC")
    )  # the goal: >= 0.9 each at batch 8, concurrency 8, batching on
    note = (
        f"Server flags: {' '.join(SERVE_FLAGS)} (`make serve`'s batching: max_batch_size 64, "
        "batch_timeout_micros 0, --num-threads = CPUs; the REST deadline lifted from 30 s). "
        f"API / in-process throughput at batch 8, concurrency 8: {goal} (goal: >= 0.90 each). "
        "The in-process loop makes one call at a time; the server overlaps calls and merges "
        "queued requests, so ratios can exceed 1. Load average (1, 5, 15 min) at start "
        f"{meta_load}, at end {', '.join(f'{x:.1f}' for x in os.getloadavg())} on "
        f"{os.cpu_count()} CPUs: above the CPU count, other jobs shared the machine and "
        "absolute figures are noisy; p99 of small scenarios is close to their maximum. The "
        "rows were measured back to back in one run, so the ratios compare like with like."
    )
    meta = {
        "model": os.path.abspath(export_dir),
        "images": len(images),
        "image_kb": sum(map(len, images)) / len(images) / 1024,
        "images_per_scenario": total,
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}",
        "note": note,
    }
    write_results(
        args.out,
        "serving",
        {"meta": meta, "results": [asdict(r) for r in results], "hot_swap": swaps},
        markdown(results, swaps, meta),
    )


if __name__ == "__main__":
    main()
