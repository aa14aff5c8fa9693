"""The TFLite models' gate: each one against the SavedModel, on the same eval photos.

TFMA's `tf_lite` model type cannot evaluate these models here: its extractor looks the
model's input up by tensor name among the parsed features, and our records hold encoded
photos (Transform is not materialized). So this step runs `tf.lite.Interpreter` itself over
the eval split's records, decoding each photo as the SavedModel does
(models/tflite_export.decode_pixels), and asks the SavedModel for its answer on the very same
records.

A TFLite model is refused (not pushed) when
- its top-1 agreement with the SavedModel is below `min_agreement` (TFLITE_MIN_AGREEMENT), or
- its accuracy is lower beyond noise: the 95 % interval of the paired per-photo difference
  (TFLite correct - SavedModel correct; normal approximation) has its upper end below
  -`max_drop` (TFLITE_MAX_DROP).
The result (accuracies, agreement, the interval, sizes, single-image latency, images/s on
this machine) is `tflite_evaluation.json` in the output artifact; the Pusher, the run
summary and the report read it through read_evaluation().
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np
import tensorflow as tf

from models import features, tflite_export
from models.atomic_files import write_text_atomically

EVALUATION_FILE = "tflite_evaluation.json"
BATCH = 32
LATENCY_REPEATS = 20  # single-image invokes timed for the latency (median)


def read_evaluation(uri: str) -> dict:
    """The evaluation written by evaluate() into a TFLiteEvaluation artifact's folder."""
    with tf.io.gfile.GFile(os.path.join(uri, EVALUATION_FILE)) as f:
        return json.load(f)


def blessed_files(evaluation: dict) -> list[str]:
    return [name for name, result in evaluation["models"].items() if result["blessed"]]


