"""Recommendation rules: TP/PP, utilization, max_model_len, fp8 KV, quantization advice, MNS/MNBT.

Every plan goes through the real ``build_plan`` (or ``resolve_request``, the resolution it uses) on the
verified config.json fixtures; expectations are checked against the twin itself (``evaluate``), not
against hand-typed numbers.
"""

from __future__ import annotations

import math

import pytest

from helpers.engine import LLAMA, config, request, source
from planner_service.engine.architecture import parse_architecture
from planner_service.engine.memory import evaluate
from planner_service.engine.models import GIB, BatchingMode, WorkloadOptions
from planner_service.engine.plan import build_plan, twin_inputs
from planner_service.engine.profiles import resolve_profile
from planner_service.engine.recommend import resolve_request
from planner_service.engine.recommend_batching import resolve_batching
from planner_service.engine.recommend_memory import free_memory_bound
from planner_service.engine.recommend_parallel import pp_candidates, tp_candidates, valid_tp

QWEN2 = "Qwen/Qwen2-7B-Instruct"  # 28 heads, 4 KV heads: TP 3, 6 and 8 are invalid
SCOUT = "meta-llama/Llama-4-Scout-17B-16E-Instruct"


def plan(name: str = LLAMA, **kw):
    req = request(name, **kw)
    return build_plan(source(name), req), req


def note(response, setting: str):
    return next(e for e in response.explanations if e.setting == setting)


# --------------------------------------------------------------------------------------------------
# tensor / pipeline parallel
# --------------------------------------------------------------------------------------------------


def test_tp_candidates_are_divisor_valid_and_within_the_gpus():
    arch = parse_architecture(config(QWEN2))
    assert tp_candidates(arch, 1, 8) == [1, 2, 4]  # 8 does not divide 28 heads
    assert tp_candidates(arch, 1, 6) == [1, 2, 4]  # nor does 6
    assert tp_candidates(parse_architecture(config(LLAMA)), 1, 6) == [1, 2, 4]  # 32 heads: 6 is invalid too
    assert not valid_tp(arch, 3, 1) and valid_tp(arch, 4, 1)


@pytest.mark.parametrize("name,gpu,num_gpus", [
    (QWEN2, "T4", 6), (QWEN2, "L4", 8), (LLAMA, "RTX 4090", 4), ("Qwen/Qwen3-30B-A3B", "L40S", 4),
])
def test_recommended_tp_divides_the_heads_and_fits(name, gpu, num_gpus):
    r, _ = plan(name, hardware={"gpu": gpu, "num_gpus": num_gpus})
    arch = parse_architecture(config(name))
    c = r.config
    assert valid_tp(arch, c.tensor_parallel_size, c.pipeline_parallel_size)
    assert c.tensor_parallel_size * c.pipeline_parallel_size <= num_gpus
    assert r.feasibility.fits
    smaller = [t for t in tp_candidates(arch, 1, num_gpus) if t < c.tensor_parallel_size]
    for tp in smaller:  # every smaller valid size really falls short of the same target
        worse = resolve_request(config(name), request(name, hardware={"gpu": gpu, "tensor_parallel_size": tp},
                                                      model={"max_model_len": c.max_model_len,
                                                             "kv_cache_dtype": c.kv_cache_dtype}))
        assert not worse.useful


def _capacities(gpu: str, length: int) -> tuple[int, int]:
    """Requests of 1280 tokens a TP-2 KV cache holds in bf16 and in fp8 (from the twin)."""
    caps = []
    for kv in ("auto", "fp8"):
        r = resolve_request(config(LLAMA), request(model={"max_model_len": length, "kv_cache_dtype": kv},
                                                   hardware={"gpu": gpu, "tensor_parallel_size": 2}))
        caps.append(r.workload_capacity)
    return caps[0], caps[1]


def test_nvlink_grows_tp_while_pcie_prefers_fp8_kv_at_tp2():
    bf16, fp8 = _capacities("L4", 8192)
    assert bf16 < fp8
    c = (bf16 + fp8) // 2  # TP 2 holds it only with fp8 KV
    common = {"model": {"max_model_len": 8192}, "workload": {"concurrency": c}}
    nv, _ = plan(hardware={"gpu": "L4", "num_gpus": 4, "interconnect": "nvlink"}, **common)
    pcie, _ = plan(hardware={"gpu": "L4", "num_gpus": 4, "interconnect": "pcie"}, **common)
    assert (nv.config.tensor_parallel_size, nv.config.kv_cache_dtype) == (4, "auto")
    assert (pcie.config.tensor_parallel_size, pcie.config.kv_cache_dtype) == (2, "fp8")
    assert "custom all-reduce" in note(pcie, "tensor_parallel_size").reason
    assert note(pcie, "kv_cache_dtype").source == "recommended"
    assert nv.feasibility.fits and pcie.feasibility.fits and not nv.fixes and not pcie.fixes


