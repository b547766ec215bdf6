"""GPU catalog: CUDA-visible memory, bandwidth and compute of the GPUs vLLM runs on, and name lookup.

``memory_total_bytes`` is what ``cudaMemGetInfo`` reports (the total vLLM multiplies by
``gpu_memory_utilization``), NOT the marketing size nor nvidia-smi's ``memory.total`` (which includes the
driver-reserved region). Figures come from ``reference/gpu-memory-totals.md``; where that table has a gap
the nvidia-smi total minus a typical reserve (~0.5 GiB) is used and ``memory_is_estimate`` is set.
Bandwidth / TFLOP/s are dense spec-sheet peaks (no sparsity).
"""

from __future__ import annotations

import difflib
import re

from pydantic import BaseModel, ConfigDict

from planner_service.engine.errors import GpuNotFoundError
from vllm_planner.bounded import shown

MIB = 1 << 20
GIB = 1 << 30


class GpuSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str  # canonical catalog name
    nvidia_smi_names: tuple[str, ...]  # product names nvidia-smi prints
    aliases: tuple[str, ...] = ()
    memory_total_bytes: int  # CUDA total (cudaMemGetInfo)
    memory_bandwidth_bytes_per_second: float
    bf16_tflops: float
    fp8_tflops: float | None  # None: no fp8 tensor cores
    compute_capability: str
    consumer: bool = False
    nvlink: bool = False
    memory_is_estimate: bool = False

    @property
    def cc_tuple(self) -> tuple[int, int]:
        major, minor = self.compute_capability.split(".")
        return int(major), int(minor)

    @property
    def supports_fp8(self) -> bool:
        return self.cc_tuple >= (8, 9)

    @property
    def supports_bf16(self) -> bool:
        return self.cc_tuple >= (8, 0)


def _g(
    name: str,
    smi: tuple[str, ...],
    aliases: tuple[str, ...],
    mem: int,
    bw_gbs: float,
    bf16: float,
    fp8: float | None,
    cc: str,
    consumer: bool = False,
    nvlink: bool = False,
    est: bool = False,
) -> GpuSpec:
    return GpuSpec(
        name=name,
        nvidia_smi_names=smi,
        aliases=aliases,
        memory_total_bytes=mem,
        memory_bandwidth_bytes_per_second=bw_gbs * 1e9,
        bf16_tflops=bf16,
        fp8_tflops=fp8,
        compute_capability=cc,
        consumer=consumer,
        nvlink=nvlink,
        memory_is_estimate=est,
    )


