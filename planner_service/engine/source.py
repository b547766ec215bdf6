"""Raw model metadata as the adapters hand it to the engine (pure data, no I/O).

Adapters (``planner_service.metadata``) read config.json and safetensors headers from a local folder,
the HF cache, the Hub or the bundled catalog; the engine parses these into a ModelArchitecture.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SourceKind = Literal["catalog", "hf-cache", "hub", "local", "inline"]


class TensorInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dtype: str = Field(description="safetensors dtype string: BF16, F16, F32, F8_E4M3, I32, U8, ...")
    shape: tuple[int, ...]


class SafetensorsSummary(BaseModel):
    """What the safetensors headers say: exact element counts by dtype, and every tensor when known."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    parameters_by_dtype: dict[str, int]
    total_size_bytes: int | None = None
    tensors: dict[str, TensorInfo] | None = None

    @property
    def total_parameters(self) -> int:
        return sum(self.parameters_by_dtype.values())


class ModelSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    source: SourceKind
    config: dict
    safetensors: SafetensorsSummary | None = None
    revision: str | None = None
    # Hints for when no safetensors headers were read (the bundled catalog): counts stated by a
    # published source, not measured. Prefer ``safetensors`` whenever it is set.
    known_num_params: int | None = Field(default=None, gt=0, description="Stated parameter count (catalog).")
    known_total_size_bytes: int | None = Field(
        default=None, gt=0, description="Stated checkpoint size in bytes (catalog or safetensors index)."
    )
