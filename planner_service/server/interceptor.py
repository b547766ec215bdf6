"""The planner's mapping of exceptions to gRPC statuses, applied to every method (unary and streaming)
by ``vllm_planner.transport.guard.GuardInterceptor``.

Servicers just raise the domain errors of ``planner_service/engine/errors.py`` (or let pydantic raise
``ValidationError`` while building a request); the call is aborted with the matching canonical code
and a ``google.rpc.Status`` carrying ``ErrorInfo`` (the error kind) and, for bad input, ``BadRequest``
field violations, bounded by the guard. Undecodable request bytes are INVALID_ARGUMENT. Anything
unexpected is logged with its traceback and answered ``INTERNAL`` with a generic message, so bad input
never takes the server down.
"""

from __future__ import annotations

import logging
import re

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from pydantic import ValidationError

from planner_service.engine import errors
from vllm_planner.transport.guard import GuardInterceptor, pack

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
        return errors.violations_from(exc)[0]
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
    details = [pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN))]
    if violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in violations
            ]
        )
        details.append(pack(bad))
    return status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)


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


class ErrorMappingInterceptor(GuardInterceptor):
    """The guard with the planner's mapping (``status_for``) and retry pushback (``pushback_metadata``)."""

    def __init__(self) -> None:
        super().__init__(status_for=status_for, trailing=pushback_metadata)
