"""The GPU catalog data file: every GPU the planner promises, every seed name, and a source for every fact."""

from __future__ import annotations

import json
import re
import pytest

from planner_service.engine.gpus import list_gpus, lookup_gpu, source_keys
from helpers.paths import CAPTURES, H100_CAPTURE

GIB = 1 << 30
MIB = 1 << 20

# Issue 14 point 2: data centre, workstation and consumer GPUs vLLM runs on from Volta on.
ISSUE_GPUS = [
    "V100 16GB", "V100 32GB", "T4", "A2", "A10", "A10G", "A16", "A30", "A40", "A100 PCIe 40GB", "A100 SXM 40GB",
    "A100 PCIe 80GB", "A100 SXM 80GB", "A800", "H100 PCIe", "H100 SXM", "H100 NVL", "H800", "H20", "H200", "GH200",
    "L4", "L20", "L40", "L40S", "B200", "B300", "GB200",
    "RTX A4000", "RTX A4500", "RTX A5000", "RTX A5500", "RTX A6000", "RTX 4000 Ada", "RTX 5000 Ada", "RTX 6000 Ada",
    "RTX PRO 6000 Blackwell",
    "RTX 3060", "RTX 3060 Ti", "RTX 3070", "RTX 3070 Ti", "RTX 3080", "RTX 3080 Ti", "RTX 3090", "RTX 3090 Ti",
    "RTX 4060 Ti", "RTX 4070", "RTX 4070 Ti", "RTX 4080", "RTX 4090",
    "RTX 5060 Ti", "RTX 5070", "RTX 5070 Ti", "RTX 5080", "RTX 5090",
]

# vllm-wizard 0.2.0 hardware/detect.py get_gpu_by_name: the 37 names its users type.
SEED_NAMES = [
    "rtx 4090", "rtx 4080", "rtx 4070 ti", "rtx 4070", "rtx 3090 ti", "rtx 3090", "rtx 3080 ti", "rtx 3080",
    "rtx 3070 ti", "rtx 3070", "rtx 3060 ti", "rtx 3060", "rtx a6000", "rtx a5000", "rtx a4000",
    "a100 80gb", "a100 40gb", "a100", "h100 80gb", "h100", "h200", "l40s", "l40", "l4", "a10g", "a10",
    "v100 32gb", "v100 16gb", "v100", "t4", "p100 16gb", "p100",
    "m1 max", "m1 ultra", "m2 max", "m2 ultra", "m3 max",
]

FACTS = ("memory_total_bytes", "memory_bandwidth_bytes_per_second", "bf16_tflops", "fp8_tflops",
         "nvlink_bidirectional_bandwidth_bytes_per_second", "pcie", "sm_count")


@pytest.mark.parametrize("name", ISSUE_GPUS)
def test_every_gpu_of_the_issue_resolves(name):
    spec = lookup_gpu(name)
    assert spec.vllm_supported and spec.cc_tuple >= (7, 0)
    assert spec.memory_total_bytes > 4 * GIB and spec.memory_bandwidth_bytes_per_second and spec.bf16_tflops


def test_every_seed_name_resolves():
    assert len(SEED_NAMES) == 37
    resolved = {name: lookup_gpu(name) for name in SEED_NAMES}
    assert resolved["v100 32gb"].memory_total_bytes == 32510 * MIB
    assert resolved["p100"].vllm_supported is False and "7.0" in resolved["p100"].unsupported_reason
    assert resolved["m2 ultra"].vllm_supported is False and "CUDA" in resolved["m2 ultra"].unsupported_reason


def test_every_fact_names_its_source_and_every_source_key_is_defined():
    keys = source_keys()
    for spec in list_gpus():
        assert spec.sources.get("memory_total_bytes"), spec.name
        if not spec.vllm_supported and spec.compute_capability is None:
            continue  # Apple silicon: only the seed's memory figure
        for fact in FACTS:
            assert spec.sources.get(fact), (spec.name, fact)
        for text in spec.sources.values():
            key = re.match(r"[A-Z][A-Z0-9-]*", text)
            assert key is None or key.group(0) in keys or key.group(0).split("-")[0] in keys, (spec.name, text)
        if spec.memory_is_estimate:  # a derived total says how it was derived
            assert "EST" in spec.sources["memory_total_bytes"] or "same" in spec.sources["memory_total_bytes"]


def test_measured_totals_are_kept_and_estimates_flagged():
    assert lookup_gpu("H100").memory_total_bytes == 85017493504 and not lookup_gpu("H100").memory_is_estimate
    assert lookup_gpu("L4").memory_total_bytes == 23612293120
    assert lookup_gpu("RTX 3070").memory_is_estimate and lookup_gpu("GB200").memory_is_estimate
    # an estimate sits below nvidia-smi's total (the reserve is never negative)
    for spec in list_gpus():
        if spec.memory_total_nvidia_smi_mib:
            assert spec.memory_total_bytes < spec.memory_total_nvidia_smi_mib * MIB, spec.name


def test_perf_fields_for_the_performance_model():
    h100 = lookup_gpu("H100 SXM")
    assert (h100.memory_bandwidth_bytes_per_second, h100.bf16_tflops, h100.fp8_tflops) == (3.35e12, 989, 1979)
    assert h100.nvlink_bidirectional_bandwidth_bytes_per_second == 900e9 and h100.pcie_generation == 5
    assert h100.pcie_unidirectional_bandwidth_bytes_per_second == 64e9 and h100.sm_count == 132
    assert lookup_gpu("L4").nvlink_bidirectional_bandwidth_bytes_per_second is None
    assert lookup_gpu("A100").fp8_tflops is None and lookup_gpu("RTX 4090").fp8_tflops == 330


def test_names_nvidia_smi_prints_in_the_captures_resolve():
    names = set()
    for xml in CAPTURES.glob("*/nvidia-smi-q-x.xml"):
        names |= set(re.findall(r"<product_name>([^<]+)</product_name>", xml.read_text()))
    names |= {d["name"] for d in json.loads((H100_CAPTURE / "nvml.json").read_text())["devices"]}
    assert {"NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"} <= names
    assert all(lookup_gpu(n) for n in names)