def test_tp_above_two_over_pcie_warns_about_custom_all_reduce():
    pcie, _ = plan(QWEN2, hardware={"gpu": "L4", "tensor_parallel_size": 4, "interconnect": "pcie"})
    nvlink, _ = plan(QWEN2, hardware={"gpu": "L4", "tensor_parallel_size": 4, "interconnect": "nvlink"})
    two, _ = plan(QWEN2, hardware={"gpu": "L4", "tensor_parallel_size": 2, "interconnect": "pcie"})
    assert any("custom all-reduce" in w for w in pcie.feasibility.warnings)
    assert not any("custom all-reduce" in w for w in nvlink.feasibility.warnings + two.feasibility.warnings)
    # without a stated interconnect the GPU type decides: L4 has no NVLink
    default, _ = plan(QWEN2, hardware={"gpu": "L4", "tensor_parallel_size": 4})
    assert any("custom all-reduce" in w for w in default.feasibility.warnings)


def test_pipeline_parallel_only_when_tp_alone_cannot_fit():
    # Scout (40 heads) on 6 x L40S: TP 6 is invalid and TP 4 cannot hold the weights.
    r, _ = plan(SCOUT, hardware={"gpu": "L40S", "num_gpus": 6})
    c = r.config
    assert r.feasibility.fits and c.pipeline_parallel_size > 1 and c.tensor_parallel_size * c.pipeline_parallel_size == 6
    assert note(r, "pipeline_parallel_size").source == "recommended"
    tp4, _ = plan(SCOUT, hardware={"gpu": "L40S", "tensor_parallel_size": 4})
    assert not tp4.feasibility.fits
    # when TP alone fits, no PP is recommended
    for name, gpu, n in ((LLAMA, "RTX 4090", 8), (QWEN2, "L4", 8), (LLAMA, "H100", 8)):
        ok, _ = plan(name, hardware={"gpu": gpu, "num_gpus": n})
        assert ok.config.pipeline_parallel_size == 1
    arch = parse_architecture(config(SCOUT))
    assert all(tp * pp > 4 and tp * pp <= 6 for tp, pp in pp_candidates(arch, 6, 4))


# --------------------------------------------------------------------------------------------------
# gpu_memory_utilization
# --------------------------------------------------------------------------------------------------


def test_utilization_never_exceeds_what_free_memory_allows():
    free = 50 * GIB
    r, _ = plan(model={"max_model_len": 8192}, hardware={"gpu": "H100", "free_memory_bytes": free})
    u = r.config.gpu_memory_utilization
    total = r.gpu.memory_total_bytes
    assert math.ceil(total * u) <= free and u == free_memory_bound(total, free)
    assert r.feasibility.fits and r.feasibility.per_gpu.budget_bytes <= free
    why = note(r, "gpu_memory_utilization")
    assert why.source == "recommended" and "--kv-cache-memory-bytes=" in why.reason
    assert any("--kv-cache-memory-bytes=" in w for w in r.feasibility.warnings)
    # the user's own value is evaluated as given: vLLM refuses, and the fixes name both alternatives
    mine, _ = plan(model={"max_model_len": 8192}, hardware={"gpu": "H100", "free_memory_bytes": free},
                   policy={"gpu_memory_utilization": 0.92})
    assert not mine.feasibility.fits and mine.feasibility.error.startswith("Free memory on device cuda:0 (50.00/")
    assert mine.config.tensor_parallel_size == 1  # more GPUs would not pass the check: the layout stays minimal
    kinds = [set(f.changes) for f in mine.fixes]
    assert {"policy.gpu_memory_utilization"} in kinds and {"engine.kv_cache_memory_bytes"} in kinds


def test_consumer_cards_are_capped_and_datacenter_cards_get_the_profile_default():
    consumer, _ = plan(model={"max_model_len": 8192}, hardware={"gpu": "RTX 4090"})
    datacenter, _ = plan(model={"max_model_len": 8192}, hardware={"gpu": "H100"})
    default = resolve_profile(None).default_gpu_memory_utilization
    assert consumer.config.gpu_memory_utilization == 0.90 < default
    assert "consumer" in note(consumer, "gpu_memory_utilization").reason
    assert datacenter.config.gpu_memory_utilization == default
    assert note(datacenter, "gpu_memory_utilization").source == "default"


# --------------------------------------------------------------------------------------------------
# max_model_len
# --------------------------------------------------------------------------------------------------


