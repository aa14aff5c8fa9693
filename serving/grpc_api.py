"""TF Serving's gRPC API (port 8500) on grpcio, with the official tensorflow-serving-api stubs.

PredictionService (Predict, Classify, Regress, GetModelMetadata) and ModelService
(GetModelStatus, HandleReloadConfigRequest) answer from the same model registry, runner and
batching as the REST API: the gRPC server runs on the REST server's event loop (grpc.aio), so
a gRPC request and a REST request can be merged into one model call. Checks and messages
follow TF Serving's implementations (predict_util.cc, classifier.cc, regressor.cc,
get_model_metadata_impl.cc, get_model_status_impl.cc, model_service_impl.cc); failures are gRPC
statuses with the canonical code, as TF Serving's ToGRPCStatus gives them. Message size limits
are INT32_MAX, as server.cc sets them, so image batches are not cut at gRPC's default 4 MiB.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving import codec, config, confine, errors, grpc_parse, tensor_guard
from serving.metrics import Metrics
from serving.models import ModelRegistry
from serving.runner import Runner
from serving.savedmodel import Servable, Signature

log = logging.getLogger(__name__)

INT32_MAX = 2**31 - 1
SIGNATURE_DEF_FIELD = "signature_def"  # GetModelMetadataImpl::kSignatureDef
OPTIONS = [
    ("grpc.max_receive_message_length", INT32_MAX),
    ("grpc.max_send_message_length", INT32_MAX),
]


def _resolve(models: ModelRegistry, spec) -> Servable:
    """ServerCore::ServableRequestFromModelSpec, then the registry lookup."""
    if not spec.name:
        raise errors.invalid_argument("ModelSpec has no name specified.")
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return models.resolve(spec.name, spec.version.value)
    if choice == "version_label":
        return models.resolve(spec.name, label=spec.version_label)
    return models.resolve(spec.name)


def examples(request_input) -> np.ndarray:
    """Serialized tf.Examples of an Input; the context is merged into each example."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        serialized = [e.SerializeToString() for e in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        listed = request_input.example_list_with_context
        context = listed.context.SerializeToString()
        serialized = [context + e.SerializeToString() for e in listed.examples]
    else:
        serialized = []
    if not serialized:
        raise errors.invalid_argument("Input is empty.")
    return codec.bytes_array(serialized)


def predict_inputs(servable: Servable, request, max_instances: int | None = None):
    """The signature and numpy inputs of a PredictRequest, checked as RunPredict checks them."""
    signature = servable.signature(request.model_spec.signature_name)
    sent, wanted = set(request.inputs), set(signature.inputs)
    if sent != wanted:
        raise errors.invalid_argument(
            f"input size does not match signature: {len(sent)}!={len(wanted)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
            f"Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
            f"Missing but required: {{{','.join(sorted(wanted - sent))}}}."
        )
    inputs = {}
    for index, (key, spec) in enumerate(sorted(signature.inputs.items())):
        proto = request.inputs[key]
        want = tf.dtypes.as_dtype(types_pb2.DataType.Value(spec.dtype))
        got = _dtype_or_none(proto.dtype)
        if got != want:
            raise errors.invalid_argument(
                f"Expects arg[{index}] to be {want.name} but "
                f"{got.name if got else 'invalid'} is provided"
            )
        tensor_guard.check_tensor(key, proto)  # before make_ndarray fills a huge shape
        try:
            inputs[key] = tf.make_ndarray(proto)
        except Exception as exc:
            raise errors.invalid_argument(f"Input {key}: {exc}") from None
        if inputs[key].ndim:
            check_batch(inputs[key].shape[0], max_instances)
    seen: set[str] = set()
    for alias in request.output_filter:
        if alias not in signature.outputs:
            raise errors.invalid_argument(
                f"output tensor alias not found in signature: {alias} Outputs expected to "
                f"be in the set {{{','.join(sorted(signature.outputs))}}}."
            )
        if alias in seen:
            raise errors.invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return signature, inputs


def _dtype_or_none(value: int):
    """The DataType of a TensorProto, None for 0 and for numbers TF does not know (a
    TypeError from as_dtype escaped as INTERNAL before)."""
    try:
        return tf.dtypes.as_dtype(value) if value else None
    except TypeError:
        return None


def check_batch(size: int, max_instances: int | None) -> None:
    if max_instances is not None and size > max_instances:
        raise errors.invalid_argument(
            f"Request has {size} examples; this server accepts at most {max_instances} "
            "per request (--max-instances). Send them in smaller batches."
        )


def _set_spec(target, servable: Servable, signature_name: str | None = None) -> None:
    target.name = servable.name
    target.version.value = servable.version
    if signature_name is not None:
        target.signature_name = signature_name


class _Service:
    def __init__(self, models: ModelRegistry, runner: Runner, metrics: Metrics, max_instances):
        self.models = models
        self.runner = runner
        self.metrics = metrics
        self.max_instances = max_instances

    async def _answer(self, api: str, model: str, context, work: Callable[[], Awaitable]):
        started = time.perf_counter()
        code = "OK"
        try:
            return await work()
        except Exception as exc:  # every failure is a status, never a dead server
            error = errors.from_exception(exc)
            code = error.code.name
            if error.code in (errors.Code.INTERNAL, errors.Code.UNKNOWN):
                log.error("gRPC %s failed", api, exc_info=exc)
            await context.abort(grpc.StatusCode[error.code.name], error.message)
        finally:
            if api in ("Predict", "Classify", "Regress"):
                self.metrics.observe_tf_serving(
                    api, "GRPC", model, code, time.perf_counter() - started
                )

    def _check_batch(self, size: int) -> None:
        check_batch(size, self.max_instances)


