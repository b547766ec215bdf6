"""``plan``'s performance: the steady state of the shared step model, and its agreement with ``bench``."""

from __future__ import annotations

import pytest

from planner_service.api import default_resolver, run_bench, run_plan
from planner_service.engine.bench_models import BenchRequest, LoadOptions
from planner_service.engine.models import HardwareOptions, ModelOptions, PlanRequest, WorkloadOptions
from planner_service.engine.pipeline import complete_plan

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


def _plan(concurrency: int = 1, prompt: int = 1024, gen: int = 256, **hardware) -> PlanRequest:
    return PlanRequest(
        model=ModelOptions(model=LLAMA, max_model_len=8192),
        hardware=HardwareOptions(gpu="H100", **hardware),
        workload=WorkloadOptions(concurrency=concurrency, prompt_tokens=prompt, gen_tokens=gen),
    )


def test_single_stream_decode_is_weight_streaming_plus_fixed_costs():
    """Llama-3.1-8B on one H100 at batch 1: ~16 GB of weights at 88 % of 3.35 TB/s (5.4 ms), plus
    launches and the step's host time: a 6-7 ms decode step, ~150 tokens/s (published single-stream
    figures for this pair are 130-160 tok/s)."""
    perf = run_plan(_plan()).performance
    assert perf is not None
    assert 5.5e-3 < perf.itl_seconds.low < 7.5e-3
    assert 130 < perf.decode_tokens_per_second_per_request.high < 180
    assert perf.itl_seconds.low <= perf.itl_seconds.expected <= perf.itl_seconds.high


def test_batching_raises_throughput_and_prefill_interference_raises_itl():
    one, many = run_plan(_plan(1)).performance, run_plan(_plan(64)).performance
    assert many.decode_tokens_per_second_aggregate.expected > 20 * one.decode_tokens_per_second_aggregate.expected
    assert many.itl_seconds.expected > many.itl_seconds.low  # chunked prefills ride in decode steps
    assert many.concurrency == 64


def test_concurrency_is_capped_by_max_num_seqs_and_kv_capacity():
    capped = run_plan(_plan(500, tensor_parallel_size=1).model_copy(update={"engine": _plan().engine.model_copy(update={"max_num_seqs": 128})}))
    assert capped.performance.concurrency == 128
    long = _plan(500, prompt=7000, gen=1000, tensor_parallel_size=1)
    response = run_plan(long)
    fit = response.feasibility.kv_cache_tokens // 8000
    assert response.performance.concurrency == fit
    assert any("the rest queue" in note for note in response.performance.assumptions)


def test_decode_turns_compute_bound_between_100_and_400_requests():
    """bf16 H100: the linear layers' ridge sits where 2*params*B/(989 TF x ~0.7) meets 16 GB/(2.95 TB/s)."""
    ridge = run_plan(_plan()).performance.memory_bound_until_concurrency
    assert 100 < ridge < 400


def test_tensor_parallel_over_pcie_is_slower_than_over_nvlink():
    nvlink = run_plan(_plan(8, tensor_parallel_size=2, interconnect="nvlink")).performance
    pcie = run_plan(_plan(8, tensor_parallel_size=2, interconnect="pcie")).performance
    assert pcie.itl_seconds.low > nvlink.itl_seconds.low * 1.15


def test_failing_plan_has_no_performance():
    request = PlanRequest(
        model=ModelOptions(model="meta-llama/Llama-3.1-70B-Instruct"),
        hardware=HardwareOptions(gpu="H100", tensor_parallel_size=1),
    )
    response = complete_plan(run_plan(request), request)
    assert not response.feasibility.fits
    assert response.performance is None
    assert response.artifacts is not None  # still rendered, for inspection


def test_plan_without_architecture_has_no_performance_estimate():
    request = _plan()
    assert complete_plan(run_plan(request), request).performance is None
    source = default_resolver().resolve(request.model)
    assert complete_plan(run_plan(request), request, source=source).performance is not None


@pytest.mark.parametrize("concurrency", [1, 16, 64])
def test_plan_agrees_with_bench_run_closed_loop_at_the_same_concurrency(concurrency):
    """Issue 10 point 5: the steady state and the simulation share the step model, so a closed loop of
    ``concurrency`` clients with the plan's lengths must land on the plan's mean ITL (= mean TPOT)."""
    plan = _plan(concurrency, prompt=1024, gen=256)
    perf = run_plan(plan).performance
    load = LoadOptions(num_prompts=max(40, 6 * concurrency), max_concurrency=concurrency,
                       random_input_len=1024, random_output_len=256)
    bench = run_bench(BenchRequest(plan=plan, load=load)).metrics
    assert bench["mean_tpot_ms"] / 1e3 == pytest.approx(perf.itl_seconds.expected, rel=0.10)
    assert bench["median_itl_ms"] / 1e3 == pytest.approx(perf.itl_seconds.low, rel=0.10)
