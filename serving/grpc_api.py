"""TF Serving's gRPC API (port 8500) on grpcio, with the official tensorflow-serving-api stubs.

PredictionService (Predict, Classify, Regress, MultiInference, GetModelMetadata) and
ModelService (GetModelStatus, HandleReloadConfigRequest) are thin: each hands its request proto
to `prediction.Prediction`, the implementation the REST API uses too, and returns its response
proto. The gRPC server runs on the REST server's event loop (grpc.aio), so a gRPC request and a
REST request can be merged into one model call. Failures are gRPC statuses with the canonical
code, as TF Serving's ToGRPCStatus gives them. Message size limits are INT32_MAX, as server.cc
sets them, so image batches are not cut at gRPC's default 4 MiB.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving import errors, grpc_parse
from serving.metrics import Metrics
from serving.prediction import Prediction

log = logging.getLogger(__name__)

INT32_MAX = 2**31 - 1
OPTIONS = [
    ("grpc.max_receive_message_length", INT32_MAX),
    ("grpc.max_send_message_length", INT32_MAX),
]
# The APIs TF Serving's request-count and latency metrics cover (prediction_service_impl.cc).
_INFERENCE_APIS = ("Predict", "Classify", "Regress", "MultiInference")


class _Service:
    def __init__(self, implementation: Prediction, metrics: Metrics):
        self.implementation = implementation
        self.metrics = metrics

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
            if api in _INFERENCE_APIS:
                self.metrics.observe_tf_serving(
                    api, "GRPC", model, code, time.perf_counter() - started
                )


async def _now(value):
    return value


class PredictionService(_Service, prediction_service_pb2_grpc.PredictionServiceServicer):
    async def Predict(self, request, context):  # noqa: N802 (gRPC method name)
        work = self.implementation.predict
        model = request.model_spec.name
        return await self._answer("Predict", model, context, lambda: work(request))

    async def Classify(self, request, context):  # noqa: N802
        work = self.implementation.classify
        model = request.model_spec.name
        return await self._answer("Classify", model, context, lambda: work(request))

    async def Regress(self, request, context):  # noqa: N802
        work = self.implementation.regress
        model = request.model_spec.name
        return await self._answer("Regress", model, context, lambda: work(request))

    async def MultiInference(self, request, context):  # noqa: N802
        model = request.tasks[0].model_spec.name if request.tasks else ""
        work = self.implementation.multi_inference
        return await self._answer("MultiInference", model, context, lambda: work(request))

    async def GetModelMetadata(self, request, context):  # noqa: N802
        work = self.implementation.metadata
        return await self._answer(
            "GetModelMetadata", request.model_spec.name, context, lambda: _now(work(request))
        )


class ModelService(_Service, model_service_pb2_grpc.ModelServiceServicer):
    async def GetModelStatus(self, request, context):  # noqa: N802
        work = self.implementation.status
        return await self._answer(
            "GetModelStatus", request.model_spec.name, context, lambda: _now(work(request))
        )

    async def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        work = self.implementation.reload_config
        return await self._answer("ReloadConfig", "", context, lambda: work(request))


def create_server(implementation: Prediction, metrics: Metrics) -> grpc.aio.Server:
    """A grpc.aio server with both services; the caller adds a port and starts it."""
    server = grpc.aio.server(options=OPTIONS, interceptors=[grpc_parse.ParseErrorsAsInternal()])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(implementation, metrics), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelService(implementation, metrics), server
    )
    return server
