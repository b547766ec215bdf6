"""The server interceptor ``start_server`` installs first: request id, Prometheus RPC metrics, access log.

It sits outside the auth interceptor, so rejected calls are counted (``grpc_code="UNAUTHENTICATED"``)
and logged too. It wraps the handler's behaviour rather than the continuation because in ``grpc.aio``
the continuation only *returns* the handler; the RPC runs later, in its own task, which is also why
the request id is set on the context variable inside the wrapper (the task's own context).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
import uuid
from functools import partial
from typing import Any, Awaitable, Callable

import grpc

from vllm_planner.transport import metrics
from vllm_planner.transport.logs import REQUEST_ID

log = logging.getLogger("vllm_planner.rpc")

REQUEST_ID_METADATA_KEY = "x-request-id"
# Ids a caller sends are logged verbatim, so only harmless ones are kept (no newlines, bounded).
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
# Probes hit health every few seconds; their access lines go to DEBUG so INFO stays readable.
_QUIET_PREFIXES = ("/grpc.health.v1.Health/",)


def request_id_from(metadata: Any) -> str:
    """The caller's ``x-request-id`` when it is safe to log, otherwise a new random one."""
    for key, value in metadata or ():
        if key == REQUEST_ID_METADATA_KEY:
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            if _SAFE_REQUEST_ID.match(text):
                return text
            break
    return uuid.uuid4().hex


def _status_of(context: grpc.aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    # GeneratorExit: the client closed a stream it had read enough of (``fleet watch --count 1``).
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):  # older grpcio hands back the raw integer
        return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    if error is not None and not isinstance(error, grpc.aio.AbortError):
        return grpc.StatusCode.UNKNOWN  # an unhandled exception: gRPC answers UNKNOWN
    return grpc.StatusCode.OK


class _Call:
    """Bookkeeping for one RPC: start time, labels, and the single place results are recorded."""

    def __init__(self, method: str, rpc_type: str, request_id: str) -> None:
        self.method = method
        self.service, self.name = metrics.split_method(method)
        self.rpc_type = rpc_type
        self.request_id = request_id
        self.started = time.perf_counter()
        self.peer = "?"

    def begin(self, context: grpc.aio.ServicerContext) -> None:
        # Read the peer while the call is live: context.peer() on a call the client already
        # cancelled can crash the process (seen in the fleet's streaming tests).
        self.peer = _peer(context)
        REQUEST_ID.set(self.request_id)  # no reset: the RPC's task (and its context) ends with the call
        metrics.RPC_STARTED_TOTAL.labels(self.service, self.name, self.rpc_type).inc()

    def finish(self, context: grpc.aio.ServicerContext, error: BaseException | None) -> None:
        elapsed_seconds = time.perf_counter() - self.started
        code = _status_of(context, error).name
        labels = (self.service, self.name, self.rpc_type, code)
        metrics.RPC_HANDLED_TOTAL.labels(*labels).inc()
        metrics.RPC_HANDLING_SECONDS.labels(*labels).observe(elapsed_seconds)
        level = logging.DEBUG if self.method.startswith(_QUIET_PREFIXES) else logging.INFO
        log.log(
            level,
            "%s %s %.1f ms",
            self.method,
            code,
            elapsed_seconds * 1000,
            extra={"grpc_method": self.method, "grpc_code": code, "duration_ms": round(elapsed_seconds * 1000, 3),
                   "peer": self.peer},
            exc_info=error if error is not None and code in ("UNKNOWN", "INTERNAL") else None,
        )


def _peer(context: grpc.aio.ServicerContext) -> str:
    try:
        return context.peer()
    except Exception:  # peer is informative only; a closed call must not break the log line
        return "?"


def _unary_response(behavior: Callable, call_factory: Callable[[], _Call]) -> Callable[..., Awaitable[Any]]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
        call = call_factory()
        call.begin(context)
        error: BaseException | None = None
        try:
            result = behavior(request, context)
            return await result if inspect.isawaitable(result) else result
        except BaseException as exc:
            error = exc
            raise
        finally:
            call.finish(context, error)

    return wrapped


def _streaming_response(behavior: Callable, call_factory: Callable[[], _Call]) -> Callable[..., Any]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
        call = call_factory()
        call.begin(context)
        error: BaseException | None = None
        try:
            result = behavior(request, context)
            if hasattr(result, "__aiter__"):
                async for item in result:
                    yield item
            elif inspect.isawaitable(result):  # a handler that writes with context.write()
                await result
            elif result is not None:
                for item in result:
                    yield item
        except BaseException as exc:
            error = exc
            raise
        finally:
            call.finish(context, error)

    return wrapped


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):
    """Per RPC: a request id in the logging context, Prometheus counters/histogram, one access line."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: gRPC answers UNIMPLEMENTED itself
            return handler
        method = handler_call_details.method or ""
        request_id = request_id_from(handler_call_details.invocation_metadata)
        kwargs = dict(
            request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )
        if handler.request_streaming and handler.response_streaming:
            call = partial(_Call, method, "bidi_stream", request_id)
            return grpc.stream_stream_rpc_method_handler(_streaming_response(handler.stream_stream, call), **kwargs)
        if handler.request_streaming:
            call = partial(_Call, method, "client_stream", request_id)
            return grpc.stream_unary_rpc_method_handler(_unary_response(handler.stream_unary, call), **kwargs)
        if handler.response_streaming:
            call = partial(_Call, method, "server_stream", request_id)
            return grpc.unary_stream_rpc_method_handler(_streaming_response(handler.unary_stream, call), **kwargs)
        call = partial(_Call, method, "unary", request_id)
        return grpc.unary_unary_rpc_method_handler(_unary_response(handler.unary_unary, call), **kwargs)