def test_max_model_len_is_the_largest_that_fits_when_the_derived_one_does_not():
    r, req = plan(hardware={"gpu": "RTX 4090", "tensor_parallel_size": 1})
    length = r.config.max_model_len
    assert r.feasibility.fits and length < r.model.derived_max_model_len
    assert note(r, "max_model_len").source == "recommended"
    i = twin_inputs(source(LLAMA), req, r)
    auto = evaluate(i.arch, i.gpu, i.settings.model_copy(update={"max_model_len": None}), i.profile)
    assert auto.max_model_len == length  # exactly the twin's auto-fit
    longer = evaluate(i.arch, i.gpu, i.settings.model_copy(update={"max_model_len": length + 16}), i.profile)
    assert not longer.fits


def test_derived_length_when_it_fits_and_auto_keeps_vllms_auto_fit():
    r, _ = plan()
    assert r.config.max_model_len == r.model.derived_max_model_len
    assert note(r, "max_model_len").source == "derived"
    auto, req = plan(model={"max_model_len": "auto"}, hardware={"gpu": "RTX 4090", "tensor_parallel_size": 1})
    i = twin_inputs(source(LLAMA), req, auto)
    fitted = evaluate(i.arch, i.gpu, i.settings.model_copy(update={"max_model_len": None}), i.profile)
    assert auto.feasibility.fits and auto.config.max_model_len == fitted.max_model_len < 131072
    assert auto.config.kv_cache_dtype == "auto"  # auto-fit is the user's choice: no KV pressure to relieve
    assert "auto-fit" in note(auto, "max_model_len").reason


def test_shortened_length_keeps_the_policy_headroom():
    r, req = plan(hardware={"gpu": "RTX 4090", "tensor_parallel_size": 1}, policy={"headroom_gb": 1})
    res = resolve_request(config(LLAMA), req)
    assert r.feasibility.fits and res.margin_bytes >= 0
    no_headroom, _ = plan(hardware={"gpu": "RTX 4090", "tensor_parallel_size": 1})
    assert r.config.max_model_len < no_headroom.config.max_model_len


# --------------------------------------------------------------------------------------------------
# kv_cache_dtype and quantization
# --------------------------------------------------------------------------------------------------


