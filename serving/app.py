"""The HTTP surface: TF Serving's URL grammar, routed to thin handlers, every answer JSON.

The two path patterns are TF Serving's own (http_rest_api_util.cc), matched the way it matches
them: a path that fits neither, or the wrong method for it (GET on `:predict`, POST on
`/metadata`), is a 400 "Malformed request", as TF Serving answers it. Handlers parse with
`codec`, look the model up in `models`, run it with `runner`; whatever they raise becomes
`{"error": ...}` with the HTTP code from `errors`, so no request can take the process down.
"""

from __future__ import annotations

import logging
import re
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import tensorflow as tf
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from serving import codec, errors, metrics, responses
from serving.models import ModelRegistry
from serving.runner import Runner
from serving.savedmodel import Servable, Signature

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
    """The handlers, one per API; each returns the JSON document of a successful answer."""

    def __init__(self, models: ModelRegistry, runner: Runner, limits: Limits):
        self.models = models
        self.runner = runner
        self.limits = limits

    async def status(self, call: ApiCall, body: bytes) -> dict:
        # GetModelStatus ignores a label (get_model_status_impl.cc only looks at a version):
        # /labels/<l> lists every version, as TF Serving answers it.
        return responses.model_status(self.models.status(call.name, call.version))

    async def metadata(self, call: ApiCall, body: bytes) -> dict:
        servable = self.models.resolve(call.name, call.version, call.label)
        return responses.model_metadata(
            call.name, servable.version, servable.meta_graph.signature_def
        )

    async def predict(self, call: ApiCall, body: bytes) -> dict:
        document = codec.parse_json(body)
        signature_name = codec.signature_name(document)
        servable = self.models.resolve(call.name, call.version, call.label)
        signature = servable.signature(signature_name)
        inputs = codec.parse_predict(document, signature.inputs, self.limits.max_instances)
        outputs = await self.runner.run(servable, signature.name, inputs.tensors)
        return codec.encode_predict(outputs, inputs.format)

    async def classify(self, call: ApiCall, body: bytes) -> dict:
        outputs, _ = await self._run_on_examples(
            call, body, Servable.classify_signature, tf.saved_model.CLASSIFY_INPUTS
        )
        return codec.encode_classify(
            outputs.get(tf.saved_model.CLASSIFY_OUTPUT_CLASSES),
            outputs.get(tf.saved_model.CLASSIFY_OUTPUT_SCORES),
        )

    async def regress(self, call: ApiCall, body: bytes) -> dict:
        outputs, count = await self._run_on_examples(
            call, body, Servable.regress_signature, tf.saved_model.REGRESS_INPUTS
        )
        return codec.encode_regress(outputs[tf.saved_model.REGRESS_OUTPUTS], count)

    async def _run_on_examples(
        self,
        call: ApiCall,
        body: bytes,
        checked_signature: Callable[[Servable, str], Signature],
        input_key: str,
    ) -> tuple[dict, int]:
        """Classify and Regress in TF Serving's order: parse the body (its message says
        "classify" for both APIs, json_tensor.cc), find the model (404), check the signature
        can answer this API (400), run it on the serialized examples."""
        document = codec.parse_json(body)
        signature_name = codec.signature_name(document)
        examples = codec.parse_classify(document, self.limits.max_instances)
        servable = self.models.resolve(call.name, call.version, call.label)
        signature = checked_signature(servable, signature_name)
        serialized = codec.bytes_array(examples)
        outputs = await self.runner.run(servable, signature.name, {input_key: serialized})
        return outputs, len(examples)


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
    models: ModelRegistry,
    runner: Runner,
    server_metrics: metrics.Metrics,
    limits: Limits,
    lifespan: Callable | None = None,
) -> Starlette:
    endpoint = Endpoint(Api(models, runner, limits), server_metrics)
    return Starlette(routes=[Route("/{path:path}", endpoint)], lifespan=lifespan)


def _as_serving_error(exc: Exception) -> errors.ServingError:
    if isinstance(exc, ClientDisconnect):
        return errors.ServingError(errors.Code.CANCELLED, "Client disconnected")
    return errors.from_exception(exc)
