"""Typed SDK exceptions, mapped from gRPC status codes in exactly one place (``from_rpc_error``)."""

from __future__ import annotations

import grpc

from planner_service.engine.errors import FieldViolation


class SdkError(Exception):
    """Base of every error the SDK raises. ``code`` is the gRPC status code name."""

    unavailable = False

    def __init__(self, message: str, code: str = "UNKNOWN", violations: list[FieldViolation] | None = None):
        super().__init__(message)
        self.code = code
        self.violations = list(violations or [])


class InvalidArgument(SdkError):
    pass


class NotFound(SdkError):
    pass


class PermissionDenied(SdkError):
    pass


class Unauthenticated(SdkError):
    pass


class Unimplemented(SdkError):
    """The address answers gRPC but not the service asked for (a planner where an agent was meant)."""


class Unavailable(SdkError):
    unavailable = True


class DeadlineExceeded(SdkError):
    unavailable = True


class ResourceExhausted(SdkError):
    """A server-side table is full (agent registrations, reservations)."""


_BY_CODE: dict[grpc.StatusCode, type[SdkError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
}


def from_rpc_error(error: grpc.RpcError, *, target: str | None = None, service: str | None = None) -> SdkError:
    """Turn a grpc.RpcError (sync or aio) into the matching SdkError, keeping BadRequest violations.

    ``target`` and ``service`` (the address and the service the client meant to call) turn gRPC's
    "Method not found!" into something a user can act on: that address serves something else.
    """
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    if code == grpc.StatusCode.UNIMPLEMENTED and target and service:
        details = f"{target} answers gRPC but does not serve {service}: is that the right address?"
    violations: list[FieldViolation] = []
    try:
        from grpc_status import rpc_status
        from google.rpc import error_details_pb2

        status = rpc_status.from_call(error) if not isinstance(error, grpc.aio.AioRpcError) else None
        if status is None and isinstance(error, grpc.aio.AioRpcError):
            status = _aio_status(error)
        for detail in status.details if status else ():
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
    except Exception:  # details are a bonus; the code and message are what matter
        pass
    cls = _BY_CODE.get(code, SdkError)
    return cls(details or code.name, code=code.name, violations=violations)


def _aio_status(error: "grpc.aio.AioRpcError"):
    from google.rpc import status_pb2

    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status()
            status.ParseFromString(value)
            return status
    return None
