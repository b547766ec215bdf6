"""AIP-158 page tokens for ListHosts and ListReservations, and WatchFleet resume tokens.

Tokens are opaque to clients (URL-safe base64 of a small JSON object) and bound to what they page:
a page token carries a fingerprint of the request's other fields, so reusing it with a different
filter is INVALID_ARGUMENT (AIP-158); a resume token carries the planner instance that issued it,
because revisions are per process (a restarted or another planner cannot honour it).
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from google.protobuf.message import Message

from planner_service.engine.errors import InvalidRequestError

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_TOKEN_LENGTH = 2048


def page_size(requested: int, field: str = "page_size") -> int:
    """AIP-158: 0 = the default, larger than the maximum = the maximum, negative = INVALID_ARGUMENT."""
    if requested < 0:
        raise InvalidRequestError.for_field(field, "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def fingerprint(message: Message | None) -> str:
    """A short digest of a request's paging-relevant fields (deterministic serialization)."""
    data = message.SerializeToString(deterministic=True) if message is not None else b""
    return hashlib.sha256(data).hexdigest()[:16]


def encode(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, field: str) -> dict[str, Any]:
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidRequestError.for_field(field, "token too long: pass back a token this service returned")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(raw)
        if not isinstance(payload, dict):
            raise ValueError("not an object")
        return payload
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequestError.for_field(field, "not a token this service returned") from None


def encode_page(after: tuple[str, ...], fp: str) -> str:
    return encode({"a": list(after), "f": fp})


def decode_page(token: str, fp: str, field: str = "page_token") -> tuple[str, ...] | None:
    """The key to continue after; None for an empty token (the first page)."""
    if not token:
        return None
    payload = decode(token, field)
    after = payload.get("a")
    if payload.get("f") != fp:
        raise InvalidRequestError.for_field(field, "the request changed since this token was issued (AIP-158): start again without it")
    if not isinstance(after, list) or not all(isinstance(x, str) for x in after):
        raise InvalidRequestError.for_field(field, "not a token this service returned")
    return tuple(after)


def encode_resume(instance_id: str, revision: int) -> str:
    return encode({"i": instance_id, "r": revision})


def decode_resume(token: str, field: str = "resume_token") -> tuple[str, int]:
    payload = decode(token, field)
    instance, revision = payload.get("i"), payload.get("r")
    if not isinstance(instance, str) or not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
        raise InvalidRequestError.for_field(field, "not a token this service returned")
    return instance, revision
