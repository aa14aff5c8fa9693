"""Transfer learning measured on real features: pretrained EfficientNet-Lite0 on real photos.

Why: every earlier accuracy figure was measured with RANDOM backbone weights. This bench uses
the ImageNet weights packaged in the lock (EfficientNet-Lite0) on the shared Food-101 photos
(hot dog against 100 other dishes, 64x64 upscaled to 224 px) and measures, in one process on
the same held-out photos (test/):
- the seed's recipe (frozen backbone, GAP, dense softmax, Adam 1e-3, 5 epochs, all of train/)
  against the pipeline's default head (models.model.build_head + compile_model with
  TrainingOptions' defaults, trained on 80% of train/: the rest is the pipeline's validation
  split) and with CLASS_WEIGHTS, with the paired 95% interval of (pipeline - seed) accuracy;
- float32 against bfloat16 backbone passes per backbone: speed, and for Lite0 the held-out
  accuracy of a head trained on bfloat16 features and its agreement with the float32 model
  that is served;
- the gate's noise: ten head-only re-runs changing only SEED, each compared with the first
  run on the same photos by the gate's rule (refused when the upper end of the paired 95%
  interval of candidate - baseline accuracy is below -ACCURACY_MAX_DROP).
The paired intervals here are normal approximations over per-photo differences (TFMA's
gate uses its jackknife over the same pairs).

Then whole `make run`s (python pipeline/local_runner.py, default gate, BACKBONE=
efficientnet_lite0) on the same folder, whose eval split is test/, the same held-out photos:
- a first run with the defaults, then on fresh copies of its OUTPUT (so its feature cache
  and its blessed model are there, as for a user's re-run): TUNE=true, CLASS_WEIGHTS=true,
  fine-tuning (FINE_TUNE_BLOCKS / FINE_TUNE_EPOCHS) and AUGMENTATION; each Trainer's model
  predicts the held-out photos, compared with the seed recipe photo by photo;
- the gate's noise through the real gate: --reruns head-only re-runs changing only SEED,
  each on a fresh copy of the first run's OUTPUT (the baseline is always the first run's
  model), with the Evaluator's verdict.
--no-pipeline-runs skips this part (about 20-30 minutes on 2 cores).

    BENCH_IMAGES=/work/shared/data/food101-hotdog-64 python -m bench.transfer_bench
Results: bench/results/transfer.json and transfer.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.results import RESULTS, write_results  # noqa: E402

DEFAULT_IMAGES = "/work/shared/data/food101-hotdog-64"
BACKBONE = "efficientnet_lite0"
WORK = os.path.join(os.path.dirname(RESULTS), "work", "transfer")
# The whole-pipeline recipes beside the defaults, each a re-run on a copy of the first run's
# OUTPUT: (row label, knobs).
PIPELINE_RECIPES = (
    ("TUNE=true", {"tune": "true"}),
    ("CLASS_WEIGHTS=true", {"class_weights": "true"}),
    ("FINE_TUNE_BLOCKS=2, FINE_TUNE_EPOCHS=3", {"fine_tune_blocks": "2", "fine_tune_epochs": "3"}),
    ("AUGMENTATION=flip,rotation,zoom,contrast", {"augmentation": "flip,rotation,zoom,contrast"}),
)
# The pipeline's own defaults and gate: only the backbone (pretrained Lite0) is set, and the
# TFLite files (their cost and gate are bench/deploy_bench.py's) are not written.
PIPELINE_BASE_KNOBS = {
    "BACKBONE": BACKBONE,
    "BACKBONE_WEIGHTS": "imagenet",
    "TFLITE_EXPORT": "false",
}


def _list(images_dir: str, split: str) -> tuple[list[str], list[int]]:
    classes = sorted(os.listdir(os.path.join(images_dir, split)))
    paths, labels = [], []
    for label, name in enumerate(classes):
        folder = os.path.join(images_dir, split, name)
        for file in sorted(os.listdir(folder)):
            paths.append(os.path.join(folder, file))
            labels.append(label)
    return paths, labels


def _encoded_batches(paths: list[str], size: int = 64):
    """The photos' file bytes, `size` at a time, as string tensors."""
    import tensorflow as tf

    for start in range(0, len(paths), size):
        encoded = []
        for path in paths[start : start + size]:
            with open(path, "rb") as f:
                encoded.append(f.read())
        yield tf.constant(encoded)


