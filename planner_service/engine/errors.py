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


# --------------------------------------------------------------------------------------------------
# pydantic ValidationError -> field violations, the same way at every boundary
# --------------------------------------------------------------------------------------------------

MAX_VIOLATIONS = 20  # a file with 100k unknown keys is one mistake, not 100k lines of error
MAX_DESCRIPTION_CHARS = 300
_PYDANTIC_WORDING = {"Field required": "is required", "Extra inputs are not permitted": "unknown key"}


def violations_from(exc, prefix: str = "") -> tuple[list[FieldViolation], int]:  # noqa: ANN001  (ValidationError)
    """(at most ``MAX_VIOLATIONS`` violations with dotted paths, how many more there were).

    No documentation URLs, no echo of the input, pydantic's wording made readable.
    """
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    out = []
    for error in errors[:MAX_VIOLATIONS]:
        path = ".".join(str(part) for part in error["loc"])[:200]
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        out.append(FieldViolation(path or "<root>", _PYDANTIC_WORDING.get(message, message)[:MAX_DESCRIPTION_CHARS]))
    return out, len(errors) - len(out)


def invalid_request_from(exc, prefix: str = "") -> InvalidRequestError:  # noqa: ANN001  (ValidationError)
    """One InvalidRequestError naming each bad field of a pydantic ValidationError (bounded)."""
    violations, more = violations_from(exc, prefix)
    message = "; ".join(f"{v.field}: {v.description}" for v in violations) + (f" (+{more} more)" if more else "")
    return InvalidRequestError(message, violations)
