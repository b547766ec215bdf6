"""Bearer-token authentication for servers (interceptor) and clients (call credentials)."""

from __future__ import annotations

import hmac
from typing import Awaitable, Callable

import grpc

# Health checks stay open so load balancers and kubelet probes need no token.
UNAUTHENTICATED_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)


def _abort_unauthenticated(message: str) -> grpc.RpcMethodHandler:
    async def abort(request_or_iterator, context: grpc.aio.ServicerContext):  # noqa: ANN001
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.unary_unary_rpc_method_handler(abort)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls whose ``authorization`` metadata is not ``Bearer <token>`` (constant-time compare)."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("empty auth token")
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method or ""
        if method.startswith(UNAUTHENTICATED_METHOD_PREFIXES):
            return await continuation(handler_call_details)
        presented = b""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                presented = value.encode() if isinstance(value, str) else value
                break
        if not hmac.compare_digest(presented, self._expected):
            handler = await continuation(handler_call_details)
            return _reject_like(handler)
        return await continuation(handler_call_details)


def _reject_like(handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler:
    """A handler of the same streaming shape as the real one that aborts with UNAUTHENTICATED."""
    message = "missing or invalid bearer token"

    async def unary(request, context):  # noqa: ANN001
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def streaming(request, context):  # noqa: ANN001
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover  (makes this an async generator)

    if handler is None:
        return grpc.unary_unary_rpc_method_handler(unary)
    kwargs = dict(
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming, **kwargs)
    return grpc.unary_unary_rpc_method_handler(unary, **kwargs)


class BearerTokenCallCredentials(grpc.AuthMetadataPlugin):
    """Client side: adds ``authorization: Bearer <token>`` to every call."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback) -> None:
        callback((("authorization", f"Bearer {self._token}"),), None)