def test_fp8_kv_only_under_kv_pressure_and_only_on_cc_89_and_up():
    calm, _ = plan(hardware={"gpu": "H100", "num_gpus": 1})
    assert calm.config.kv_cache_dtype == "auto"
    caps = [resolve_request(config(LLAMA), request(model={"max_model_len": 8192, "kv_cache_dtype": kv},
                                                   hardware={"gpu": "H100", "tensor_parallel_size": 1})
                            ).workload_capacity for kv in ("auto", "fp8")]
    busy = {"model": {"max_model_len": 8192}, "workload": {"concurrency": (caps[0] + caps[1]) // 2}}
    h100, req = plan(hardware={"gpu": "H100", "num_gpus": 1}, **busy)  # bf16 holds too few: the pressure is real
    assert h100.config.kv_cache_dtype == "fp8" and note(h100, "kv_cache_dtype").source == "recommended"
    assert "pressure" in note(h100, "kv_cache_dtype").reason and not h100.fixes
    a100, _ = plan(hardware={"gpu": "A100", "num_gpus": 1}, **busy)  # sm 8.0: never fp8
    assert a100.config.kv_cache_dtype == "auto"
    assert all(f.changes.get("model.kv_cache_dtype") != "fp8" for f in a100.fixes)


def test_user_fp8_kv_on_an_old_gpu_is_evaluated_with_a_clear_warning():
    r, _ = plan(model={"max_model_len": 8192, "kv_cache_dtype": "fp8"}, hardware={"gpu": "A100"})
    assert r.config.kv_cache_dtype == "fp8"
    assert any("sm 8.0 < 8.9" in w and "fp8" in w for w in r.feasibility.warnings)
    ok, _ = plan(model={"max_model_len": 8192, "kv_cache_dtype": "fp8"}, hardware={"gpu": "H100"})
    assert not any("< 8.9" in w for w in ok.feasibility.warnings)


def test_quantization_advice_names_the_checkpoint_kind():
    t4, _ = plan(QWEN2, hardware={"gpu": "T4", "num_gpus": 1})  # sm 7.5: no online fp8
    assert not t4.feasibility.fits
    why = note(t4, "quantization").reason
    assert "AWQ" in why and "GPTQ" in why and "cannot quantize to AWQ/GPTQ on the fly" in why
    assert ">= 8.9" in why and "--quantization fp8" not in why
    l4, _ = plan("Qwen/Qwen3-30B-A3B", hardware={"gpu": "L4", "num_gpus": 1})  # sm 8.9: online fp8 works
    assert not l4.feasibility.fits
    assert "--quantization fp8" in note(l4, "quantization").reason
    fits, _ = plan()
    assert note(fits, "quantization").value == "none" and "AWQ" not in note(fits, "quantization").reason


# --------------------------------------------------------------------------------------------------
# max_num_seqs / max_num_batched_tokens
# --------------------------------------------------------------------------------------------------


def test_batching_modes_set_mns_and_mnbt():
    defaults = resolve_profile(None).batch_defaults("H100 SXM", 85017493504)
    wl = WorkloadOptions(prompt_tokens=6000, gen_tokens=200, concurrency=12)
    thr = resolve_batching(BatchingMode.THROUGHPUT, defaults, wl, None, None, kv_capacity=300)
    assert thr.max_num_batched_tokens >= 8192 and thr.max_num_seqs == 300
    lat = resolve_batching(BatchingMode.LATENCY, defaults, wl, None, None, kv_capacity=300)
    assert (lat.max_num_batched_tokens, lat.max_num_seqs) == (6144, 12)  # the whole prompt in one step
    small = resolve_batching(BatchingMode.LATENCY, defaults, WorkloadOptions(prompt_tokens=500, concurrency=4),
                             None, None, None)
    assert (small.max_num_batched_tokens, small.max_num_seqs) == (2048, 4)
    bal = resolve_batching(BatchingMode.BALANCED, defaults, wl, None, None, kv_capacity=300)
    assert (bal.max_num_batched_tokens, bal.max_num_seqs) == (defaults.max_num_batched_tokens, defaults.max_num_seqs)
    user = resolve_batching(BatchingMode.THROUGHPUT, defaults, wl, 64, 4096, kv_capacity=300)
    assert (user.max_num_batched_tokens, user.max_num_seqs) == (4096, 64)
    assert all(e.source == "user" for e in user.explanations)


def test_throughput_mns_never_far_above_kv_capacity_and_the_twin_is_re_run():
    r, req = plan(model={"max_model_len": 8192}, hardware={"gpu": "RTX 4090", "tensor_parallel_size": 1},
                  workload={"batching_mode": "throughput", "concurrency": 500})
    res = resolve_request(config(LLAMA), req)
    assert r.config.max_num_batched_tokens >= 8192
    assert r.config.max_num_seqs <= res.workload_capacity + 1
    # the reported memory is the twin's at the final MNS/MNBT (activation peak included)
    i = twin_inputs(source(LLAMA), req, r)
    again = evaluate(i.arch, i.gpu, i.settings, i.profile)
    assert again.binding.activation_peak_bytes == r.feasibility.per_gpu.activation_peak_bytes
    assert again.num_blocks == r.feasibility.num_gpu_blocks
    latency, _ = plan(model={"max_model_len": 8192}, hardware={"gpu": "H100"},
                      workload={"batching_mode": "latency", "concurrency": 8})
    assert (latency.config.max_num_seqs, latency.config.max_num_batched_tokens) == (8, 2048)
    assert latency.feasibility.per_gpu.activation_peak_bytes < r.feasibility.per_gpu.activation_peak_bytes * 4
    balanced, _ = plan()
    assert (balanced.config.max_num_batched_tokens, balanced.config.max_num_seqs) == (8192, 1024)


def test_every_setting_is_explained():
    r, _ = plan(hardware={"gpu": "RTX 4090", "num_gpus": 2})
    settings = {e.setting for e in r.explanations}
    assert {"tensor_parallel_size", "pipeline_parallel_size", "kv_cache_dtype", "quantization", "max_model_len",
            "gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens"} <= settings
    assert all(e.reason for e in r.explanations)


# --------------------------------------------------------------------------------------------------
# how vLLM is installed (0.10-0.11 only)
# --------------------------------------------------------------------------------------------------


def test_install_is_explained_where_it_changes_the_sampler():
    default, _ = plan(QWEN2, hardware={"gpu": "L40S"}, engine={"vllm_version": "0.10.1"})
    row = note(default, "vllm_install")
    assert (row.value, row.source) == ("pip", "default") and "--vllm-install image" in row.reason
    image, _ = plan(QWEN2, hardware={"gpu": "L40S"}, engine={"vllm_version": "0.10.1", "vllm_install": "image"})
    row = note(image, "vllm_install")
    assert (row.value, row.source) == ("image", "user") and row.reason.endswith("samples with FlashInfer")
    assert image.feasibility.per_gpu.activation_peak_bytes < default.feasibility.per_gpu.activation_peak_bytes
    volta, _ = plan(QWEN2, hardware={"gpu": "V100 32GB"}, engine={"vllm_version": "0.10.1", "vllm_install": "image"})
    assert "compute capability 7.5" in note(volta, "vllm_install").reason
    later, _ = plan(QWEN2, hardware={"gpu": "L40S"}, engine={"vllm_version": "0.12.0", "vllm_install": "image"})
    assert all(e.setting != "vllm_install" for e in later.explanations)  # both installs sort from 0.12