def _pixels(paths: list[str], image_size: int, backbone: str):
    import tensorflow as tf

    from models import preprocessing

    batches = [
        preprocessing.preprocess_images(encoded, image_size, backbone)
        for encoded in _encoded_batches(paths)
    ]
    return tf.concat(batches, 0)


def _features(extractor, pixels, batch_size: int = 32):
    import numpy as np

    started = time.perf_counter()
    out = extractor.predict(pixels, batch_size=batch_size, verbose=0)
    return np.asarray(out, np.float32), len(pixels) / (time.perf_counter() - started)


def _paired(a, b, labels) -> dict:
    """Accuracy difference a - b on the same photos with its normal 95% interval."""
    import numpy as np

    d = (a == labels).astype(float) - (b == labels).astype(float)
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d)) if d.any() else 0.0
    return {
        "difference": float(d.mean()),
        "lower": float(d.mean() - half),
        "upper": float(d.mean() + half),
    }


def _head(features, labels, *, seed: int, epochs: int, recipe: str, class_weights: bool = False):
    import numpy as np
    import tf_keras

    from models import model
    from models.options import TrainingOptions

    tf_keras.utils.set_random_seed(seed)
    options = TrainingOptions()
    if recipe == "seed":
        head = tf_keras.Sequential([tf_keras.layers.Dense(2, activation="softmax")])
        head.compile(tf_keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    else:
        head = model.build_head(features.shape[1], 2, options.dropout, seed)
        model.compile_model(head, options.learning_rate, 2, options.label_smoothing)
    weights = None
    if class_weights:
        counts = np.bincount(labels, minlength=2)
        weights = {c: len(labels) / (2 * counts[c]) for c in range(2)}
    head.fit(
        features,
        labels,
        epochs=epochs,
        batch_size=options.batch_size,
        shuffle=True,
        class_weight=weights,
        verbose=0,
    )
    return head


def _model_predictions(model_dir: str, paths: list[str], class_names: list[str]):
    """Class indexes (in `class_names` order) a Trainer's serving model gives the photos."""
    import numpy as np
    import tensorflow as tf

    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    index = {name: i for i, name in enumerate(class_names)}
    predicted = []
    for encoded in _encoded_batches(paths):
        names = serve(image_bytes=encoded)["class_name"].numpy()
        predicted += [index[n.decode()] for n in names]
    return np.array(predicted)


def _pipeline_runs(args, test_paths, y_test, class_names, seed_pred) -> dict:
    """Whole pipeline runs: defaults, the recipes and the SEED re-runs (module docstring)."""
    from bench.pipeline_bench import run_pipeline

    shutil.rmtree(WORK, ignore_errors=True)
    first_output = os.path.join(WORK, "first")
    size = args.image_size

    def measured(label: str, run: dict) -> dict:
        if "failed" in run:
            return {"label": label, "failed": run["failed"], "wall_seconds": run["wall_seconds"]}
        pred = _model_predictions(run["trainer_model"], test_paths, class_names)
        gate = run.get("gate") or {}
        return {
            "label": label,
            "accuracy": round(float((pred == y_test).mean()), 4),
            "minus_seed": _paired(pred, seed_pred, y_test),
            "blessed": run.get("blessed"),
            "decided_by": gate.get("decided_by"),
            "difference_vs_baseline": gate.get("difference"),
            "wall_seconds": round(run["wall_seconds"], 1),
            "trainer_seconds": run["components"].get("Trainer"),
            "pred": pred,
        }

    def rerun(name: str, label: str, **knobs) -> dict:
        """A re-run on a fresh copy of the first run's OUTPUT, measured, then deleted."""
        output = os.path.join(WORK, name)
        shutil.copytree(first_output, output, symlinks=True)
        try:
            run = run_pipeline(
                name, args.images, output, size, base_knobs=PIPELINE_BASE_KNOBS, **knobs
            )
            return measured(label, run)
        finally:
            shutil.rmtree(output, ignore_errors=True)

    first = measured(
        "defaults (first run)",
        run_pipeline("first", args.images, first_output, size, base_knobs=PIPELINE_BASE_KNOBS),
    )
    rows = [first]
    if "failed" in first:
        return {"rows": rows, "gate_noise": []}
    for i, (label, knobs) in enumerate(PIPELINE_RECIPES):
        rows.append(rerun(f"recipe{i}", label, **knobs))
    noise = []
    for seed in range(1, args.reruns + 1):
        row = rerun(f"seed{seed}", f"SEED={seed}", seed=str(seed))
        if "pred" in row:
            row["minus_first"] = _paired(row["pred"], first["pred"], y_test)
        noise.append(row)
    for row in rows + noise:
        row.pop("pred", None)
    return {"rows": rows, "gate_noise": noise}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", default=os.environ.get("BENCH_IMAGES", DEFAULT_IMAGES))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--reruns", type=int, default=10)
    parser.add_argument("--speed-images", type=int, default=96)
    parser.add_argument(
        "--no-pipeline-runs",
        dest="pipeline_runs",
        action="store_false",
        help="skip the whole-pipeline runs (recipes and the real gate's noise)",
    )
    args = parser.parse_args(argv)

    import numpy as np

    from models import backbones, model, weights
    from models.options import TrainingOptions

    started = time.time()
    load = os.getloadavg()
    size = args.image_size
    train_paths, train_labels = _list(args.images, "train")
    test_paths, test_labels = _list(args.images, "test")
    y_train, y_test = np.array(train_labels), np.array(test_labels)
    row = backbones.get_backbone(BACKBONE)
    record = weights.resolve_weights(weights.IMAGENET, row)
    backbone = model.build_backbone(BACKBONE, size, record)
    x_train_pixels = _pixels(train_paths, size, BACKBONE)
    x_test_pixels = _pixels(test_paths, size, BACKBONE)
    results: dict = {"weights": record.as_dict(), "images": args.images, "image_size": size}
    feats = {}
    for dtype in ("float32", "bfloat16"):
        extractor = model.build_feature_extractor(backbone, size, dtype, BACKBONE)
        _features(extractor, x_test_pixels[:32])  # trace
        train_f, train_speed = _features(extractor, x_train_pixels)
        test_f, test_speed = _features(extractor, x_test_pixels)
        feats[dtype] = (train_f, test_f)
        results.setdefault("speed", {}).setdefault(BACKBONE, {})[dtype] = round(
            (train_speed * len(train_f) + test_speed * len(test_f)) / (len(train_f) + len(test_f)),
            1,
        )
    # ResNet50's passes for the speed ratio only (its ImageNet file is absent: random
    # weights cost the same compute).
    resnet = model.build_backbone(
        "resnet50", size, weights.resolve_weights("random", backbones.get_backbone("resnet50"))
    )
    resnet_pixels = _pixels(train_paths[: args.speed_images], size, "resnet50")
    for dtype in ("float32", "bfloat16"):
        extractor = model.build_feature_extractor(resnet, size, dtype, "resnet50")
        _features(extractor, resnet_pixels[:32])
        _, speed = _features(extractor, resnet_pixels)
        results["speed"].setdefault("resnet50", {})[dtype] = round(speed, 1)
    for speeds in results["speed"].values():
        speeds["bfloat16_over_float32"] = round(speeds["bfloat16"] / speeds["float32"], 2)

    train_f, test_f = feats["float32"]
    epochs = TrainingOptions().epochs
    # The pipeline holds out validation_fraction of train/ (by content hash; here seeded).
    order = np.random.default_rng(0).permutation(len(train_f))
    fit_rows = order[: int(round(0.8 * len(order)))]

    def predict(head, x):
        return head.predict(x, verbose=0).argmax(axis=1)

    seed_head = _head(train_f, y_train, seed=42, epochs=5, recipe="seed")
    seed_pred = predict(seed_head, test_f)
    pipeline_head = _head(
        train_f[fit_rows], y_train[fit_rows], seed=42, epochs=epochs, recipe="pipeline"
    )
    pipeline_pred = predict(pipeline_head, test_f)
    weighted_head = _head(
        train_f[fit_rows],
        y_train[fit_rows],
        seed=42,
        epochs=epochs,
        recipe="pipeline",
        class_weights=True,
    )
    weighted_pred = predict(weighted_head, test_f)
    bf16_train, bf16_test = feats["bfloat16"]
    bf16_head = _head(
        bf16_train[fit_rows], y_train[fit_rows], seed=42, epochs=epochs, recipe="pipeline"
    )
    bf16_pred = predict(bf16_head, bf16_test)
    served_pred = predict(bf16_head, test_f)  # the exported model runs the backbone in float32
    relative_l2 = float(np.linalg.norm(bf16_test - test_f) / np.linalg.norm(test_f))

    def acc(pred):
        return round(float(np.mean(pred == y_test)), 4)

    results["accuracy"] = {
        "seed_recipe": acc(seed_pred),
        "pipeline_defaults": acc(pipeline_pred),
        "pipeline_class_weights": acc(weighted_pred),
        "pipeline_bfloat16_features": acc(bf16_pred),
        "held_out_photos": int(len(y_test)),
        "pipeline_minus_seed": _paired(pipeline_pred, seed_pred, y_test),
        "class_weights_minus_seed": _paired(weighted_pred, seed_pred, y_test),
    }
    results["bfloat16"] = {
        "feature_relative_l2": round(relative_l2, 4),
        "served_float32_agrees_with_bfloat16_head": round(
            float(np.mean(served_pred == bf16_pred)), 4
        ),
    }
    max_drop = 0.01
    runs = []
    baseline = None
    for seed in range(args.reruns):
        head = _head(
            train_f[fit_rows], y_train[fit_rows], seed=seed, epochs=epochs, recipe="pipeline"
        )
        pred = predict(head, test_f)
        if baseline is None:
            baseline = pred
            runs.append({"seed": seed, "accuracy": acc(pred), "baseline": True})
            continue
        paired = _paired(pred, baseline, y_test)
        refused = paired["upper"] < -max_drop or acc(pred) < 0.6
        runs.append({"seed": seed, "accuracy": acc(pred), **paired, "refused": refused})
    refusals = [r for r in runs if r.get("refused")]
    results["gate_noise"] = {
        "runs": runs,
        "refused": len(refusals),
        "candidates": len(runs) - 1,
        "accuracy_max_drop": max_drop,
    }
    if args.pipeline_runs:
        class_names = sorted(os.listdir(os.path.join(args.images, "test")))
        results["pipeline_runs"] = _pipeline_runs(args, test_paths, y_test, class_names, seed_pred)
    results["machine"] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in load],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "note": "a load average above the CPU count means other jobs shared the machine: "
        "speeds are then indicative; ratios were measured side by side in one run",
    }
    results["wall_seconds"] = round(time.time() - started, 1)
    write_results(RESULTS, "transfer", results, _markdown(results))
    return results


