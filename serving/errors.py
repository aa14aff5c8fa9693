"""Error statuses and the one map from status to HTTP code.

TF Serving reports every failure as a canonical status (the gRPC/absl codes) and its REST
front end turns the status into an HTTP code with a fixed table
(tensorflow_serving/model_servers/http_server.cc). Everything here raises `ServingError`
with one of those codes, so the table below is the only place an HTTP code is chosen.
"""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """Canonical status codes; numbers and names as in tensorflow.error.Code / grpc."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# TF Serving's ToHTTPStatusCode, entry for entry.
HTTP_STATUS: dict[Code, int] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


class ServingError(Exception):
    """A failure with a canonical status; answered as {"error": message}."""

    def __init__(self, code: Code, message: str):
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = HTTP_STATUS[code]


def invalid_argument(message: str) -> ServingError:
    return ServingError(Code.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(Code.NOT_FOUND, message)


def from_exception(exc: BaseException) -> ServingError:
    """Any exception as a ServingError: TensorFlow's errors keep their own code.

    tf.errors.OpError carries the canonical code in `error_code`, so no TensorFlow import is
    needed to map it (e.g. a corrupt JPEG is INVALID_ARGUMENT, answered 400 as TF Serving does).
    """
    if isinstance(exc, ServingError):
        return exc
    code = getattr(exc, "error_code", None)
    message = _without_eager_preamble(getattr(exc, "message", None) or str(exc))
    message = message or type(exc).__name__
    if isinstance(code, int) and code in Code._value2member_map_ and code != Code.OK:
        return ServingError(Code(code), message)
    return ServingError(Code.INTERNAL, f"{type(exc).__name__}: {message}")


def _without_eager_preamble(message: str) -> str:
    """TensorFlow's kernel message without the Python-side preamble eager execution adds
    ("Graph execution error: Detected at node ... <stack traces>"), which TF Serving's
    messages do not have."""
    lines = message.splitlines()
    if not lines or lines[0].strip() != "Graph execution error:":
        return message
    rest = lines[1:]
    while rest and (
        not rest[0].strip()
        or rest[0].startswith((" ", "Detected at node"))
        or rest[0].strip() == "<stack traces unavailable>"
    ):
        rest = rest[1:]
    return "\n".join(rest) or message
