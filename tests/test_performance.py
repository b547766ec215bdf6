"""Roofline performance model: hand-computed Llama-3.1-8B on one H100, and the model's first principles."""

from __future__ import annotations

import math

import pytest

from planner_service.api import default_resolver, run_plan
from planner_service.engine.models import HardwareOptions, Interconnect, ModelOptions, PlanRequest, WorkloadOptions
from planner_service.engine.performance import (
    ModelShape,
    PerfInputs,
    Roofline,
    estimate_performance,
    expected_experts_fraction,
    matrix_efficiency,
)
from planner_service.engine.pipeline import complete_plan

H100_BANDWIDTH = 3.35e12  # spec-sheet bytes/s (H100 SXM 80GB HBM3)
H100_BF16 = 989e12  # spec-sheet dense bf16 FLOP/s
LLAMA_8B_WEIGHTS = 16_060_522_496  # bytes: 8,030,261,248 params x 2 (bf16)
LLAMA_8B_PARAMS = 8_030_261_248
LLAMA_8B_KV_PER_TOKEN = 2 * 8 * 128 * 2 * 32  # K+V x 8 KV heads x head_dim 128 x 2 bytes x 32 layers = 131,072
LLAMA_8B_SHAPE = ModelShape(num_layers=32, hidden_size=4096, num_attention_heads=32, head_dim=128)


def llama8b_h100(**changes) -> PerfInputs:
    base = PerfInputs(
        memory_bandwidth_bytes_per_second=H100_BANDWIDTH,
        bf16_flops_per_second=H100_BF16,
        fp8_flops_per_second=1979e12,
        tensor_parallel_size=1,
        pipeline_parallel_size=1,
        weights_bytes_per_rank=LLAMA_8B_WEIGHTS,
        kv_bytes_per_token_per_rank=LLAMA_8B_KV_PER_TOKEN,
        num_params=LLAMA_8B_PARAMS,
        max_num_seqs=1024,
        max_num_batched_tokens=8192,
        kv_cache_tokens=429_696,
        prompt_tokens=1024,
        gen_tokens=256,
        concurrency=1,
        shape=LLAMA_8B_SHAPE,
    )
    return base.model_copy(update=changes)


def test_llama8b_h100_concurrency_1_by_hand():
    perf = estimate_performance(llama8b_h100())
    overhead = 0.3e-3  # scheduler + sampler per step (CUDA graphs)

    # Best case: weights stream at the large-copy efficiency (3022 of 3350 GB/s = 0.90), the KV of the
    # one running request (prompt 1024 + half of 256 generated = 1152 tokens) at 0.93.
    weights_best = LLAMA_8B_WEIGHTS / (H100_BANDWIDTH * 0.90)  # 5.327 ms
    kv_best = 1152 * LLAMA_8B_KV_PER_TOKEN / (H100_BANDWIDTH * 0.93)  # 0.048 ms
    assert perf.itl_seconds.low == pytest.approx(weights_best + kv_best + overhead, rel=1e-3)  # ~5.68 ms

    # Expected: the average weight matrix (16.06 GB / (32 layers x 4 matrices) = 125 MB) streams at
    # 0.650 + 0.233 x ln(125.5 MB / 117.4 MB) / ln(4) = 0.661 of spec (between the measured 4096x14336
    # and 8192x28672 matmuls at M=1). At concurrency 1 ITL ~ weights_bytes / effective_bandwidth.
    efficiency = 0.650 + (0.883 - 0.650) * math.log((LLAMA_8B_WEIGHTS / 128) / (4096 * 14336 * 2)) / math.log(4)
    assert efficiency == pytest.approx(0.661, abs=1e-3)
    weights_expected = LLAMA_8B_WEIGHTS / (H100_BANDWIDTH * efficiency)  # 7.25 ms
    # Chunked prefill spreads this request's 1024 prompt tokens over its 256 steps: 4 tokens/step whose
    # KV is written (4 x 128 KiB), read at the measured decode-attention efficiency 0.91.
    kv_expected = (1152 + 4) * LLAMA_8B_KV_PER_TOKEN / (H100_BANDWIDTH * 0.91)
    itl_expected = weights_expected + kv_expected + overhead  # ~7.60 ms
    assert perf.itl_seconds.expected == pytest.approx(itl_expected, rel=1e-3)
    assert perf.decode_tokens_per_second_per_request.expected == pytest.approx(1 / itl_expected, rel=1e-3)  # ~132

    # Prefill of the 1024-token prompt alone is compute-bound: 2 FLOPs x 8.03e9 params x 1024 tokens plus
    # attention 4 x 32 heads x 128 x 32 layers x 1024 queries x 512 keys on average, at 0.80 of peak.
    flops = 2 * LLAMA_8B_PARAMS * 1024 + 4 * 32 * 128 * 32 * 1024 * 512
    ttft_best = flops / (H100_BF16 * 0.80) + overhead  # ~21.4 ms
    assert perf.ttft_seconds.low == pytest.approx(ttft_best, rel=1e-3)
    assert perf.prefill_tokens_per_second.high == pytest.approx(1024 / ttft_best, rel=1e-3)
    assert perf.concurrency == 1