def _markdown(r: dict) -> str:
    a, b, g = r["accuracy"], r["bfloat16"], r["gate_noise"]
    d = a["pipeline_minus_seed"]
    lines = [
        "# Transfer learning on real features (pretrained EfficientNet-Lite0)",
        "",
        f"{r['weights']['backbone']} ImageNet weights from {r['weights']['package']} "
        f"{r['weights']['package_version']} (sha256 {r['weights']['sha256'][:16]}...); photos "
        f"{r['images']} at {r['image_size']} px; {a['held_out_photos']} held-out photos (test/). "
        f"Machine: {r['machine']['cpus']} CPUs, load average "
        f"{r['machine']['load_average_at_start']} at start, "
        f"{r['machine']['load_average_at_end']} at end ({r['machine']['note']}).",
        "",
        "| recipe | held-out accuracy |",
        "|---|---|",
        "| seed recipe (GAP + dense softmax, Adam 1e-3, 5 epochs, all of train/) | "
        f"{a['seed_recipe']:.4f} |",
        f"| pipeline defaults (80% of train/) | {a['pipeline_defaults']:.4f} |",
        f"| pipeline, CLASS_WEIGHTS=true | {a['pipeline_class_weights']:.4f} |",
        f"| pipeline, BACKBONE_DTYPE=bfloat16 | {a['pipeline_bfloat16_features']:.4f} |",
        "",
        f"Pipeline - seed recipe: {d['difference']:+.4f} [paired 95% interval {d['lower']:+.4f}, "
        f"{d['upper']:+.4f}]: "
        f"{'matches or beats' if d['upper'] >= 0 else 'BELOW'} the seed recipe.",
        "",
        "| backbone | float32 images/s | bfloat16 images/s | bf16 / fp32 |",
        "|---|---|---|---|",
    ]
    for name, s in r["speed"].items():
        lines.append(
            f"| {name} | {s['float32']} | {s['bfloat16']} | {s['bfloat16_over_float32']} |"
        )
    lines += [
        "",
        f"bfloat16 Lite0 features differ from float32 by {b['feature_relative_l2']:.1%} "
        "(relative L2); "
        f"the served float32 model agrees with the bfloat16-trained head's predictions on "
        f"{b['served_float32_agrees_with_bfloat16_head']:.1%} of held-out photos.",
        "",
        f"Gate noise: {g['refused']} of {g['candidates']} head-only re-runs (only SEED changed) "
        f"refused against the first run (rule: upper end of the paired 95% interval < "
        f"-{g['accuracy_max_drop']}).",
        "",
        "| SEED | accuracy | candidate - baseline [95%] | refused |",
        "|---|---|---|---|",
    ]
    for run in g["runs"]:
        if run.get("baseline"):
            lines.append(f"| {run['seed']} | {run['accuracy']:.4f} | baseline | |")
        else:
            lines.append(
                f"| {run['seed']} | {run['accuracy']:.4f} | {run['difference']:+.4f} "
                f"[{run['lower']:+.4f}, {run['upper']:+.4f}] | "
                f"{'yes' if run['refused'] else 'no'} |"
            )
    if "pipeline_runs" in r:
        lines += _pipeline_markdown(r["pipeline_runs"], a["seed_recipe"])
    lines += ["", f"Wall {r['wall_seconds']} s.", ""]
    return "\n".join(lines)