# fmt: off
_CATALOG: tuple[GpuSpec, ...] = (
    _g("T4", ("Tesla T4", "NVIDIA Tesla T4"), ("T4-16GB",), 15095 * MIB, 320, 65, None, "7.5"),
    _g("A10", ("NVIDIA A10",), ("A10-24GB",), int(22.18 * GIB), 600, 125, None, "8.6"),
    _g("A10G", ("NVIDIA A10G",), ("A10G-24GB",), 22587 * MIB, 600, 70, None, "8.6"),
    _g("L4", ("NVIDIA L4",), ("L4-24GB",), 23612293120, 300, 121, 242, "8.9"),
    _g("L40", ("NVIDIA L40",), (), 45589 * MIB, 864, 181, 362, "8.9", est=True),
    _g("L40S", ("NVIDIA L40S",), ("L40S-48GB",), 45589 * MIB, 864, 362, 733, "8.9"),
    _g("RTX A5000", ("NVIDIA RTX A5000",), ("A5000",), 24114 * MIB, 768, 111, None, "8.6", nvlink=True),
    _g("RTX A6000", ("NVIDIA RTX A6000",), ("A6000",), 48676 * MIB, 768, 155, None, "8.6", nvlink=True),
    _g("RTX 6000 Ada", ("NVIDIA RTX 6000 Ada Generation",), ("RTX6000ADA", "6000 Ada"), 48622 * MIB, 960, 364, 728, "8.9"),
    _g("A100 PCIe 40GB", ("NVIDIA A100-PCIE-40GB",), ("A100-40GB-PCIe",), 40326 * MIB, 1555, 312, None, "8.0", nvlink=True),
    _g("A100 SXM 40GB", ("NVIDIA A100-SXM4-40GB", "A100-SXM4-40GB"), ("A100-40GB", "A100 40GB", "A100-SXM-40GB"),
       42298834944, 1555, 312, None, "8.0", nvlink=True),
    _g("A100 PCIe 80GB", ("NVIDIA A100 80GB PCIe",), ("A100-80GB-PCIe",), 81049 * MIB, 1935, 312, None, "8.0", nvlink=True),
    _g("A100 SXM 80GB", ("NVIDIA A100-SXM4-80GB", "A100-SXM4-80GB"), ("A100", "A100-80GB", "A100 80GB", "A100-SXM-80GB"),
       int(79.15 * GIB), 2039, 312, None, "8.0", nvlink=True),
    _g("A800", ("NVIDIA A800-SXM4-80GB",), ("A800-80GB",), int(79.33 * GIB), 2039, 312, None, "8.0", nvlink=True),
    _g("H100 PCIe", ("NVIDIA H100 PCIe",), ("H100-PCIe-80GB",), 81008 * MIB, 2000, 756, 1513, "9.0"),
    _g("H100 SXM", ("NVIDIA H100 80GB HBM3",), ("H100", "H100-80GB", "H100 80GB", "H100-SXM", "H100-SXM-80GB"),
       85017493504, 3350, 989, 1979, "9.0", nvlink=True),
    _g("H100 NVL", ("NVIDIA H100 NVL",), ("H100-94GB", "H100NVL"), 99961274368, 3900, 835, 1671, "9.0", nvlink=True),
    _g("H800", ("NVIDIA H800",), ("H800-80GB",), 84943110144, 3350, 989, 1979, "9.0", nvlink=True),
    _g("H20", ("NVIDIA H20",), ("H20-96GB",), 97285 * MIB, 4000, 148, 296, "9.0", nvlink=True),
    _g("H200", ("NVIDIA H200",), ("H200-141GB", "H200-SXM"), 150109880320, 4800, 989, 1979, "9.0", nvlink=True),
    _g("H200 NVL", ("NVIDIA H200 NVL",), (), 150109880320, 4800, 835, 1671, "9.0", nvlink=True),
    _g("GH200", ("NVIDIA GH200 480GB",), ("GH200-96GB",), (97871 - 500) * MIB, 4000, 989, 1979, "9.0", nvlink=True, est=True),
    _g("GH200 144GB", ("NVIDIA GH200 144G HBM3e",), ("GH200-144GB",), (146831 - 615) * MIB, 4900, 989, 1979, "9.0",
       nvlink=True, est=True),
    _g("B200", ("NVIDIA B200",), ("B200-180GB",), 182631 * MIB, 8000, 2250, 4500, "10.0", nvlink=True),
    _g("B300", ("NVIDIA B300 SXM6 AC",), ("B300-288GB",), (275040 - 700) * MIB, 8000, 2250, 4500, "10.3",
       nvlink=True, est=True),
    _g("RTX 3060", ("NVIDIA GeForce RTX 3060",), ("3060",), int(11.63 * GIB), 360, 51, None, "8.6", consumer=True),
    _g("RTX 3090", ("NVIDIA GeForce RTX 3090", "GeForce RTX 3090"), ("3090",), int(23.56 * GIB), 936, 71, None, "8.6",
       consumer=True, nvlink=True),
    _g("RTX 4080", ("NVIDIA GeForce RTX 4080",), ("4080",), int(15.99 * GIB), 717, 97.5, 195, "8.9", consumer=True),
    _g("RTX 4090", ("NVIDIA GeForce RTX 4090",), ("4090",), int(23.52 * GIB), 1008, 165, 330, "8.9", consumer=True),
    _g("RTX 5090", ("NVIDIA GeForce RTX 5090",), ("5090",), int(31.36 * GIB), 1792, 209.5, 419, "12.0", consumer=True),
    _g("RTX PRO 6000 Blackwell", ("NVIDIA RTX PRO 6000 Blackwell Server Edition",), ("RTX PRO 6000", "RTXPRO6000"),
       97250 * MIB, 1792, 250, 500, "12.0"),
)
# fmt: on

_NOISE = re.compile(r"[\s\-_]+")


def _norm(name: str) -> str:
    key = _NOISE.sub("", name.lower())
    for prefix in ("nvidia", "geforce", "tesla"):
        key = key.replace(prefix, "")
    return key


def _build_index() -> dict[str, GpuSpec]:
    index: dict[str, GpuSpec] = {}
    for spec in _CATALOG:
        for label in (spec.name, *spec.nvidia_smi_names, *spec.aliases):
            key = _norm(label)
            if key in index and index[key] is not spec:
                raise RuntimeError(f"GPU catalog key clash: {label}")
            index[key] = spec
    return index


_INDEX = _build_index()


def list_gpus() -> list[GpuSpec]:
    """Every catalog GPU, in catalog order."""
    return list(_CATALOG)


def lookup_gpu(name: str) -> GpuSpec:
    """Find a GPU by catalog name, nvidia-smi product name or alias (case/space/dash-insensitive)."""
    key = _norm(name)
    spec = _INDEX.get(key)
    if spec is not None:
        return spec
    close = difflib.get_close_matches(key, list(_INDEX), n=5, cutoff=0.5)
    names = sorted({_INDEX[k].name for k in close})
    hint = f"; close matches: {', '.join(names)}" if names else ""
    raise GpuNotFoundError(f"unknown GPU {shown(name)}{hint}. Pass hardware.vram_gb for GPUs not in the catalog.")


def custom_gpu(vram_gb: float, base: GpuSpec | None = None) -> GpuSpec:
    """A GPU known only by its CUDA total (``HardwareOptions.vram_gb``, GiB); compute taken from ``base``."""
    mem = int(vram_gb * GIB)
    if base is not None:
        return base.model_copy(update={"memory_total_bytes": mem, "memory_is_estimate": False})
    return GpuSpec(
        name=f"custom-{vram_gb:g}GiB",
        nvidia_smi_names=(),
        memory_total_bytes=mem,
        memory_bandwidth_bytes_per_second=1e12,
        bf16_tflops=100.0,
        fp8_tflops=None,
        compute_capability="8.0",
        memory_is_estimate=False,
    )
