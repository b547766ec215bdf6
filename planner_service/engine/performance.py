"""``plan``'s performance: the steady state of a closed loop at the workload's concurrency (pure).

The same step model as ``bench`` (``simulation.step_cost``) evaluated analytically instead of step by
step: ``B = min(concurrency, max_num_seqs, requests the KV cache holds)`` requests decode together at an
average context of ``prompt + gen/2``; every completion starts a new prompt, so per cycle of ``gen``
steps ``B`` prompts are prefilled, in chunks of what the token budget leaves
(``max_num_batched_tokens - B``), each chunk riding in a step with the decodes (chunked prefill).
Mean ITL (= mean TPOT) is the average step; the low end is a decode-only step. TTFT is the wait for the
running step, the prompt's chunks and the API server's ingestion. ``bench`` run closed-loop at the same
concurrency must agree (tests/test_performance.py checks it).

Ranges: ``low``/``high`` are the expected value divided/multiplied by ``1 + p90 |error|`` of the twin on
the published fixed-rate runs (benchmarks/perf_accuracy.py), so they say how far real runs stray from it.
"""

from __future__ import annotations

import math

from planner_service.engine.models import Performance, Range
from planner_service.engine.simulation import frontend
from planner_service.engine.simulation.step_cost import (
    EngineShape, StepCostModel, StepWork, matmul_efficiency,
)

# p90 of |predicted/reported - 1| of the fixed-rate runs (the steady loads this view describes) in
# benchmarks/perf_accuracy.py on shared/calibration/vllm-benchmarks.json: TPOT 18.7 %, TTFT 30.7 % (2026-12-02).
ITL_ERROR_BAND = 0.19
TTFT_ERROR_BAND = 0.31
_MAX_RIDGE_SEARCH = 1 << 20


def _ctx_work(requests: float, context: float, window: int) -> tuple[float, float]:
    sliding = min(context, window) if window else context
    return requests * context, requests * sliding