def _interval(d: dict | None) -> str:
    if not d:
        return ""
    if "difference" in d:
        return f"{d['difference']:+.4f} [{d['lower']:+.4f}, {d['upper']:+.4f}]"
    return f"{d['value']:+.4f} [{d['lower']:+.4f}, {d['upper']:+.4f}]"  # the gate's Interval


def _pipeline_markdown(p: dict, seed_accuracy: float) -> list[str]:
    lines = [
        "",
        "## Whole pipeline runs (`make run`, BACKBONE=efficientnet_lite0, default gate)",
        "",
        "Eval split = test/, the held-out photos above. Each recipe is a re-run on a fresh copy "
        "of the first run's OUTPUT; accuracy is the Trainer's model on the held-out photos; "
        f"seed recipe {seed_accuracy:.4f}. Match or beat: upper end of the paired 95% "
        "interval of (run - seed recipe) >= 0.",
        "",
        "| run | held-out accuracy | run - seed recipe [paired 95%] | matches or beats | "
        "gate | wall s | Trainer s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in p["rows"]:
        if "failed" in row:
            lines.append(f"| {row['label']} | FAILED (exit {row['failed']}) | | | | | |")
            continue
        d = row["minus_seed"]
        lines.append(
            f"| {row['label']} | {row['accuracy']:.4f} | {_interval(d)} | "
            f"{'yes' if d['upper'] >= 0 else 'NO'} | {row['decided_by'] or ''} | "
            f"{row['wall_seconds']:.0f} | {row['trainer_seconds'] or 0:.0f} |"
        )
    noise = p["gate_noise"]
    refused = [r for r in noise if r.get("blessed") is False]
    lines += [
        "",
        f"The real gate's noise: {len(refused)} of {len(noise)} head-only re-runs (only SEED "
        "changed, each on a fresh copy of the first run's OUTPUT) refused by the Evaluator.",
        "",
        "| run | accuracy | candidate - first run [paired 95%] | gate's difference "
        "[TFMA 95%] | verdict |",
        "|---|---|---|---|---|",
    ]
    for row in noise:
        if "failed" in row:
            lines.append(f"| {row['label']} | FAILED (exit {row['failed']}) | | | |")
            continue
        lines.append(
            f"| {row['label']} | {row['accuracy']:.4f} | {_interval(row.get('minus_first'))} | "
            f"{_interval(row.get('difference_vs_baseline'))} | {row['decided_by'] or ''} |"
        )
    return lines


if __name__ == "__main__":
    main()