def test_ridge_point_matches_calibration():
    # Weights stream in ~7.25 ms; each token costs 2 x 8.03e9 FLOPs at 0.75 x 989 TFLOP/s = 21.6 us, so
    # the linears turn compute-bound at ~335 tokens: between M=256 and M=512, as measured on the H100.
    ridge = estimate_performance(llama8b_h100()).memory_bound_until_concurrency
    by_hand = (LLAMA_8B_WEIGHTS / (H100_BANDWIDTH * 0.6611)) / (2 * LLAMA_8B_PARAMS / (H100_BF16 * 0.75))
    assert ridge == pytest.approx(by_hand, abs=2)
    assert 256 < ridge < 512


def test_ranges_are_ordered_and_concurrency_trades_latency_for_throughput():
    one = estimate_performance(llama8b_h100())
    many = estimate_performance(llama8b_h100(concurrency=64))
    for perf in (one, many):
        for r in (perf.itl_seconds, perf.ttft_seconds, perf.decode_tokens_per_second_aggregate,
                  perf.decode_tokens_per_second_per_request, perf.prefill_tokens_per_second):
            assert r.low <= r.expected <= r.high
    assert many.itl_seconds.expected > one.itl_seconds.expected
    assert many.decode_tokens_per_second_aggregate.expected > 10 * one.decode_tokens_per_second_aggregate.expected


def test_batch_is_capped_by_max_num_seqs_and_kv_capacity():
    capped = estimate_performance(llama8b_h100(concurrency=500, max_num_seqs=128))
    assert capped.concurrency == 128
    # 10,000 KV tokens hold 7 requests of 1024 + 256 tokens.
    kv_bound = estimate_performance(llama8b_h100(concurrency=500, kv_cache_tokens=10_000))
    assert kv_bound.concurrency == 7
    assert any("queue" in note for note in kv_bound.assumptions)