def read_eval_split(examples_uri: str, split: str) -> tuple[list[bytes], np.ndarray]:
    """(encoded photos, labels) of a split of an Examples artifact, in file order."""
    files = sorted(tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*")))
    spec = {
        features.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
        features.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    }
    images, labels = [], []
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(256):
        parsed = tf.io.parse_example(batch, spec)
        images.extend(parsed[features.IMAGE_KEY].numpy())
        labels.extend(parsed[features.LABEL_KEY].numpy())
    return images, np.asarray(labels, np.int64)


def saved_model_probabilities(model_dir: str, images: list[bytes]) -> np.ndarray:
    serve = tf.saved_model.load(model_dir).signatures[features.SERVING_SIGNATURE]
    out = [
        serve(**{features.SERVING_INPUT_KEY: tf.constant(images[i : i + BATCH])})[
            features.PROBABILITIES_KEY
        ].numpy()
        for i in range(0, len(images), BATCH)
    ]
    return np.concatenate(out)


def interpreter_probabilities(model_path: str, pixels: np.ndarray) -> tuple[np.ndarray, dict]:
    """(probabilities of every image, one at a time as on a phone, timing)."""
    with tf.io.gfile.GFile(model_path, "rb") as f:
        interpreter = tf.lite.Interpreter(model_content=f.read(), num_threads=1)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]

    def run(image: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(inp, image[np.newaxis])
        interpreter.invoke()
        return interpreter.get_tensor(out)[0].copy()

    start = time.perf_counter()
    probabilities = np.stack([run(image) for image in pixels])
    seconds = time.perf_counter() - start
    single = []
    for _ in range(LATENCY_REPEATS):
        t = time.perf_counter()
        run(pixels[0])
        single.append(time.perf_counter() - t)
    return probabilities, {
        "latency_ms": round(1000 * float(np.median(single)), 3),
        "images_per_second": round(len(pixels) / seconds, 2) if seconds > 0 else None,
    }


def paired_difference(candidate_correct: np.ndarray, reference_correct: np.ndarray) -> dict:
    """Mean of (candidate - reference) correctness per photo with its 95 % interval."""
    diff = candidate_correct.astype(np.float64) - reference_correct.astype(np.float64)
    n = len(diff)
    mean = float(diff.mean()) if n else 0.0
    half = 1.96 * float(diff.std(ddof=1)) / math.sqrt(n) if n > 1 else 0.0
    return {"mean": mean, "lower": mean - half, "upper": mean + half}


def judge(result: dict, min_agreement: float, max_drop: float) -> dict:
    """result + blessed and the reasons for a refusal."""
    reasons = []
    if result["agreement"] < min_agreement:
        reasons.append(
            f"agrees with the SavedModel on {result['agreement']:.4f} of the eval photos, "
            f"below TFLITE_MIN_AGREEMENT={min_agreement}"
        )
    if result["difference"]["upper"] < -max_drop:
        reasons.append(
            f"accuracy {result['accuracy']:.4f} is lower than the SavedModel's beyond noise "
            f"(paired difference upper end {result['difference']['upper']:.4f} < "
            f"-TFLITE_MAX_DROP={-max_drop})"
        )
    return {**result, "blessed": not reasons, "refused_because": reasons}


def _dir_size(path: str) -> int:
    return sum(
        tf.io.gfile.stat(os.path.join(folder, name)).length
        for folder, _, names in tf.io.gfile.walk(path)
        for name in names
    )


def evaluate(
    examples_uri: str,
    eval_split: str,
    model_uri: str,
    min_agreement: float,
    max_drop: float,
) -> dict:
    images, labels = read_eval_split(examples_uri, eval_split)
    saved_model_dir = os.path.join(model_uri, "Format-Serving")
    start = time.perf_counter()
    reference = saved_model_probabilities(saved_model_dir, images)
    reference_seconds = time.perf_counter() - start
    reference_correct = reference.argmax(-1) == labels
    evaluation = {
        "eval_split": eval_split,
        "examples": len(images),
        "min_agreement": min_agreement,
        "max_drop": max_drop,
        "saved_model": {
            "accuracy": float(reference_correct.mean()) if len(images) else None,
            "size_bytes": _dir_size(saved_model_dir),
            "images_per_second": round(len(images) / reference_seconds, 2),
        },
        "models": {},
    }
    folder = tflite_export.tflite_dir(model_uri)
    present = [n for n in tflite_export.MODEL_FILES if tf.io.gfile.exists(os.path.join(folder, n))]
    if not present:
        return evaluation
    path = os.path.join(folder, present[0])
    with tf.io.gfile.GFile(path, "rb") as f:
        probe = tf.lite.Interpreter(model_content=f.read())
    image_size = int(probe.get_input_details()[0]["shape"][1])
    pixels = np.concatenate(
        [
            tflite_export.decode_pixels(tf.constant(images[i : i + BATCH]), image_size).numpy()
            for i in range(0, len(images), BATCH)
        ]
    )
    for name in present:
        path = os.path.join(folder, name)
        probabilities, timing = interpreter_probabilities(path, pixels)
        predicted = probabilities.argmax(-1)
        correct = predicted == labels
        result = {
            "accuracy": float(correct.mean()),
            "agreement": float((predicted == reference.argmax(-1)).mean()),
            "difference": paired_difference(correct, reference_correct),
            "size_bytes": tf.io.gfile.stat(path).length,
            **timing,
        }
        evaluation["models"][name] = judge(result, min_agreement, max_drop)
    return evaluation


def run(examples, model, evaluation, eval_split: str, min_agreement: float, max_drop: float):
    """The component's body: evaluate, write the file, record the verdicts in ML Metadata."""
    result = evaluate(examples.uri, eval_split, model.uri, min_agreement, max_drop)
    write_text_atomically(
        os.path.join(evaluation.uri, EVALUATION_FILE), json.dumps(result, indent=2) + "\n"
    )
    evaluation.set_string_custom_property("blessed_files", json.dumps(blessed_files(result)))
    for name, verdict in result["models"].items():
        tf.get_logger().info(
            "%s: accuracy %.4f (SavedModel %.4f), agreement %.4f, %s%s",
            name,
            verdict["accuracy"],
            result["saved_model"]["accuracy"],
            verdict["agreement"],
            "blessed" if verdict["blessed"] else "REFUSED: ",
            "; ".join(verdict["refused_because"]),
        )
    return result
