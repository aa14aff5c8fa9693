"""The HTTP surface: TF Serving's URL grammar, routed to thin JSON <-> proto handlers.

The two path patterns are TF Serving's own (http_rest_api_util.cc), matched the way it matches
them: a path that fits neither, or the wrong method for it (GET on `:predict`, POST on
`/metadata`), is a 400 "Malformed request", as TF Serving answers it. As in TF Serving's
http_rest_api_handler.cc, a handler only turns the JSON into the API's request proto (`codec`),
calls the implementation gRPC serves too (`prediction`) and turns its response proto back into
JSON; whatever they raise becomes `{"error": ...}` with the HTTP code from `errors`, so no
request can take the process down.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
    regression_pb2,
)

from serving import codec, errors, metrics, prediction, tensors
from serving.prediction import Prediction

log = logging.getLogger(__name__)

_VERSION_OR_LABEL = r"(?:(?:/versions/(?P<version>\d+))|(?:/labels/(?P<label>[^/:]+)))?"
# POST /v1/models/<name>[/versions/<v> | /labels/<l>]:(classify|regress|predict)
POST_PATH = re.compile(
    r"/v1/models/(?P<name>[^/:]+)" + _VERSION_OR_LABEL + r":(?P<verb>classify|regress|predict)",
    re.IGNORECASE | re.ASCII,
)
# GET /v1/models/<name>[/versions/<v> | /labels/<l>][/metadata]
GET_PATH = re.compile(
    r"/v1/models(?:/(?P<name>[^/:]+))?" + _VERSION_OR_LABEL + r"(?:/(?P<verb>metadata))?",
    re.IGNORECASE | re.ASCII,
)
API_PREFIX = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
JSON = "application/json"
_INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Limits:
    """What one request may hold. TF Serving has no body or instance limit of its own (only
    gRPC's INT32_MAX message size and a 100 MiB cap on a gzip body's decompressed size,
    ZLib::kMaxUncompressedBytes); these defaults sit well above ordinary image batches and
    keep one request from exhausting the server's memory."""

    max_body_bytes: int = 512 * 1024 * 1024
    max_instances: int = 4096
    max_decompressed_bytes: int = 100 * 1024 * 1024
    # --rest_api_timeout_in_ms (TF Serving's HttpRestApiHandler puts it in the RunOptions of
    # Predict, Classify and Regress); None: no deadline.
    timeout_seconds: float | None = 30.0


@dataclass(frozen=True)
class ApiCall:
    api: str  # predict | classify | regress | status | metadata
    name: str
    version: int | None
    label: str | None


def parse_path(method: str, path: str) -> ApiCall:
    """The API call a request names, or TF Serving's error for a path it does not serve."""
    if not API_PREFIX.fullmatch(path):
        raise errors.not_found(f"No API at {path}; TF Serving's REST API is under /v1/")
    match = None
    if method == "POST":
        match = POST_PATH.fullmatch(path)
    elif method == "GET":
        match = GET_PATH.fullmatch(path)
    if match is None:
        raise errors.invalid_argument(f"Malformed request: {method} {path}")
    verb = match["verb"]
    if method == "GET":
        # Like TF Serving, only the exact lower-case subresource is metadata.
        verb = "metadata" if verb == "metadata" else "status"
    elif verb not in ("classify", "regress", "predict"):
        raise errors.invalid_argument(f"Malformed request: {method} {path}")
    version = None
    if match["version"] is not None:
        version = int(match["version"])
        if version > _INT64_MAX:
            raise errors.invalid_argument(
                f"Failed to convert version: {match['version']} to numeric."
            )
    if not match["name"]:
        raise errors.invalid_argument("Missing model name in request.")
    return ApiCall(verb, match["name"], version, match["label"])