def test_quantized_weights_move_fewer_bytes():
    bf16 = estimate_performance(llama8b_h100())
    fp8 = estimate_performance(llama8b_h100(weights_bytes_per_rank=LLAMA_8B_WEIGHTS // 2, fp8_compute=True))
    # Half the bytes, but the smaller matrices stream less efficiently (62.7 MB each: 0.50 vs 0.66 of spec).
    assert fp8.itl_seconds.expected < 0.7 * bf16.itl_seconds.expected
    assert fp8.itl_seconds.low < 0.55 * bf16.itl_seconds.low  # at the copy efficiency only bytes matter
    assert fp8.ttft_seconds.low < bf16.ttft_seconds.low  # fp8 tensor cores


def test_tensor_parallel_all_reduce_depends_on_interconnect():
    common = dict(tensor_parallel_size=2, weights_bytes_per_rank=LLAMA_8B_WEIGHTS // 2, concurrency=32)
    nvlink = estimate_performance(llama8b_h100(interconnect=Interconnect.NVLINK, **common))
    pcie = estimate_performance(llama8b_h100(interconnect=Interconnect.PCIE, **common))
    # 2 all-reduces x 32 layers: 64 x (8 us + 32 x 4096 x 2 B / 360 GB/s) on NVLink = 0.56 ms,
    # 64 x (25 us + 262 KB / 25 GB/s) = 2.27 ms on PCIe: 1.7 ms more per step.
    assert pcie.itl_seconds.low - nvlink.itl_seconds.low == pytest.approx(
        64 * ((25e-6 + 32 * 4096 * 2 / 25e9) - (8e-6 + 32 * 4096 * 2 / 360e9)), rel=1e-6
    )


def test_moe_reads_only_touched_experts():
    assert expected_experts_fraction(8, 128, 1) == pytest.approx(8 / 128)
    assert expected_experts_fraction(8, 128, 64) == pytest.approx(1 - (1 - 8 / 128) ** 64)
    assert expected_experts_fraction(0, 0, 5) == 1.0
    # Qwen3-30B-A3B-like: 48 layers, 128 experts, top-8; ~29.0e9 of 30.5e9 params are routed experts.
    shape = ModelShape(num_layers=48, hidden_size=2048, num_attention_heads=32, head_dim=128,
                       num_experts=128, experts_per_token=8, expert_params=28_991_029_248)
    moe = dict(weights_bytes_per_rank=61_064_245_248, num_params=30_532_122_624,
               num_active_params=3_300_000_000, shape=shape)
    single = estimate_performance(llama8b_h100(**moe))
    dense_bytes = 61_064_245_248 - 2 * 28_991_029_248
    touched = 2 * 28_991_029_248 * (8 / 128)
    assert single.itl_seconds.low == pytest.approx(
        (dense_bytes + touched) / (H100_BANDWIDTH * 0.90) + 1152 * LLAMA_8B_KV_PER_TOKEN / (H100_BANDWIDTH * 0.93)
        + 0.3e-3, rel=1e-3
    )
    # Without a stated active count it follows from the layout: 30.53e9 - 28.99e9 x (1 - 8/128) = 3.35e9.
    unstated = {**moe, "num_active_params": None}
    assert Roofline(llama8b_h100(**unstated)).active_params_per_rank == pytest.approx(
        30_532_122_624 - 28_991_029_248 * (1 - 8 / 128)
    )
    batched = estimate_performance(llama8b_h100(concurrency=64, **moe))
    assert batched.itl_seconds.low > 3 * single.itl_seconds.low  # 64 tokens touch ~98 % of experts


def test_matrix_efficiency_interpolates_measurements():
    assert matrix_efficiency(4096 * 4096 * 2) == pytest.approx(0.384)
    assert matrix_efficiency(8192 * 28672 * 2) == pytest.approx(0.883)
    assert matrix_efficiency(1e12) == pytest.approx(0.883)
    assert matrix_efficiency(1) == pytest.approx(0.384)


def test_real_plan_gets_performance():
    request = PlanRequest(
        model=ModelOptions(model="meta-llama/Llama-3.1-8B-Instruct"),
        hardware=HardwareOptions(gpu="H100"),
        workload=WorkloadOptions(concurrency=16),
    )
    source = default_resolver().resolve(request.model)
    response = complete_plan(run_plan(request), request, source=source)
    perf = response.performance
    assert perf is not None and perf.concurrency == 16
    assert 80 < perf.decode_tokens_per_second_per_request.expected < 200
    assert not any("shape unknown" in note for note in perf.assumptions)  # attention FLOPs counted
    shapeless = complete_plan(run_plan(request), request).performance
    assert any("shape unknown" in note for note in shapeless.assumptions)
    assert shapeless.ttft_seconds.low < perf.ttft_seconds.low  # the attention FLOPs were left out


def test_failing_plan_has_no_performance():
    request = PlanRequest(
        model=ModelOptions(model="meta-llama/Llama-3.1-70B-Instruct"),
        hardware=HardwareOptions(gpu="H100", tensor_parallel_size=1),
    )
    response = complete_plan(run_plan(request), request)
    assert not response.feasibility.fits
    assert response.performance is None
    assert response.artifacts is not None  # still rendered, for inspection
