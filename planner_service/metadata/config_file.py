"""Read and validate config.json (and other small JSON metadata files) defensively.

config.json comes from places we do not control (a client's folder, the Hub, an inline request), so
it is bounded before it is trusted: a size cap (a real config.json is a few KiB; a multi-MiB one is
an attack or a mistake), a nesting cap (deep nesting costs recursion), and it must be a JSON object.
Nothing in it is ever executed: ``auto_map`` and friends are plain data to us.
"""

from __future__ import annotations

import json
from pathlib import Path

from planner_service.engine.errors import InvalidRequestError
from vllm_planner.bounded import InputError, read_bytes

MAX_CONFIG_BYTES = 4 << 20  # 4 MiB; the largest real configs (multimodal) are well under 100 KiB
MAX_INDEX_BYTES = 64 << 20  # model.safetensors.index.json lists every tensor: MiBs for huge MoEs
MAX_JSON_DEPTH = 64


def json_depth_exceeds(value: object, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when ``value`` nests deeper than ``limit`` (iterative, so it cannot itself recurse too deep)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def parse_json_object(text: str | bytes, *, what: str, max_bytes: int = MAX_CONFIG_BYTES) -> dict:
    """Parse ``text`` as a bounded JSON object; ``what`` names the file in error messages."""
    if len(text) > max_bytes:
        raise InvalidRequestError(f"{what} is too large ({len(text)} bytes; the limit is {max_bytes} bytes)")
    try:
        value = json.loads(text)
    except RecursionError:
        raise InvalidRequestError(f"{what} is nested too deeply (limit {MAX_JSON_DEPTH} levels)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidRequestError(f"{what} must be a JSON object, not {type(value).__name__}")
    if json_depth_exceeds(value):
        raise InvalidRequestError(f"{what} is nested too deeply (limit {MAX_JSON_DEPTH} levels)")
    return value


def read_json_object(path: Path, *, what: str | None = None, max_bytes: int = MAX_CONFIG_BYTES) -> dict:
    """Read ``path`` as a bounded JSON object (a regular file, never more than ``max_bytes + 1`` bytes)."""
    label = what or path.name
    try:
        data = read_bytes(path, max_bytes=max_bytes, what=label)
    except InputError as exc:
        raise InvalidRequestError(str(exc)) from None
    return parse_json_object(data, what=label, max_bytes=max_bytes)


def validate_inline_config(config: dict) -> dict:
    """Apply the same bounds to an inline ``config_json`` as to a file (it arrived over the wire)."""
    if json_depth_exceeds(config):
        raise InvalidRequestError.for_field("model.config_json", f"nested too deeply (limit {MAX_JSON_DEPTH} levels)")
    try:
        size = len(json.dumps(config))
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError.for_field("model.config_json", f"not JSON-serializable: {exc}") from None
    if size > MAX_CONFIG_BYTES:
        raise InvalidRequestError.for_field(
            "model.config_json", f"too large ({size} bytes; the limit is {MAX_CONFIG_BYTES} bytes)"
        )
    return config