def decode_batch(concurrency: int, max_num_seqs: int, kv_cache_tokens: int, tokens_per_request: int) -> int:
    """Requests decoding together: the concurrency, capped by max_num_seqs and by what the KV cache holds."""
    kv_fit = max(1, kv_cache_tokens // tokens_per_request) if kv_cache_tokens else concurrency
    return max(1, min(concurrency, max_num_seqs, kv_fit))


def memory_bound_until(cost: StepCostModel) -> int:
    """Largest decode batch whose linear layers are still limited by weight streaming."""
    stage = max(cost.shape.stages, key=lambda s: s.dense_weight_bytes)
    hw = cost.shape.hardware
    fp8 = stage.fp8_compute and hw.fp8_flops_per_second is not None
    peak = hw.fp8_flops_per_second if fp8 else hw.bf16_flops_per_second
    assert peak is not None
    stream = stage.dense_weight_bytes / (hw.memory_bandwidth_bytes_per_second * hw.weight_stream_efficiency)

    def memory_bound(batch: int) -> bool:
        return stream >= 2 * stage.dense_params * batch / (peak * matmul_efficiency(batch, fp8))

    if not memory_bound(1):
        return 0
    lo, hi = 1, 2
    while memory_bound(hi):
        lo, hi = hi, hi * 2
        if hi > _MAX_RIDGE_SEARCH:
            return _MAX_RIDGE_SEARCH
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if memory_bound(mid) else (lo, mid)
    return lo


def steady_state(cost: StepCostModel, *, batch: int, prompt_tokens: int, gen_tokens: int,
                 max_num_batched_tokens: int, window: int = 0) -> tuple[float, float, float, int]:
    """(decode-only step s, mean step s, one prompt's prefill s, prefill chunks per prompt)."""
    context = prompt_tokens + gen_tokens / 2
    decode_ctx, decode_sliding = _ctx_work(batch, context, window)
    decode_only = cost.step_seconds(StepWork(batch, decode_ctx, decode_sliding, sampled_requests=batch))
    room = max(1, max_num_batched_tokens - (batch - 1))
    chunks = math.ceil(prompt_tokens / room)
    chunk = prompt_tokens / chunks
    # Prefill steps per cycle of gen_tokens decode steps: every request's prompt, chunk by chunk.
    mixed_steps = min(gen_tokens, batch * chunks)
    prefill_per_step = batch * prompt_tokens / mixed_steps
    others = max(0, batch - 1)
    o_ctx, o_sliding = _ctx_work(others, context, window)
    mid = prompt_tokens / 2
    sliding_mid = min(mid, window) if window else mid
    mixed = cost.step_seconds(StepWork(
        others, o_ctx, o_sliding, prefill_tokens=round(prefill_per_step),
        prefill_pairs=prefill_per_step * mid, prefill_sliding_pairs=prefill_per_step * sliding_mid,
        prefill_context_tokens=prefill_per_step * (chunks - 1) / 2,  # chunk i follows i earlier chunks
        prefill_requests=max(1, round(prefill_per_step / chunk)), sampled_requests=batch,
    ))
    mean = (decode_only * (gen_tokens - mixed_steps) + mixed * mixed_steps) / gen_tokens
    alone = 0.0
    for i in range(chunks):  # one prompt alone: its chunks back to back
        done = i * chunk
        alone += cost.step_seconds(StepWork(
            0, prefill_tokens=round(chunk), prefill_pairs=chunk * (done + chunk / 2),
            prefill_sliding_pairs=chunk * min(done + chunk / 2, window or math.inf),
            prefill_context_tokens=done, prefill_requests=1, sampled_requests=1 if i == chunks - 1 else 0,
        ))
    return decode_only, mean, alone, chunks


def estimate_performance(shape: EngineShape, *, max_num_seqs: int, max_num_batched_tokens: int,
                         kv_cache_tokens: int, prompt_tokens: int, gen_tokens: int, concurrency: int,
                         sliding_window: int = 0, data_parallel_size: int = 1) -> Performance:
    """Steady state of one engine at ``concurrency``; aggregate throughput over ``data_parallel_size`` ranks."""
    cost = StepCostModel(shape)
    dp = data_parallel_size
    batch = decode_batch(concurrency, max_num_seqs, kv_cache_tokens, prompt_tokens + gen_tokens)
    decode_only, mean, prefill_alone, chunks = steady_state(
        cost, batch=batch, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens,
        max_num_batched_tokens=max_num_batched_tokens, window=sliding_window,
    )
    api = (frontend.REQUEST_LATENCY_SECONDS["completions"] + frontend.REQUEST_CPU_SECONDS["completions"]
           + frontend.TOKENIZE_SECONDS_PER_TOKEN * prompt_tokens)
    # A prompt arriving under load waits for the running step, then shares its chunks' steps with the decodes.
    under_load = (mean - decode_only) * gen_tokens / max(1, min(gen_tokens, batch * chunks)) * chunks
    ttft = api + (decode_only / 2 if batch > 1 else 0.0) + max(prefill_alone, under_load)
    band_itl, band_ttft = 1 + ITL_ERROR_BAND, 1 + TTFT_ERROR_BAND
    return Performance(
        decode_tokens_per_second_per_request=Range(low=1 / (mean * band_itl), expected=1 / mean, high=1 / decode_only),
        decode_tokens_per_second_aggregate=Range(
            low=dp * batch / (mean * band_itl), expected=dp * batch / mean, high=dp * batch / decode_only
        ),
        prefill_tokens_per_second=Range(
            low=prompt_tokens / (prefill_alone * band_ttft), expected=prompt_tokens / prefill_alone,
            high=prompt_tokens / prefill_alone * band_ttft,
        ),
        ttft_seconds=Range(low=ttft / band_ttft, expected=ttft, high=ttft * band_ttft),
        itl_seconds=Range(low=decode_only, expected=mean, high=mean * band_itl),
        memory_bound_until_concurrency=memory_bound_until(cost),
        concurrency=batch * dp,
        assumptions=_assumptions(shape, batch, concurrency, prompt_tokens, gen_tokens, chunks)
        + ([f"data parallel {dp}: each rank runs {batch} requests; aggregate throughput over the ranks"] if dp > 1 else []),
    )


def _assumptions(shape: EngineShape, batch: int, concurrency: int, prompt: int, gen: int, chunks: int) -> list[str]:
    notes = [
        f"steady state of a closed loop: {batch} requests decode together at an average context of "
        f"{prompt + gen / 2:.0f} tokens; each completion starts a new {prompt}-token prompt, prefilled in "
        f"{chunks} chunk(s) inside decode steps (chunked prefill)",
        "the same step model as `vllm-planner bench` (weights streamed once per step, only touched MoE experts, "
        "KV reads, FLOPs, TP all-reduce, per-kernel launch and per-step CPU costs)",
        f"low/high: the expected value widened by the p90 error on published runs (ITL {ITL_ERROR_BAND:.0%}, "
        f"TTFT {TTFT_ERROR_BAND:.0%}); low ITL is a decode-only step",
        "TTFT includes the API server's ingestion on /v1/completions; use `bench` for bursts and request rates",
        "async scheduling (CPU overlaps GPU)" if shape.async_scheduling else "synchronous scheduling (CPU adds to each step)",
    ]
    if batch < concurrency:
        notes.append(f"only {batch} of {concurrency} requests run at once (max_num_seqs or KV capacity); the rest queue")
    if shape.tensor_parallel_size > 1:
        hw = shape.hardware
        notes.append(
            f"TP {shape.tensor_parallel_size} all-reduce twice per layer over {hw.interconnect}: "
            f"{hw.allreduce_latency_seconds * 1e6:.0f} us + {hw.allreduce_bus_bytes_per_second / 1e9:.0f} GB/s"
        )
    if len(shape.stages) > 1:
        notes.append(f"{len(shape.stages)} pipeline stages with {len(shape.stages)} micro-batches in flight")
    if any(s.moe_layers for s in shape.stages):
        notes.append("MoE: a step reads only the experts its tokens touch, E*(1-(1-k/E)^tokens) expected")
    return notes
