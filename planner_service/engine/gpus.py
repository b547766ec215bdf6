"""GPU catalog: CUDA-visible memory, bandwidth, compute and links of the GPUs vLLM runs on, and name lookup.

The facts live in ``engine/data/gpus.json`` (every NVIDIA GPU vLLM runs on from Volta on, plus the names
the ``vllm-wizard`` seed documents), each with its source (``sources`` per entry, keys in ``source_keys``).
``memory_total_bytes`` is what ``cudaMemGetInfo`` reports (the total vLLM multiplies by
``gpu_memory_utilization``), NOT the marketing size nor nvidia-smi's ``memory.total`` (which includes the
driver-reserved region). Figures come from ``shared/reference/gpu-memory-totals.md``; where that table has a
gap the total is derived by a stated rule and ``memory_is_estimate`` is set (``--gpu auto`` reads the real
one). TFLOP/s are dense peaks (no sparsity). Names that resolve to a card vLLM cannot run on (Pascal,
Apple silicon) resolve, and ``vllm_supported``/``unsupported_reason`` say why a plan is refused.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field, field_validator

from planner_service.engine.errors import GpuNotFoundError
from vllm_planner.bounded import shown

MIB = 1 << 20
GIB = 1 << 30
DATA_FILE = "gpus.json"


class GpuSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str  # canonical catalog name
    nvidia_smi_names: tuple[str, ...]  # product names nvidia-smi prints
    aliases: tuple[str, ...] = ()
    memory_total_bytes: int  # CUDA total (cudaMemGetInfo)
    memory_bandwidth_bytes_per_second: float | None
    bf16_tflops: float | None  # dense 16-bit tensor peak (fp16 on Volta/Turing, which lack bf16)
    fp8_tflops: float | None  # None: no fp8 tensor cores
    compute_capability: str | None  # None: not an NVIDIA GPU
    consumer: bool = False
    nvlink: bool = False  # NVLink is this product's usual GPU-to-GPU link (default interconnect)
    memory_is_estimate: bool = False
    memory_total_nvidia_smi_mib: int | None = None  # nvidia-smi memory.total (reserve included), where sourced
    sm_count: int | None = None
    nvlink_bidirectional_bandwidth_bytes_per_second: float | None = None  # per GPU, both directions
    pcie_generation: int | None = None
    pcie_unidirectional_bandwidth_bytes_per_second: float | None = None  # one direction of the card's link
    vllm_supported: bool = True
    unsupported_reason: str | None = None
    sources: dict[str, str] = Field(default_factory=dict)  # fact -> where it comes from

    @field_validator("memory_bandwidth_bytes_per_second", "bf16_tflops", "compute_capability", mode="before")
    @classmethod
    def _zero_is_unknown(cls, value: object) -> object:
        # proto3 carries "unknown" (not an NVIDIA GPU) as 0 / "": no real GPU has zero bandwidth or compute.
        return None if value in (0, 0.0, "") else value

    @property
    def cc_tuple(self) -> tuple[int, int]:
        if not self.compute_capability:
            return (0, 0)
        major, minor = self.compute_capability.split(".")
        return int(major), int(minor)

    @property
    def supports_fp8(self) -> bool:
        return self.cc_tuple >= (8, 9)

    @property
    def supports_bf16(self) -> bool:
        return self.cc_tuple >= (8, 0)


@functools.lru_cache(maxsize=1)
def _catalog() -> tuple[GpuSpec, ...]:
    raw = json.loads((resources.files("planner_service.engine.data") / DATA_FILE).read_text(encoding="utf-8"))
    return tuple(GpuSpec.model_validate(entry) for entry in raw["gpus"])


@functools.lru_cache(maxsize=1)
def source_keys() -> dict[str, str]:
    """The source abbreviations used in each GPU's ``sources`` (e.g. REF, AIC, NVDS, EST-*)."""
    raw = json.loads((resources.files("planner_service.engine.data") / DATA_FILE).read_text(encoding="utf-8"))
    return dict(raw["source_keys"])


_NOISE = re.compile(r"[\s\-_]+")


def _norm(name: str) -> str:
    key = _NOISE.sub("", name.lower())
    for prefix in ("nvidia", "geforce", "tesla", "apple"):
        key = key.replace(prefix, "")
    return key


@functools.lru_cache(maxsize=1)
def _index() -> dict[str, GpuSpec]:
    index: dict[str, GpuSpec] = {}
    for spec in _catalog():
        for label in (spec.name, *spec.nvidia_smi_names, *spec.aliases):
            key = _norm(label)
            if key in index and index[key] is not spec:
                raise RuntimeError(f"GPU catalog key clash: {label}")
            index[key] = spec
    return index


def list_gpus() -> list[GpuSpec]:
    """Every catalog GPU, in catalog order."""
    return list(_catalog())


def find_gpu(name: str) -> GpuSpec | None:
    """The catalog GPU ``name`` names (catalog name, nvidia-smi name or alias), or None."""
    return _index().get(_norm(name))


def lookup_gpu(name: str) -> GpuSpec:
    """Find a GPU by catalog name, nvidia-smi product name or alias (case/space/dash-insensitive)."""
    spec = find_gpu(name)
    if spec is not None:
        return spec
    key = _norm(name)
    index = _index()
    close = difflib.get_close_matches(key, list(index), n=5, cutoff=0.5)
    names = sorted({index[k].name for k in close})
    hint = f"; close matches: {', '.join(names)}" if names else ""
    raise GpuNotFoundError(f"unknown GPU {shown(name)}{hint}. Pass hardware.vram_gb for GPUs not in the catalog.")


def custom_gpu(vram_gb: float, base: GpuSpec | None = None) -> GpuSpec:
    """A GPU known only by its CUDA total (``HardwareOptions.vram_gb``, GiB); compute taken from ``base``."""
    return with_memory_total(int(vram_gb * GIB), base)


def with_memory_total(memory_total_bytes: int, base: GpuSpec | None = None) -> GpuSpec:
    """``base`` with a measured (or user-given) CUDA total; a generic GPU when ``base`` is None."""
    if base is not None:
        return base.model_copy(update={"memory_total_bytes": memory_total_bytes, "memory_is_estimate": False})
    return GpuSpec(
        name=f"custom-{memory_total_bytes / GIB:g}GiB",
        nvidia_smi_names=(),
        memory_total_bytes=memory_total_bytes,
        memory_bandwidth_bytes_per_second=1e12,
        bf16_tflops=100.0,
        fp8_tflops=None,
        compute_capability="8.0",
        memory_is_estimate=False,
    )
