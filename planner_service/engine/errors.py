"""Domain errors. Each boundary (CLI, gRPC interceptor, SDK) translates these in exactly one place."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field: ``field`` is a dotted path (``hardware.tensor_parallel_size``)."""

    field: str
    description: str


class PlannerError(Exception):
    """Base class of every error the planner raises on purpose."""


class InvalidRequestError(PlannerError):
    """The request is malformed or impossible (maps to INVALID_ARGUMENT)."""

    def __init__(self, message: str, violations: list[FieldViolation] | None = None) -> None:
        super().__init__(message)
        self.violations: list[FieldViolation] = list(violations or [])

    @classmethod
    def for_field(cls, field_path: str, description: str) -> "InvalidRequestError":
        return cls(f"{field_path}: {description}", [FieldViolation(field_path, description)])


class ModelNotFoundError(PlannerError):
    """No model by that name in the catalog, the HF cache, the Hub or the model roots (NOT_FOUND)."""


class GpuNotFoundError(PlannerError):
    """The GPU name matches nothing in the GPU catalog (NOT_FOUND)."""


class UnsupportedArchitectureError(InvalidRequestError):
    """config.json lacks fields the planner needs; the message names them (INVALID_ARGUMENT)."""


class UnsupportedVersionError(InvalidRequestError):
    """No vLLM version profile covers the requested version (INVALID_ARGUMENT)."""


class MetadataUnavailableError(PlannerError):
    """The Hub could not be reached and nothing is cached (UNAVAILABLE)."""


class PermissionDeniedError(PlannerError):
    """A path outside the configured model roots was named (PERMISSION_DENIED)."""


class ReservationNotFoundError(PlannerError):
    """No active fleet reservation with that ID: released, expired, consumed or unknown (NOT_FOUND)."""


class ResourceExhaustedError(PlannerError):
    """A bounded server-side table is full (registrations, reservations) (RESOURCE_EXHAUSTED)."""


@dataclass(frozen=True)
class ErrorDetail:
    """Serializable summary of a PlannerError, for JSON output."""

    kind: str
    message: str
    violations: list[FieldViolation] = field(default_factory=list)
