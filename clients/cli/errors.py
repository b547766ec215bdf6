"""Translate planner and SDK errors into one line and an exit code (the CLI's only error boundary)."""

from __future__ import annotations

from planner_service.engine.errors import PlannerError

EXIT_USER_ERROR = 2
EXIT_UNAVAILABLE = 3


def exit_code_for(exc: BaseException) -> int | None:
    """Exit code for an error a user can act on; None for a bug (which keeps its traceback)."""
    from planner_service.engine.errors import MetadataUnavailableError

    if isinstance(exc, MetadataUnavailableError):
        return EXIT_UNAVAILABLE
    if isinstance(exc, PlannerError):
        return EXIT_USER_ERROR
    try:
        from clients.sdk.errors import SdkError  # optional until the SDK exists
    except ImportError:  # pragma: no cover
        return None
    if isinstance(exc, SdkError):
        return EXIT_UNAVAILABLE if getattr(exc, "unavailable", False) else EXIT_USER_ERROR
    return None


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
