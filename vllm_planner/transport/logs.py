"""Logging for both services: text or JSON lines, with the id of the RPC being served in every record.

``configure_logging(settings)`` is called once at start-up (``start_server`` does it when its options
carry a log format). The request id comes from the caller's ``x-request-id`` metadata or is generated
(see ``observability.py``) and reaches every log record made while serving that RPC through a
context variable, so handlers need not pass it around.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("vllm_planner_request_id", default=None)

# LogRecord attributes that are not "extra" fields a caller passed.
_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "request_id"}

_HANDLER_NAME = "vllm_planner"


class RequestIdFilter(logging.Filter):
    """Stamps ``record.request_id`` (``-`` outside an RPC) so both formats can show it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, request_id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id and request_id != "-":
            payload["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def configure_logging(settings: Any = None, *, log_format: str | None = None, log_level: str | None = None,
                      stream: TextIO | None = None) -> logging.Handler:
    """Install one handler on the root logger (replacing the one a previous call installed).

    ``settings`` is anything with ``log_format`` and ``log_level`` attributes (``ServerSettings``);
    the keyword arguments override it. Returns the handler (tests point ``stream`` at a buffer).
    """
    fmt = log_format or getattr(settings, "log_format", None) or "text"
    level = (log_level or getattr(settings, "log_level", None) or "INFO").upper()
    if fmt not in ("text", "json"):
        raise ValueError("log_format must be 'text' or 'json'")
    if not isinstance(logging.getLevelName(level), int):
        raise ValueError(f"unknown log level {level!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # gRPC's own Python loggers are chatty at DEBUG about every poll; keep them at WARNING.
    logging.getLogger("grpc").setLevel(max(logging.WARNING, root.level))
    return handler
