"""The one place where exceptions become gRPC statuses, for every unary method of the server.

Servicers just raise the domain errors of ``planner_service/engine/errors.py`` (or let pydantic raise
``ValidationError`` while building a request); this interceptor aborts the call with the matching
canonical code and a ``google.rpc.Status`` carrying ``ErrorInfo`` (the error kind) and, for bad
input, ``BadRequest`` field violations. Anything unexpected is logged with its traceback and answered
``INTERNAL`` with a generic message, so bad input never takes the server down.
"""

from __future__ import annotations

import logging
import re
from typing import Awaitable, Callable

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from pydantic import ValidationError

from planner_service.engine import errors

log = logging.getLogger(__name__)

ERROR_DOMAIN = "vllm-planner"
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"
DO_NOT_RETRY = "-1"


class DeadlineExceededError(Exception):
    """The call's deadline passed while the engine was still working."""


_CODES: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (errors.InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.ModelNotFoundError, grpc.StatusCode.NOT_FOUND),
    (errors.GpuNotFoundError, grpc.StatusCode.NOT_FOUND),
    (errors.PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (errors.ReservationNotFoundError, grpc.StatusCode.NOT_FOUND),
    (errors.ResourceExhaustedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.MetadataUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED),
    # A PlannerError subclass nobody mapped yet is still about the request, not a server bug.
    (errors.PlannerError, grpc.StatusCode.INVALID_ARGUMENT),
]


def _reason(exc: BaseException) -> str:
    """``GpuNotFoundError`` -> ``GPU_NOT_FOUND`` (AIP-193 ErrorInfo.reason)."""
    name = type(exc).__name__.removesuffix("Error")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


def _violations(exc: BaseException) -> list[errors.FieldViolation]:
    if isinstance(exc, ValidationError):
        return [
            errors.FieldViolation(".".join(str(part) for part in error["loc"]), error["msg"])
            for error in exc.errors()
        ]
    return list(getattr(exc, "violations", []))


def status_for(exc: BaseException) -> status_pb2.Status:
    """The rich status for ``exc`` (public so tests and other servers can reuse the mapping)."""
    if isinstance(exc, ValidationError):
        code, reason = grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST"
        violations = _violations(exc)
        message = "invalid request: " + "; ".join(f"{v.field}: {v.description}" for v in violations)
    else:
        code = next((c for cls, c in _CODES if isinstance(exc, cls)), grpc.StatusCode.INTERNAL)
        reason = _reason(exc) if code is not grpc.StatusCode.INTERNAL else "INTERNAL"
        violations = _violations(exc)
        message = " ".join(str(exc).split()) or type(exc).__name__
    if code is grpc.StatusCode.INTERNAL:
        message = "internal error (see the planner service log)"
    details = [_pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN))]
    if violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in violations
            ]
        )
        details.append(_pack(bad))
    return status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)


def _pack(message) -> any_pb2.Any:  # noqa: ANN001
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def pushback_metadata(exc: BaseException, status: status_pb2.Status) -> tuple[tuple[str, str], ...]:
    """Trailing metadata telling gRPC client retry policies not to retry this answer.

    Clients retry UNAVAILABLE because it usually means "the server is not there (yet)". When the
    *service* answers UNAVAILABLE for a domain reason (the Hub is unreachable) it already waited its
    own timeout on the dependency; a retry only multiplies the wait and hammers the dead upstream.
    gRPC's retry design (A6) honours server pushback: a negative ``grpc-retry-pushback-ms`` means
    "do not retry", so every client with a retry policy, in any language, stops after one attempt,
    while transport-level UNAVAILABLE (no server, connection reset) is still retried.
    """
    if status.code == code_pb2.UNAVAILABLE and isinstance(exc, errors.PlannerError):
        return ((RETRY_PUSHBACK_KEY, DO_NOT_RETRY),)
    return ()


async def abort_with(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    status = status_for(exc)
    if status.code == code_pb2.INTERNAL:
        log.error("%s failed", method, exc_info=exc)
    else:
        log.info("%s: %s %s", method, code_pb2.Code.Name(status.code), status.message)
    converted = rpc_status.to_status(status)
    trailing = tuple(converted.trailing_metadata) + pushback_metadata(exc, status)
    await context.abort(converted.code, converted.details, trailing)


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every unary-unary handler so raised exceptions become statuses (see ``status_for``)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.response_streaming:
            return handler  # streaming methods (health Watch, reflection) handle their own errors
        inner = handler.unary_unary
        method = handler_call_details.method

        async def unary(request, context: grpc.aio.ServicerContext):  # noqa: ANN001
            try:
                return await inner(request, context)
            except grpc.aio.AbortError:
                raise  # the handler already chose a status
            except Exception as exc:  # the process boundary: everything else becomes a status
                await abort_with(context, exc, method)

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
