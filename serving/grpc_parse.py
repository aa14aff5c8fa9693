"""gRPC requests whose bytes do not parse answer INTERNAL, as TF Serving's C++ server answers.

grpcio's Python server turns an exception raised while deserializing a request into UNKNOWN
("Unexpected <class 'DecodeError'>"); gRPC C++ (GenericDeserialize in proto_utils.h), which TF
Serving runs on, answers INTERNAL. This interceptor makes the deserializer return a marker
instead of raising, and the handler abort with INTERNAL for it, so clients see TF Serving's code.
"""

from __future__ import annotations

import grpc


class _Unparsable:
    def __init__(self, error: Exception):
        self.error = error


class ParseErrorsAsInternal(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # unknown method (UNIMPLEMENTED) or a streaming one
        parse, behaviour = handler.request_deserializer, handler.unary_unary

        def deserialize(data: bytes):
            try:
                return parse(data)
            except Exception as exc:  # noqa: BLE001 - any parse failure is the client's
                return _Unparsable(exc)

        async def unary_unary(request, context):
            if isinstance(request, _Unparsable):
                await context.abort(
                    grpc.StatusCode.INTERNAL, f"Failed to parse request: {request.error}"
                )
            return await behaviour(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary,
            request_deserializer=deserialize,
            response_serializer=handler.response_serializer,
        )
