"""The CLI's only error boundary: every failure becomes one line (or one JSON object) and an exit code.

Exit codes (README "exit codes"): 0 the plan starts / the command did its job; 1 vLLM would not start
with the plan (or a fleet placement left replicas unplaced); 2 bad input (a flag, a file, a request
field: the line names it); 3 a service or the Hub cannot be reached; 70 a bug in the planner (one
line; ``VLLM_PLANNER_DEBUG=1`` adds the traceback); 130 interrupted; 141 the reader of stdout went
away (``| head``), as for a process ended by SIGPIPE.

Argument parsing fails through ``CliParser.error`` -> ``UsageError``, never argparse's usage dump.
With ``--json`` the error is one JSON object on stderr::

    {"error": {"exit_code": 2, "kind": "invalid_request", "message": "...", "violations": [{"field": ..., "description": ...}]}}
"""

from __future__ import annotations

import json
import os
import re
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from vllm_planner.argparsing import OneLineArgumentParser
from planner_service.engine.errors import FieldViolation, MetadataUnavailableError, PlannerError, violations_from

EXIT_WOULD_NOT_START = 1
EXIT_USER_ERROR = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
DEBUG_ENV = "VLLM_PLANNER_DEBUG"
# No single message line, or field description, is longer than this (an 8 MB error line helps no one).
MAX_MESSAGE_CHARS = 1000
MAX_VIOLATIONS_SHOWN = 5

# A request field path -> the name a user knows it by (a flag, or "FILE: path" for a profile value).
FieldNamer = Callable[[str], str]


class UsageError(Exception):
    """The command line itself is wrong (unknown flag, bad value, missing argument)."""


class CliParser(OneLineArgumentParser):
    """The shared parser (empty values refused) whose ``error`` raises ``UsageError`` instead of
    exiting, so that usage errors take the same path as every other failure (``--json`` included)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message.removeprefix("argument "))


@dataclass(frozen=True)
class CliFailure:
    exit_code: int
    kind: str
    message: str
    violations: list[FieldViolation] = field(default_factory=list)


def _clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _kind(exc: BaseException) -> str:
    name = type(exc).__name__.removesuffix("Error")
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_") or "error"


def _named(violations: list[FieldViolation], namer: FieldNamer | None) -> list[FieldViolation]:
    if namer is None:
        return violations
    return [FieldViolation(namer(v.field), v.description) for v in violations]


def _in_flags(text: str, namer: FieldNamer | None) -> str:
    """Field paths a message mentions in passing ("pass hardware.vram_gb ...") named by their flags."""
    for field, flag in getattr(namer, "flags", {}).items():
        if field in text:
            text = re.sub(rf"(?<![\w.]){re.escape(field)}(?!\w)", flag, text)
    return text


def _message_from(violations: list[FieldViolation], fallback: str) -> str:
    if not violations:
        return fallback
    head = "; ".join(f"{v.field}: {v.description}" for v in violations[:MAX_VIOLATIONS_SHOWN])
    more = len(violations) - MAX_VIOLATIONS_SHOWN
    return head + (f" (+{more} more)" if more > 0 else "")


def classify(exc: BaseException, namer: FieldNamer | None = None) -> CliFailure:
    """The exit code, kind and one-line message of any exception that reaches the CLI boundary."""
    from pydantic import ValidationError

    from clients.sdk.errors import SdkError
    from vllm_planner.bounded import InputError

    if isinstance(exc, UsageError):
        return CliFailure(EXIT_USER_ERROR, "usage", _clip(str(exc)))
    if isinstance(exc, MetadataUnavailableError):
        return CliFailure(EXIT_UNAVAILABLE, "unavailable", _clip(str(exc)))
    if isinstance(exc, (PlannerError, SdkError)):
        violations = _named(list(getattr(exc, "violations", [])), namer)
        code = EXIT_UNAVAILABLE if getattr(exc, "unavailable", False) else EXIT_USER_ERROR
        kind = getattr(exc, "code", None) or _kind(exc)
        message = _message_from(violations, _in_flags(str(exc), namer))
        return CliFailure(code, str(kind).lower(), _clip(message), violations)
    if isinstance(exc, ValidationError):
        violations = _named(violations_from(exc)[0], namer)
        return CliFailure(EXIT_USER_ERROR, "invalid_request", _clip(_message_from(violations, "invalid input")),
                          violations)
    if isinstance(exc, InputError):
        return CliFailure(EXIT_USER_ERROR, "invalid_input", _clip(str(exc)))
    if isinstance(exc, OSError) and not isinstance(exc, (ConnectionError, TimeoutError)):
        # A file the user named that could not be read or written, reported where no flag was known.
        where = f"{exc.filename}: " if exc.filename else ""
        return CliFailure(EXIT_USER_ERROR, "os_error", _clip(f"{where}{exc.strerror or exc}"))
    return CliFailure(EXIT_INTERNAL, "internal",
                      _clip(f"internal error ({type(exc).__name__}: {exc}); this is a bug in vllm-planner "
                            f"(set {DEBUG_ENV}=1 for the traceback)", 300))


def report(exc: BaseException, *, json_errors: bool, namer: FieldNamer | None = None) -> int:
    """Print ``exc`` as the CLI's one error line (or JSON object) on stderr; return the exit code."""
    failure = classify(exc, namer)
    if failure.exit_code == EXIT_INTERNAL and os.environ.get(DEBUG_ENV):
        traceback.print_exception(exc, file=sys.stderr)
    if json_errors:
        body = {"exit_code": failure.exit_code, "kind": failure.kind, "message": failure.message,
                "violations": [{"field": v.field, "description": _clip(v.description, 300)}
                               for v in failure.violations[:50]]}
        sys.stderr.write(json.dumps({"error": body}) + "\n")
    else:
        sys.stderr.write(f"error: {failure.message}\n")
    sys.stderr.flush()
    return failure.exit_code
