"""Replaying a version's warm-up requests before it is marked AVAILABLE, as TF Serving does.

TF Serving reads `<version>/assets.extra/tf_serving_warmup_requests`, a TFRecord file of
PredictionLog protos, and runs each request once on the freshly loaded model before the version
serves (servables/tensorflow/saved_model_warmup.cc and saved_model_warmup_util.cc): the first
real request then no longer pays for graph tracing and kernel set-up. Same rules here:
- no file: nothing to do; a record that does not parse, a request that fails, or more than
  1,000 records (WarmupConsts::kMaxNumRecords) fail the load with TF Serving's message;
- predict, classify, regress and multi_inference logs are replayed (saved_model_warmup.cc's
  RunWarmupRequest); other log types are UNIMPLEMENTED, as TF Serving answers for them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from serving import errors, prediction
from serving.savedmodel import Servable

log = logging.getLogger(__name__)

ASSETS_EXTRA = "assets.extra"
REQUESTS_FILE = "tf_serving_warmup_requests"  # WarmupConsts::kRequestsFileName
MAX_RECORDS = 1000  # WarmupConsts::kMaxNumRecords


def warmup_path(export_dir: str) -> str:
    return os.path.join(export_dir, ASSETS_EXTRA, REQUESTS_FILE)


def replay(servable: Servable) -> int:
    """Run the version's warm-up requests; returns how many records ran."""
    path = warmup_path(servable.export_dir)
    if not os.path.isfile(path):
        log.info("No warmup data file found at %s", path)
        return 0
    count = 0
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        entry = prediction_log_pb2.PredictionLog()
        try:
            entry.ParseFromString(record)
        except Exception:
            raise errors.invalid_argument(
                f"Failed to parse warmup record: {record[:64]!r} from {path}"
            ) from None
        _run(servable, entry)
        count += 1
        if count > MAX_RECORDS:
            raise errors.invalid_argument(
                f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}"
            )
    return count


def _run(servable: Servable, entry: prediction_log_pb2.PredictionLog) -> None:
    kind = entry.WhichOneof("log_type")
    if kind == "predict_log":
        signature, inputs = prediction.predict_inputs(servable, entry.predict_log.request)
        servable.run(signature.name, inputs)
    elif kind == "classify_log":
        request = entry.classify_log.request
        signature = servable.classify_signature(request.model_spec.signature_name)
        servable.run(
            signature.name, {tf.saved_model.CLASSIFY_INPUTS: prediction.examples(request.input)}
        )
    elif kind == "regress_log":
        request = entry.regress_log.request
        signature = servable.regress_signature(request.model_spec.signature_name)
        servable.run(
            signature.name, {tf.saved_model.REGRESS_INPUTS: prediction.examples(request.input)}
        )
    elif kind == "multi_inference_log":
        request = entry.multi_inference_log.request
        serialized = prediction.examples(request.input)
        for task in request.tasks:
            name = task.model_spec.signature_name
            if task.method_name == prediction.CLASSIFY_METHOD:
                signature, key = servable.classify_signature(name), tf.saved_model.CLASSIFY_INPUTS
            elif task.method_name == prediction.REGRESS_METHOD:
                signature, key = servable.regress_signature(name), tf.saved_model.REGRESS_INPUTS
            else:
                raise errors.ServingError(
                    errors.Code.UNIMPLEMENTED,
                    f"Unsupported signature method_name: {task.method_name}",
                )
            servable.run(signature.name, {key: serialized})
    elif kind is not None:
        field = prediction_log_pb2.PredictionLog.DESCRIPTOR.fields_by_name[kind]
        raise errors.ServingError(
            errors.Code.UNIMPLEMENTED, f"Unsupported log_type for warmup: {field.number}"
        )


def warmer(observe: Callable[[str, str, float], None]) -> Callable[[str, int, Servable], None]:
    """The registry's warm-up hook: replay, and record TF Serving's model_warmup_latency."""

    def warm(name: str, version: int, servable: Servable) -> None:
        started = time.perf_counter()
        code = "OK"
        try:
            count = replay(servable)
            if count:
                log.info("Warmed up %s version %d with %d records", name, version, count)
        except Exception as exc:
            code = errors.from_exception(exc).code.name
            raise
        finally:
            observe(servable.export_dir, code, time.perf_counter() - started)

    return warm
