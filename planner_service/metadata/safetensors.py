"""Exact parameter counts from safetensors headers, without touching tensor data.

A safetensors file is an 8-byte little-endian header length, a JSON header mapping tensor names to
``{"dtype", "shape", "data_offsets"}`` (plus an optional ``__metadata__``), then raw bytes. We read
only the length and the header, and cap the header size (the format itself caps it at 100 MB), so
a hostile or truncated file cannot make us allocate or read gigabytes.

A folder's checkpoint is either the shards named by ``model.safetensors.index.json`` or every
``*.safetensors`` file at its top level. When the index names a shard that is missing (a partial
download), no summary is returned: partial counts would be silently wrong.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Callable, NamedTuple

from planner_service.engine.errors import InvalidRequestError
from planner_service.engine.source import SafetensorsSummary, TensorInfo
from planner_service.metadata.config_file import MAX_INDEX_BYTES, read_json_object

INDEX_FILE = "model.safetensors.index.json"
MAX_HEADER_BYTES = 100_000_000  # the limit the safetensors reference implementation enforces
MAX_SHARDS = 4096

PathCheck = Callable[[Path], None]


class SafetensorsHeaderError(InvalidRequestError):
    """A safetensors file's header is truncated, oversized or not the documented structure."""


class ShardHeader(NamedTuple):
    tensors: dict[str, TensorInfo]
    data_bytes: int  # sum of the tensors' data_offsets spans: the shard's weight bytes


def read_header(path: Path, *, max_header_bytes: int = MAX_HEADER_BYTES) -> ShardHeader:
    """Return the tensors declared in ``path``'s header (name -> dtype and shape) and their byte total."""
    try:
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) != 8:
                raise SafetensorsHeaderError(f"{path.name}: truncated safetensors file (no header length)")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len == 0 or header_len > max_header_bytes:
                raise SafetensorsHeaderError(
                    f"{path.name}: safetensors header length {header_len} is outside 1..{max_header_bytes}"
                )
            raw = handle.read(header_len)
    except OSError as exc:
        raise SafetensorsHeaderError(f"{path.name}: cannot read safetensors header: {exc.strerror or exc}") from None
    if len(raw) != header_len:
        raise SafetensorsHeaderError(f"{path.name}: truncated safetensors header")
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):
        raise SafetensorsHeaderError(f"{path.name}: safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise SafetensorsHeaderError(f"{path.name}: safetensors header is not a JSON object")
    return _tensors_from_header(header, path.name)


def _tensors_from_header(header: dict, label: str) -> ShardHeader:
    tensors: dict[str, TensorInfo] = {}
    data_bytes = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict):
            raise SafetensorsHeaderError(f"{label}: tensor {name!r} has no dtype/shape entry")
        dtype, shape = entry.get("dtype"), entry.get("shape")
        if not isinstance(dtype, str) or not isinstance(shape, list):
            raise SafetensorsHeaderError(f"{label}: tensor {name!r} lacks a dtype string or a shape list")
        if not all(isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in shape):
            raise SafetensorsHeaderError(f"{label}: tensor {name!r} has an invalid shape {shape!r}")
        offsets = entry.get("data_offsets")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise SafetensorsHeaderError(f"{label}: tensor {name!r} has invalid data_offsets {offsets!r}")
        tensors[name] = TensorInfo(dtype=dtype, shape=tuple(shape))
        data_bytes += offsets[1] - offsets[0]
    return ShardHeader(tensors, data_bytes)


def _shard_names(folder: Path, check: PathCheck | None, pattern: str | None = None) -> tuple[list[str], int | None] | None:
    """Shard file names and the index's total_size; None when the folder has no safetensors.

    ``pattern`` (e.g. ``consolidated*.safetensors`` for a Mistral-format checkpoint) selects the shards by
    name instead of the HF index."""
    index_path = folder / INDEX_FILE
    if pattern is not None:
        files = sorted(p.name for p in folder.glob(pattern) if p.is_file())
        return (files, None) if files else None
    if index_path.is_file():
        if check is not None:
            check(index_path)
        index = read_json_object(index_path, max_bytes=MAX_INDEX_BYTES)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise InvalidRequestError(f"{INDEX_FILE} has no weight_map object")
        shards = sorted({str(name) for name in weight_map.values()})
        for name in shards:
            # Shards must be plain file names in this folder: the index must not steer reads elsewhere.
            if Path(name).name != name or name in {".", ".."} or not name.endswith(".safetensors"):
                raise InvalidRequestError(f"{INDEX_FILE} names an invalid shard file {name!r}")
        metadata = index.get("metadata")
        total = metadata.get("total_size") if isinstance(metadata, dict) else None
        return shards, total if isinstance(total, int) and total > 0 else None
    files = sorted(p.name for p in folder.glob("*.safetensors") if p.is_file())
    return (files, None) if files else None


def summarize_folder(folder: Path, *, check: PathCheck | None = None, pattern: str | None = None) -> SafetensorsSummary | None:
    """Exact counts by dtype over the folder's checkpoint shards; None when there is no complete set.

    ``check`` is called on every file before it is opened (the model-root confinement: a shard may be
    a symlink pointing anywhere) and raises to refuse it.
    """
    found = _shard_names(folder, check, pattern)
    if found is None:
        return None
    shards, index_total = found
    if len(shards) > MAX_SHARDS:
        raise InvalidRequestError(f"{folder.name}: {len(shards)} safetensors shards exceeds the limit of {MAX_SHARDS}")
    if not all((folder / name).is_file() for name in shards):
        return None
    tensors: dict[str, TensorInfo] = {}
    data_bytes = 0
    for name in shards:
        if check is not None:
            check(folder / name)
        shard = read_header(folder / name)
        tensors.update(shard.tensors)
        data_bytes += shard.data_bytes
    # The headers are the measurement; the index's total_size is only what the uploader wrote.
    return summarize_tensors(tensors, total_size_bytes=data_bytes or index_total)


def summarize_tensors(tensors: dict[str, TensorInfo], *, total_size_bytes: int | None = None) -> SafetensorsSummary:
    """Fold tensors into exact per-dtype element counts."""
    by_dtype: dict[str, int] = {}
    for info in tensors.values():
        by_dtype[info.dtype] = by_dtype.get(info.dtype, 0) + math.prod(info.shape)
    return SafetensorsSummary(
        parameters_by_dtype=dict(sorted(by_dtype.items())), total_size_bytes=total_size_bytes, tensors=tensors
    )
