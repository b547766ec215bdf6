"""The one place a server turns every failure of a call into a gRPC status, for every kind of method.

``GuardInterceptor`` wraps each handler (unary and streaming alike) so that:

* request bytes that do not decode as the method's message are INVALID_ARGUMENT with a ``BadRequest``
  violation, not gRPC's UNKNOWN "Unexpected <class 'DecodeError'>";
* an exception raised by the servicer (or while it streams) becomes the status ``status_for(exc)``
  chooses; the default answers INTERNAL with a generic message (and logs the traceback), never UNKNOWN;
* every status is bounded before it is sent (``bounded``): a short message, at most 20 violations with
  short fields and descriptions, so a long input echoed into an error can never push the trailers past
  the metadata limit (which turned the answer into RESOURCE_EXHAUSTED).

Services with domain errors pass their own ``status_for`` (the planner: ``planner_service.server.interceptor``).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, AsyncIterator, Callable

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

log = logging.getLogger(__name__)

StatusFor = Callable[[BaseException], status_pb2.Status]
Trailing = Callable[[BaseException, status_pb2.Status], tuple[tuple[str, str], ...]]

MAX_MESSAGE_CHARS = 512
MAX_VIOLATIONS = 20
MAX_FIELD_CHARS = 128
MAX_DESCRIPTION_CHARS = 256
REQUEST_FIELD = "<request>"


class UndecodableRequest(ValueError):
    """The request bytes are not the method's message (corrupt, truncated, or another type)."""


class _Undecodable:
    """What the guarded deserializer returns instead of raising (gRPC would answer UNKNOWN)."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _clip(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def bounded(status: status_pb2.Status) -> status_pb2.Status:
    """``status`` with its message and ``BadRequest`` details cut to the limits above."""
    out = status_pb2.Status(code=status.code, message=_clip(status.message, MAX_MESSAGE_CHARS))
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            kept = error_details_pb2.BadRequest(field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=_clip(v.field, MAX_FIELD_CHARS), description=_clip(v.description, MAX_DESCRIPTION_CHARS))
                for v in bad.field_violations[:MAX_VIOLATIONS]
            ])
            out.details.append(pack(kept))
        else:
            out.details.append(detail)
    return out


def bad_request(message: str, violations: list[tuple[str, str]], reason: str = "INVALID_REQUEST",
                domain: str = "vllm-planner") -> status_pb2.Status:
    """An INVALID_ARGUMENT status with ErrorInfo and BadRequest details."""
    details = [pack(error_details_pb2.ErrorInfo(reason=reason, domain=domain))]
    if violations:
        details.append(pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations])))
    return status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=message, details=details)


def internal_status(exc: BaseException) -> status_pb2.Status:
    """The default mapping: a bug of the server, answered without leaking anything about it."""
    return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error (see the server log)")


def _safe_deserializer(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def guarded(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # DecodeError, or anything a custom deserializer raises
            name = getattr(getattr(deserialize, "__self__", None), "DESCRIPTOR", None)
            what = f"a valid {name.full_name} message" if name is not None else "a valid request message"
            return _Undecodable(f"the request bytes are not {what} ({type(exc).__name__})")

    return guarded


class GuardInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every handler; see the module doc. ``trailing(exc, status)`` adds trailing metadata."""

    def __init__(self, status_for: StatusFor = internal_status, trailing: Trailing | None = None) -> None:
        self._status_for = status_for
        self._trailing = trailing

    def status(self, exc: BaseException) -> status_pb2.Status:
        if isinstance(exc, UndecodableRequest):
            return bad_request(f"invalid request: {exc}", [(REQUEST_FIELD, str(exc))], reason="UNDECODABLE_REQUEST")
        try:
            return bounded(self._status_for(exc))
        except Exception:  # the mapping itself failed: still an answer, never UNKNOWN
            log.exception("mapping %s to a status failed", type(exc).__name__)
            return internal_status(exc)

    async def abort(self, context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
        status = self.status(exc)
        if status.code in (code_pb2.INTERNAL, code_pb2.UNKNOWN):
            log.error("%s failed", method, exc_info=exc)
        else:
            log.info("%s: %s %s", method, code_pb2.Code.Name(status.code), status.message)
        converted = rpc_status.to_status(status)
        extra = self._trailing(exc, status) if self._trailing else ()
        await context.abort(converted.code, converted.details, tuple(converted.trailing_metadata) + tuple(extra))

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        kwargs = dict(request_deserializer=_safe_deserializer(handler.request_deserializer),
                      response_serializer=handler.response_serializer)
        guard = self

        async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, _Undecodable):
                await guard.abort(context, UndecodableRequest(request.message), method)
            return request

        async def requests(iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for request in iterator:
                yield await checked(request, context)

        def unary_response(inner: Callable[..., Any], streaming_request: bool) -> Callable[..., Any]:
            async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    request = requests(request, context) if streaming_request else await checked(request, context)
                    return await inner(request, context)
                except grpc.aio.AbortError:
                    raise  # the handler (or the check above) already chose a status
                except Exception as exc:  # the process boundary: everything else becomes a status
                    await guard.abort(context, exc, method)
            return call

        def streaming_response(inner: Callable[..., Any], streaming_request: bool) -> Callable[..., Any]:
            async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                try:
                    request = requests(request, context) if streaming_request else await checked(request, context)
                    result = inner(request, context)
                    if inspect.isasyncgen(result):
                        async for item in result:
                            yield item
                    else:  # a coroutine that writes with context.write()
                        await result
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await guard.abort(context, exc, method)
            return call

        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(unary_response(handler.unary_unary, False), **kwargs)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(unary_response(handler.stream_unary, True), **kwargs)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(streaming_response(handler.unary_stream, False), **kwargs)
        return grpc.stream_stream_rpc_method_handler(streaming_response(handler.stream_stream, True), **kwargs)
