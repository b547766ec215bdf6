"""GPU catalog lookups and vLLM version profiles."""

from __future__ import annotations

import pytest

from planner_service.engine.errors import GpuNotFoundError, UnsupportedVersionError
from planner_service.engine.gpus import list_gpus, lookup_gpu
from planner_service.engine.profiles import CURRENT_PROFILE, PROFILES, resolve_profile

GIB = 1 << 30


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"), ("H100", "H100 SXM"), ("h100-sxm", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"), ("H100 NVL", "H100 NVL"), ("A100-80GB", "A100 SXM 80GB"),
        ("NVIDIA A100-SXM4-40GB", "A100 SXM 40GB"), ("NVIDIA A100 80GB PCIe", "A100 PCIe 80GB"),
        ("rtx 4090", "RTX 4090"), ("NVIDIA GeForce RTX 3090", "RTX 3090"), ("Tesla T4", "T4"), ("a10g", "A10G"),
        ("NVIDIA L40S", "L40S"), ("NVIDIA RTX A6000", "RTX A6000"), ("NVIDIA H200", "H200"), ("GH200", "GH200"),
        ("NVIDIA B200", "B200"), ("RTX-5090", "RTX 5090"), ("NVIDIA L4", "L4"), ("NVIDIA A10", "A10"),
    ],
)
def test_lookup_accepts_nvidia_smi_names_and_aliases(name, expected):
    assert lookup_gpu(name).name == expected


def test_memory_is_the_cuda_total_not_the_marketing_size():
    h100 = lookup_gpu("NVIDIA H100 80GB HBM3")
    assert h100.memory_total_bytes == 85017493504  # 81079 MiB; nvidia-smi says 81559 MiB
    assert lookup_gpu("H200").memory_total_bytes == 150109880320
    assert round(lookup_gpu("L4").memory_total_bytes / GIB, 2) == 21.99


def test_capabilities():
    assert lookup_gpu("H100").supports_fp8 and lookup_gpu("L4").supports_fp8
    assert not lookup_gpu("A100").supports_fp8 and lookup_gpu("A100").fp8_tflops is None
    assert lookup_gpu("RTX 4090").consumer and not lookup_gpu("H100").consumer
    assert lookup_gpu("H100").nvlink and not lookup_gpu("L4").nvlink
    assert not lookup_gpu("T4").supports_bf16
    names = {g.name for g in list_gpus()}
    assert {"T4", "A10G", "A10", "L4", "L40S", "RTX A6000", "A100 PCIe 40GB", "A100 SXM 80GB", "H100 PCIe",
            "H100 SXM", "H100 NVL", "H200", "GH200", "B200", "RTX 3090", "RTX 4090", "RTX 5090"} <= names


def test_unknown_gpu_lists_close_matches():
    with pytest.raises(GpuNotFoundError) as err:
        lookup_gpu("H1000")
    assert "H100" in str(err.value)
    with pytest.raises(GpuNotFoundError):
        lookup_gpu("Voodoo 5")


def test_profiles_by_version():
    assert resolve_profile(None) is CURRENT_PROFILE and CURRENT_PROFILE.name == "vllm-0.30-0.33"
    assert resolve_profile("0.33.0") is CURRENT_PROFILE and resolve_profile("0.30") is CURRENT_PROFILE
    assert resolve_profile("0.33.0").default_gpu_memory_utilization == 0.92
    old = resolve_profile("0.10.1")
    assert old.name == "vllm-0.10.0-0.10.1" and old.default_gpu_memory_utilization == 0.90
    assert not old.subtract_cuda_graph_estimate
    assert resolve_profile("0.10.1.1") is old and resolve_profile("0.10.2").name == "vllm-0.10.2"
    assert resolve_profile("0.19.1").name == "vllm-0.18-0.19" and not resolve_profile("0.19.1").subtract_cuda_graph_estimate
    # the boundaries read from the released wheels
    assert resolve_profile("0.20").subtract_cuda_graph_estimate and resolve_profile("0.20").kv_tokens_rule == "blocks_per_group"
    assert resolve_profile("0.21").kv_tokens_rule == "concurrency"
    assert "models's" in resolve_profile("0.21").not_fit_message and "model's" in resolve_profile("0.22").not_fit_message
    assert resolve_profile("0.25.1").sliding_window_rule == "mnbt" and resolve_profile("0.26").sliding_window_rule == "in_flight"
    assert not resolve_profile("0.28").fit_check_reserves_null_block and CURRENT_PROFILE.fit_check_reserves_null_block
    covered = sorted(p.min_version for p in PROFILES)
    assert covered[0] == (0, 8, 0) and max(p.max_version for p in PROFILES) == (0, 34, 0)
    # 0.8-0.9 (V1 engine, benchmarks of 0.9.2 exist) are answered with 0.10.0's rules, not refused
    assert resolve_profile("0.9.2").name == "vllm-0.8-0.9 (as 0.10.0)"
    assert resolve_profile("0.9.2").model_dump(exclude={"name", "min_version", "max_version", "representative_version"}) \
        == resolve_profile("0.10.0").model_dump(exclude={"name", "min_version", "max_version", "representative_version"})
    for a, b in zip(sorted(PROFILES, key=lambda p: p.min_version), sorted(PROFILES, key=lambda p: p.min_version)[1:]):
        assert a.max_version == b.min_version  # no gaps, no overlaps
    for bad in ("0.7.3", "0.34", "1.0"):
        with pytest.raises(UnsupportedVersionError) as err:
            resolve_profile(bad)
        assert err.value.violations[0].field == "engine.vllm_version"
    with pytest.raises(UnsupportedVersionError):
        resolve_profile("latest")


def test_batch_defaults_by_gpu():
    new, old = resolve_profile(None), resolve_profile("0.11")
    h100, a100, b200, l4 = (lookup_gpu(n) for n in ("H100", "A100", "B200", "L4"))
    assert new.batch_defaults(h100.name, h100.memory_total_bytes).max_num_batched_tokens == 8192
    assert new.batch_defaults(a100.name, a100.memory_total_bytes).max_num_batched_tokens == 2048
    assert new.batch_defaults(b200.name, b200.memory_total_bytes).max_num_batched_tokens == 16384
    assert old.batch_defaults(b200.name, b200.memory_total_bytes).max_num_batched_tokens == 8192
    assert resolve_profile("0.27").batch_defaults(b200.name, b200.memory_total_bytes).max_num_batched_tokens == 8192
    assert new.batch_defaults(l4.name, l4.memory_total_bytes).max_num_seqs == 256
    assert new.in_flight_tokens(8192) == 16384 and old.in_flight_tokens(8192) == 8192


def test_serve_flags_per_profile():
    new, old = resolve_profile(None), resolve_profile("0.11")
    assert len(new.serve_flags) == 461
    assert "--kv-cache-memory-bytes" in new.serve_flags and "--max-model-len" in new.serve_flags
    assert "--swap-space" not in new.serve_flags and "--swap-space" in old.serve_flags
