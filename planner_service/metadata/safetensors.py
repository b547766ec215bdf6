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
import os
import struct
from pathlib import Path
from typing import Callable, NamedTuple

from planner_service.engine.errors import InvalidRequestError
from planner_service.engine.models import MAX_PARAMS_B
from planner_service.engine.source import SafetensorsSummary, TensorInfo
from planner_service.metadata.config_file import MAX_INDEX_BYTES, read_json_object
from vllm_planner.bounded import InputError, open_regular, shown

INDEX_FILE = "model.safetensors.index.json"
MAX_HEADER_BYTES = 100_000_000  # the limit the safetensors reference implementation enforces
MAX_SHARDS = 4096
MAX_DIMS = 16
MAX_OFFSET = 2**63 - 1  # byte offsets and dimensions stay in int64 (the protos' and every consumer's type)
MAX_TOTAL_PARAMETERS = int(MAX_PARAMS_B * 1e9)  # the request models' bound on a parameter count
# Bits per element of every safetensors dtype (the format's Rust reference, ``Dtype::bitsize``).
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16, "U16": 16, "F16": 16,
    "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}

PathCheck = Callable[[Path], None]


class SafetensorsHeaderError(InvalidRequestError):
    """A safetensors file's header is truncated, oversized or not the documented structure."""


class ShardHeader(NamedTuple):
    tensors: dict[str, TensorInfo]
    data_bytes: int  # sum of the tensors' data_offsets spans: the shard's weight bytes


def read_header(path: Path, *, max_header_bytes: int = MAX_HEADER_BYTES) -> ShardHeader:
    """Return the tensors declared in ``path``'s header (name -> dtype and shape) and their byte total."""
    try:
        with open_regular(path, what=path.name) as handle:
            file_size = os.fstat(handle.fileno()).st_size
            prefix = handle.read(8)
            if len(prefix) != 8:
                raise SafetensorsHeaderError(f"{path.name}: truncated safetensors file (no header length)")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len == 0 or header_len > max_header_bytes:
                raise SafetensorsHeaderError(
                    f"{path.name}: safetensors header length {header_len} is outside 1..{max_header_bytes}"
                )
            if 8 + header_len > file_size:
                raise SafetensorsHeaderError(
                    f"{path.name}: truncated safetensors header ({header_len} bytes declared, {file_size - 8} present)")
            raw = handle.read(header_len)
    except InputError as exc:
        raise SafetensorsHeaderError(f"cannot read safetensors header: {exc}") from None
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


def _int_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def checked_tensor(label: str, name: str, dtype: object, shape: object, offsets: object) -> tuple[TensorInfo, int, int]:
    """One header entry, checked as the safetensors reference does: a dtype string, a shape of
    non-negative ints, and ``data_offsets`` [start, end] whose span is exactly the shape's elements at
    the dtype's width (so no shape can declare more elements than its bytes hold). Python ints do not
    overflow; the bounds keep every count inside int64."""
    if not isinstance(dtype, str) or not isinstance(shape, list):
        raise SafetensorsHeaderError(f"{label}: tensor {shown(name)} lacks a dtype string or a shape list")
    if not _int_list(shape) or len(shape) > MAX_DIMS or not all(0 <= dim <= MAX_OFFSET for dim in shape):
        raise SafetensorsHeaderError(f"{label}: tensor {shown(name)} has an invalid shape {shown(shape)}")
    if not _int_list(offsets) or len(offsets) != 2 or not 0 <= offsets[0] <= offsets[1] <= MAX_OFFSET:
        raise SafetensorsHeaderError(f"{label}: tensor {shown(name)} has invalid data_offsets {shown(offsets)}")
    elements, span_bits = math.prod(shape), 8 * (offsets[1] - offsets[0])
    bits = DTYPE_BITS.get(dtype)
    # A dtype newer than this table: each element still takes at least one bit.
    if (bits is not None and elements * bits != span_bits) or (bits is None and elements > span_bits):
        width = f"{bits} bits" if bits is not None else "an unknown width"
        raise SafetensorsHeaderError(
            f"{label}: tensor {shown(name)}: shape {shown(shape)} ({elements:.4g} elements of {width}) does not match "
            f"its data_offsets span of {offsets[1] - offsets[0]} bytes")
    return TensorInfo(dtype=dtype, shape=tuple(shape)), offsets[0], offsets[1]


def _tensors_from_header(header: dict, label: str) -> ShardHeader:
    tensors: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict):
            raise SafetensorsHeaderError(f"{label}: tensor {shown(name)} has no dtype/shape entry")
        info, start, end = checked_tensor(label, name, entry.get("dtype"), entry.get("shape"), entry.get("data_offsets"))
        tensors[name] = info
        spans.append((start, end))
    # The reference requires the tensors to tile the data region from 0 without gaps or overlaps:
    # overlapping spans could otherwise declare the same bytes many times over.
    position = 0
    for start, end in sorted(spans):
        if start != position:
            raise SafetensorsHeaderError(f"{label}: tensor data_offsets overlap or leave a gap at byte {position}")
        position = end
    return ShardHeader(tensors, position)


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
                raise InvalidRequestError(f"{INDEX_FILE} names an invalid shard file {shown(name)}")
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
    """Fold tensors into exact per-dtype element counts (refused above ``MAX_TOTAL_PARAMETERS``)."""
    by_dtype: dict[str, int] = {}
    for info in tensors.values():
        by_dtype[info.dtype] = by_dtype.get(info.dtype, 0) + math.prod(info.shape)
    total = sum(by_dtype.values())
    if total > MAX_TOTAL_PARAMETERS:
        raise SafetensorsHeaderError(
            f"the safetensors headers declare {total:.3g} parameters, more than the {MAX_TOTAL_PARAMETERS:.0e} "
            "any checkpoint has")
    return SafetensorsSummary(
        parameters_by_dtype=dict(sorted(by_dtype.items())), total_size_bytes=total_size_bytes, tensors=tensors
    )