async def read_body(request: Request, limits: Limits) -> bytes:
    """The request body, decompressed if gzip; refused past the limits.

    TF Serving decompresses a body whose Content-Encoding contains "gzip" (a case-sensitive
    substring test, evhttp_request.cc) up to 100 MiB; a body it cannot decompress reaches
    the JSON parser empty, hence "The document is empty". Refusals are TF Serving-style
    `{"error": ...}` answers with a canonical code (400), never a bare HTTP 413.
    """
    limit = limits.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(f"Request body is {declared} bytes", limit, "--max-body-bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(f"Request body is more than {limit} bytes", limit, "--max-body-bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if "gzip" in request.headers.get("content-encoding", ""):
        body = gunzip(body, limits.max_decompressed_bytes)
    return body


def gunzip(body: bytes, limit: int) -> bytes:
    """A gzip body decompressed, at most `limit` bytes of it."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = decompressor.decompress(body, limit)
        if decompressor.unconsumed_tail:
            raise _too_large(
                f"The gzip body decompresses to more than {limit} bytes", limit,
                "--max-decompressed-bytes",
            )  # fmt: skip
        if not decompressor.eof:
            raise zlib.error("truncated gzip stream")
    except zlib.error as exc:
        raise errors.invalid_argument(
            f"JSON Parse error: The document is empty (the gzip body could not be "
            f"decompressed: {exc})"
        ) from None
    return data


def _too_large(what: str, limit: int, option: str) -> errors.ServingError:
    return errors.invalid_argument(
        f"{what}; this server accepts at most {limit} bytes ({option}). "
        "Send the images in smaller batches."
    )


class Api:
    """The handlers, one per API: each turns the JSON request into TF Serving's request proto,
    asks the shared implementation (`prediction.Prediction`, the one gRPC serves too) and
    turns its response proto into the JSON document of a successful answer, as
    http_rest_api_handler.cc does."""

    def __init__(self, implementation: Prediction, limits: Limits):
        self.implementation = implementation
        self.limits = limits

    @staticmethod
    def _spec(call: ApiCall, target, signature_name: str | None = None) -> None:
        target.name = call.name
        if call.version is not None:
            target.version.value = call.version
        elif call.label is not None:
            target.version_label = call.label
        if signature_name is not None:
            target.signature_name = signature_name

    async def status(self, call: ApiCall, body: bytes) -> dict:
        # GetModelStatus ignores a label (get_model_status_impl.cc only looks at a version):
        # /labels/<l> lists every version, as TF Serving answers it.
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = call.name
        if call.version is not None:
            request.model_spec.version.value = call.version
        return codec.status_json(self.implementation.status(request))

    async def metadata(self, call: ApiCall, body: bytes) -> dict:
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            metadata_field=[prediction.SIGNATURE_DEF_FIELD]
        )
        self._spec(call, request.model_spec)
        return codec.metadata_json(self.implementation.metadata(request))

    async def predict(self, call: ApiCall, body: bytes) -> dict:
        # FillPredictRequestFromJson needs the signature's input types first (GetInfoMap).
        document = codec.parse_json(body)
        request = predict_pb2.PredictRequest()
        self._spec(call, request.model_spec, codec.signature_name(document))
        servable = self.implementation.resolve(request.model_spec)
        signature = servable.signature(request.model_spec.signature_name)
        inputs = codec.parse_predict(document, signature.inputs)
        for key, array in inputs.tensors.items():
            request.inputs[key].CopyFrom(tensors.for_request(array))
        response = await self._deadline(self.implementation.predict(request))
        return codec.predict_json(response.outputs, inputs.format)

    async def classify(self, call: ApiCall, body: bytes) -> dict:
        request = classification_pb2.ClassificationRequest()
        self._fill_examples(call, body, request)
        response = await self._deadline(self.implementation.classify(request))
        return codec.classify_json(response.result)

    async def regress(self, call: ApiCall, body: bytes) -> dict:
        request = regression_pb2.RegressionRequest()
        self._fill_examples(call, body, request)
        response = await self._deadline(self.implementation.regress(request))
        return codec.regress_json(response.result)

    async def _deadline(self, work):
        """The call, or DEADLINE_EXCEEDED past --rest_api_timeout_in_ms. A model call already
        running in a thread finishes there; a request still queued for a batch leaves it."""
        if self.limits.timeout_seconds is None:
            return await work
        try:
            return await asyncio.wait_for(work, self.limits.timeout_seconds)
        except asyncio.TimeoutError:
            raise errors.ServingError(
                errors.Code.DEADLINE_EXCEEDED,
                f"Deadline Exceeded: no answer within {self.limits.timeout_seconds * 1000:.0f} "
                "ms (--rest_api_timeout_in_ms)",
            ) from None

    def _fill_examples(self, call: ApiCall, body: bytes, request) -> None:
        """Classify and Regress requests in TF Serving's order: parse the body (its message
        says "classify" for both APIs, json_tensor.cc); the model (404) and the signature's
        fitness for the API (400) are the implementation's checks."""
        document = codec.parse_json(body)
        self._spec(call, request.model_spec, codec.signature_name(document))
        request.input.CopyFrom(codec.parse_classify(document))


class Endpoint:
    """The one ASGI endpoint: routes by TF Serving's path patterns, answers JSON, records metrics.

    An ASGI class rather than a function so Starlette hands it every method: a wrong method is
    TF Serving's 400 "Malformed request", not Starlette's plain-text 405.
    """

    def __init__(self, api: Api, server_metrics: metrics.Metrics):
        self.metrics = server_metrics
        self.limits = api.limits
        self.handlers: dict[str, Callable[[ApiCall, bytes], Awaitable[dict]]] = {
            "status": api.status,
            "metadata": api.metadata,
            "predict": api.predict,
            "classify": api.classify,
            "regress": api.regress,
        }

    async def __call__(self, scope, receive, send) -> None:
        response = await self.respond(Request(scope, receive))
        await response(scope, receive, send)

    async def respond(self, request: Request) -> Response:
        started = time.perf_counter()
        api_name, model, http_status, code = "other", None, 200, None
        try:
            if self.metrics.path and request.url.path == self.metrics.path:
                api_name = "metrics"
                if request.method != "GET":
                    raise errors.invalid_argument(
                        f"Malformed request: {request.method} {self.metrics.path}"
                    )
                return Response(self.metrics.exposition(), media_type=metrics.CONTENT_TYPE)
            call = parse_path(request.method, request.url.path)
            api_name, model = call.api, call.name
            body = b""
            if request.method == "POST":
                body = await read_body(request, self.limits)
            document = await self.handlers[call.api](call, body)
            return Response(codec.dumps(document), media_type=JSON)
        except Exception as exc:  # every failure is a JSON answer, never a dead server
            error = _as_serving_error(exc)
            http_status, code = error.http_status, error.code.name
            if error.code in (errors.Code.INTERNAL, errors.Code.UNKNOWN):
                log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
            return Response(codec.error_body(error.message), http_status, media_type=JSON)
        finally:
            self.metrics.observe(api_name, model, http_status, code, time.perf_counter() - started)


def create_app(
    implementation: Prediction,
    server_metrics: metrics.Metrics,
    limits: Limits,
    lifespan: Callable | None = None,
) -> Starlette:
    endpoint = Endpoint(Api(implementation, limits), server_metrics)
    return Starlette(routes=[Route("/{path:path}", endpoint)], lifespan=lifespan)


def _as_serving_error(exc: Exception) -> errors.ServingError:
    if isinstance(exc, ClientDisconnect):
        return errors.ServingError(errors.Code.CANCELLED, "Client disconnected")
    return errors.from_exception(exc)
