"""Safetensors header reading: exact counts by dtype from real files, never reading tensor data."""

from __future__ import annotations

import json
import struct

import pytest
from fixtures.metadata.builders import (
    SHARD1,
    SHARD2,
    TINY_PARAMS_BY_DTYPE,
    TINY_TOTAL_BYTES,
    write_safetensors,
    write_sharded_model,
)

from planner_service.engine.errors import InvalidRequestError
from planner_service.metadata.safetensors import SafetensorsHeaderError, read_header, summarize_folder


def test_sharded_folder_counts_every_tensor_by_dtype(tmp_path):
    summary = summarize_folder(write_sharded_model(tmp_path / "m"))
    assert summary is not None
    assert summary.parameters_by_dtype == TINY_PARAMS_BY_DTYPE
    assert summary.total_parameters == sum(TINY_PARAMS_BY_DTYPE.values())
    assert summary.total_size_bytes == TINY_TOTAL_BYTES
    assert set(summary.tensors) == set(SHARD1) | set(SHARD2)
    assert summary.tensors["model.layers.0.mlp.up_proj.weight"].shape == (128, 64)


def test_single_file_without_index(tmp_path):
    write_safetensors(tmp_path / "model.safetensors", {"w": ("F8_E4M3", [4, 8]), "s": ("F32", [])})
    summary = summarize_folder(tmp_path)
    assert summary.parameters_by_dtype == {"F32": 1, "F8_E4M3": 32}  # a scalar counts one element
    assert summary.total_size_bytes == 32 + 4


def test_tensor_data_is_never_read(tmp_path):
    # Header claims 2 TB of data that is not there: reading only the header must still succeed.
    write_safetensors(tmp_path / "model.safetensors", {"w": ("BF16", [1 << 20, 1 << 20])}, with_data=False)
    assert summarize_folder(tmp_path).parameters_by_dtype == {"BF16": 1 << 40}


def test_index_with_missing_shard_gives_no_summary(tmp_path):
    folder = write_sharded_model(tmp_path / "m")
    (folder / "model-00002-of-00002.safetensors").unlink()
    assert summarize_folder(folder) is None  # partial counts would be silently wrong


def test_folder_without_weights_gives_no_summary(tmp_path):
    assert summarize_folder(tmp_path) is None


@pytest.mark.parametrize("shard", ["../escape.safetensors", "/etc/passwd", "sub/dir.safetensors", "x.bin"])
def test_index_cannot_point_outside_the_folder(tmp_path, shard):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": shard}}))
    with pytest.raises(InvalidRequestError, match="invalid shard"):
        summarize_folder(tmp_path)


def test_oversized_header_length_is_refused_without_reading(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(SafetensorsHeaderError, match="outside"):
        read_header(path)


def _framed(header: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x01\x02", "no header length"),
        (struct.pack("<Q", 100) + b'{"a":', "truncated"),
        (_framed(b"nope!"), "not valid JSON"),
        (_framed(b"[]"), "not a JSON object"),
        (_framed(b'{"w": {"dtype": "BF16"}}'), "dtype string or a shape"),
        (_framed(b'{"w": 3}'), "no dtype/shape"),
        (_framed(b'{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}'), "invalid shape"),
        (_framed(b'{"w":{"dtype":"F32","shape":[true],"data_offsets":[0,4]}}'), "invalid shape"),
        (_framed(b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}'), "data_offsets"),
        (_framed(b'{"w":{"dtype":"F32","shape":[1]}}'), "data_offsets"),
    ],
)
def test_malformed_headers_are_invalid_requests(tmp_path, content, message):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(InvalidRequestError, match=message):
        read_header(path)
