"""Bearer-token authentication: a server interceptor, and the client-side ways to send the token.

Server: every RPC except the health service must carry ``authorization: Bearer <token>``; the
comparison is constant-time (``hmac.compare_digest``). A rejected call gets a handler of the *same
streaming shape* as the real one that aborts ``UNAUTHENTICATED`` before any request is read or any
response sent: a unary-unary stand-in for a streaming method would make gRPC mis-frame the call.
Reflection is *not* exempt: it describes the whole API, so in a cluster it needs the token too
(``grpcurl -H 'authorization: Bearer …'``).

Client: over TLS the token travels as call credentials (gRPC refuses to send those in plaintext);
over plaintext ``TokenMetadataInterceptor`` adds the header (for loopback, or when a mesh does TLS).
"""

from __future__ import annotations

import hmac
from typing import Any, Awaitable, Callable

import grpc

# Health stays open so kubelet gRPC probes and load balancers need no token.
UNAUTHENTICATED_METHOD_PREFIXES: tuple[str, ...] = ("/grpc.health.v1.Health/",)

AUTHORIZATION_METADATA_KEY = "authorization"
_REJECT_MESSAGE = "missing or invalid bearer token"


def bearer_token_from(metadata: Any) -> bytes:
    """The raw ``authorization`` value (bytes; empty when absent)."""
    for key, value in metadata or ():
        if key == AUTHORIZATION_METADATA_KEY:
            return value.encode() if isinstance(value, str) else bytes(value)
    return b""


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls whose ``authorization`` metadata is not ``Bearer <token>``."""

    def __init__(self, token: str, exempt_prefixes: tuple[str, ...] = UNAUTHENTICATED_METHOD_PREFIXES) -> None:
        if not token or token != token.strip():
            raise ValueError("auth token must be non-empty and have no surrounding whitespace")
        self._expected = f"Bearer {token}".encode()
        self._exempt = exempt_prefixes

    def is_authorized(self, metadata: Any) -> bool:
        return hmac.compare_digest(bearer_token_from(metadata), self._expected)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method or ""
        if method.startswith(self._exempt) or self.is_authorized(handler_call_details.invocation_metadata):
            return await continuation(handler_call_details)
        # Unknown methods are rejected too, so an unauthenticated caller cannot probe which exist.
        return _rejecting_handler_like(await continuation(handler_call_details))


def _rejecting_handler_like(handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler:
    async def unary_response(request_or_iterator, context: grpc.aio.ServicerContext):  # noqa: ANN001
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _REJECT_MESSAGE)

    async def streaming_response(request_or_iterator, context: grpc.aio.ServicerContext):  # noqa: ANN001
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _REJECT_MESSAGE)
        yield  # pragma: no cover  (unreachable; makes this an async generator like the real handler)

    if handler is None:
        return grpc.unary_unary_rpc_method_handler(unary_response)
    kwargs = dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming_response, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary_response, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming_response, **kwargs)
    return grpc.unary_unary_rpc_method_handler(unary_response, **kwargs)


def token_call_credentials(token: str) -> grpc.CallCredentials:
    """Call credentials sending ``authorization: Bearer <token>`` (secure channels only)."""
    return grpc.access_token_call_credentials(token)


class BearerTokenCallCredentials(grpc.AuthMetadataPlugin):
    """Kept for callers that build their own ``metadata_call_credentials``; prefer ``token_call_credentials``."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback) -> None:
        callback(((AUTHORIZATION_METADATA_KEY, f"Bearer {self._token}"),), None)


def _with_token(metadata: Any, token: str) -> tuple[tuple[str, Any], ...]:
    items = tuple(metadata or ())
    if any(key == AUTHORIZATION_METADATA_KEY for key, _ in items):
        return items  # the caller set one explicitly (e.g. ChannelOptions.auth_metadata()); keep it
    return (*items, (AUTHORIZATION_METADATA_KEY, f"Bearer {token}"))


class _SyncTokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, token: str) -> None:
        self._token = token

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _ClientCallDetails(
            details.method, details.timeout, _with_token(details.metadata, self._token), details.credentials,
            getattr(details, "wait_for_ready", None), getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):  # noqa: ANN001
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):  # noqa: ANN001
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # noqa: ANN001
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # noqa: ANN001
        return continuation(self._details(client_call_details), request_iterator)


class _ClientCallDetails(grpc.ClientCallDetails):
    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression):  # noqa: ANN001
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


def sync_token_interceptor(token: str) -> grpc.UnaryUnaryClientInterceptor:
    """For ``grpc.intercept_channel`` on a plaintext sync channel."""
    return _SyncTokenInterceptor(token)


def aio_token_interceptors(token: str) -> list[grpc.aio.ClientInterceptor]:
    """For ``grpc.aio.insecure_channel(interceptors=...)``: one per call shape (aio needs each)."""

    def details_with_token(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, _with_token(details.metadata, token), details.credentials,
            details.wait_for_ready,
        )

    class UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
        async def intercept_unary_unary(self, continuation, client_call_details, request):  # noqa: ANN001
            return await continuation(details_with_token(client_call_details), request)

    class UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
        async def intercept_unary_stream(self, continuation, client_call_details, request):  # noqa: ANN001
            return await continuation(details_with_token(client_call_details), request)

    class StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
        async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # noqa: ANN001
            return await continuation(details_with_token(client_call_details), request_iterator)

    class StreamStream(grpc.aio.StreamStreamClientInterceptor):
        async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # noqa: ANN001
            return await continuation(details_with_token(client_call_details), request_iterator)

    return [UnaryUnary(), UnaryStream(), StreamUnary(), StreamStream()]