class PredictionService(_Service, prediction_service_pb2_grpc.PredictionServiceServicer):
    async def Predict(self, request, context):  # noqa: N802 (gRPC method name)
        return await self._answer(
            "Predict", request.model_spec.name, context, lambda: self._predict(request)
        )

    async def _predict(self, request) -> predict_pb2.PredictResponse:
        if not request.HasField("model_spec"):
            raise errors.invalid_argument("Missing ModelSpec")
        servable = _resolve(self.models, request.model_spec)
        signature, inputs = predict_inputs(servable, request, self.max_instances)
        outputs = await self.runner.run(servable, signature.name, inputs)
        response = predict_pb2.PredictResponse()
        _set_spec(response.model_spec, servable, signature.name)
        for key in request.output_filter or sorted(outputs):
            response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key]))
        return response

    async def Classify(self, request, context):  # noqa: N802
        return await self._answer(
            "Classify", request.model_spec.name, context, lambda: self._classify(request)
        )

    async def _classify(self, request) -> classification_pb2.ClassificationResponse:
        servable, signature, outputs = await self._run_on_examples(
            request, Servable.classify_signature, tf.saved_model.CLASSIFY_INPUTS
        )
        classes, scores = (
            outputs.get(tf.saved_model.CLASSIFY_OUTPUT_CLASSES),
            outputs.get(tf.saved_model.CLASSIFY_OUTPUT_SCORES),
        )
        response = classification_pb2.ClassificationResponse()
        _set_spec(response.model_spec, servable, signature.name)
        reference = classes if classes is not None else scores
        for row in range(reference.shape[0]):
            classification = response.result.classifications.add()
            for column in range(reference.shape[1]):
                entry = classification.classes.add()
                if classes is not None:
                    label = classes[row, column]
                    entry.label = label.decode() if isinstance(label, bytes) else str(label)
                if scores is not None:
                    entry.score = float(scores[row, column])
        return response

    async def Regress(self, request, context):  # noqa: N802
        return await self._answer(
            "Regress", request.model_spec.name, context, lambda: self._regress(request)
        )

    async def _regress(self, request) -> regression_pb2.RegressionResponse:
        servable, signature, outputs = await self._run_on_examples(
            request, Servable.regress_signature, tf.saved_model.REGRESS_INPUTS
        )
        values = outputs[tf.saved_model.REGRESS_OUTPUTS].reshape(-1)
        response = regression_pb2.RegressionResponse()
        _set_spec(response.model_spec, servable, signature.name)
        for value in values:
            response.result.regressions.add(value=float(value))
        return response

    async def _run_on_examples(
        self,
        request,
        checked_signature: Callable[[Servable, str], Signature],
        input_key: str,
    ) -> tuple[Servable, Signature, dict]:
        """Classify and Regress: find the model, check the signature can answer this API,
        run it on the request's serialized examples."""
        if not request.HasField("model_spec"):
            raise errors.invalid_argument("Missing ModelSpec")
        servable = _resolve(self.models, request.model_spec)
        signature = checked_signature(servable, request.model_spec.signature_name)
        serialized = examples(request.input)
        self._check_batch(len(serialized))
        outputs = await self.runner.run(servable, signature.name, {input_key: serialized})
        return servable, signature, outputs

    async def GetModelMetadata(self, request, context):  # noqa: N802
        return await self._answer(
            "GetModelMetadata", request.model_spec.name, context, lambda: self._metadata(request)
        )

    async def _metadata(self, request) -> get_model_metadata_pb2.GetModelMetadataResponse:
        if not request.HasField("model_spec"):
            raise errors.invalid_argument("Missing ModelSpec")
        if not request.metadata_field:
            raise errors.invalid_argument(
                "GetModelMetadataRequest must specify at least one metadata_field"
            )
        for field in request.metadata_field:
            if field != SIGNATURE_DEF_FIELD:
                raise errors.invalid_argument(f"Metadata field {field} is not supported")
        servable = _resolve(self.models, request.model_spec)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature in servable.meta_graph.signature_def.items():
            signature_map.signature_def[key].CopyFrom(signature)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        _set_spec(response.model_spec, servable)
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
        return response


class ModelService(_Service, model_service_pb2_grpc.ModelServiceServicer):
    async def GetModelStatus(self, request, context):  # noqa: N802
        return await self._answer(
            "GetModelStatus", request.model_spec.name, context, lambda: self._status(request)
        )

    async def _status(self, request) -> get_model_status_pb2.GetModelStatusResponse:
        if not request.HasField("model_spec"):
            raise errors.invalid_argument("Missing ModelSpec")
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in self.models.status(spec.name, version):
            entry = response.model_version_status.add()
            entry.version = status.version
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(status.state.value)
            entry.status.error_code = int(status.error_code)
            entry.status.error_message = status.error_message
        return response

    async def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        return await self._answer("ReloadConfig", "", context, lambda: self._reload(request))

    async def _reload(self, request) -> model_management_pb2.ReloadConfigResponse:
        # model_service_impl.cc: only a model_config_list; a failure is the RPC's status.
        sources = config.model_sources(request.config)
        confine.check_sources(sources, self.models.model_roots)  # a client names no other dir
        await asyncio.to_thread(self.models.reconfigure, sources)
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code = 0
        return response


def create_server(
    models: ModelRegistry, runner: Runner, metrics: Metrics, max_instances: int | None
) -> grpc.aio.Server:
    """A grpc.aio server with both services; the caller adds a port and starts it."""
    server = grpc.aio.server(options=OPTIONS, interceptors=[grpc_parse.ParseErrorsAsInternal()])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(models, runner, metrics, max_instances), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelService(models, runner, metrics, max_instances), server
    )
    return server
