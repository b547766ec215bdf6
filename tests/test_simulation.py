"""The engine-loop simulation: vLLM V1 scheduler rules, the client, the metrics, and fast-forwarding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from planner_service.api import default_resolver, run_bench
from planner_service.engine.bench import PlannedEngine, build_workload, simulate
from planner_service.engine.bench_models import BenchRequest, LoadOptions
from planner_service.engine.models import EngineOptions, HardwareOptions, ModelOptions, PlanRequest
from planner_service.engine.plan import build_plan
from planner_service.engine.simulation import engine_loop
from planner_service.engine.simulation.engine_loop import EngineSimulation, SchedulerLimits
from planner_service.engine.simulation.frontend import ApiServer
from planner_service.engine.simulation.metrics import bench_metrics, weighted_stats
from planner_service.engine.simulation.shape import BlockRule
from planner_service.engine.simulation.workload import Workload, random_lengths, release_times

QWEN = "Qwen/Qwen3-8B"


def _engine(version: str = "0.33.0", **engine) -> PlannedEngine:
    request = PlanRequest(model=ModelOptions(model=QWEN, max_model_len=16384), hardware=HardwareOptions(gpu="H100"),
                          engine=EngineOptions(vllm_version=version, **engine))
    source = default_resolver().resolve(request.model)
    return PlannedEngine.from_plan(source, request, build_plan(source, request))


def _run(engine: PlannedEngine, workload: Workload, limits: SchedulerLimits | None = None,
         max_concurrency: int | None = None) -> engine_loop.RunTrace:
    return EngineSimulation(workload, engine.cost, limits or engine.limits, ApiServer("completions"),
                            max_concurrency).run()


def _burst(n: int, prompt: int, output: int) -> Workload:
    return Workload(np.zeros(n), np.full(n, prompt, np.int64), np.full(n, output, np.int64))


def test_a_long_prompt_is_chunked_by_the_token_budget():
    engine = _engine(max_num_batched_tokens=2048)
    trace = _run(engine, _burst(1, 5000, 4))
    # 2048 + 2048 + 904 prompt tokens, the last chunk also yields the first token; then 3 decodes.
    assert trace.steps == 3 + 3
    assert trace.output_tokens[0] == 4 and not trace.failed[0]


def test_max_num_seqs_caps_the_running_requests_and_the_rest_wait():
    engine = _engine(max_num_seqs=4)
    trace = _run(engine, _burst(10, 100, 20))
    assert trace.max_running == 4
    ttft = trace.first_token - trace.sent
    assert np.sort(ttft)[-1] > 2 * np.sort(ttft)[0]  # the last requests queued behind the first four
    assert trace.output_tokens.sum() == 200


def test_running_requests_decode_before_new_prompts_take_the_budget():
    """With a budget of 64 tokens, 8 decoding requests take 8 and a new 100-token prompt gets 56 per step."""
    engine = _engine(max_num_batched_tokens=64, max_num_seqs=16)
    workload = Workload(np.array([0.0] * 8 + [0.5]), np.array([16] * 8 + [100], np.int64),
                        np.array([400] * 8 + [2], np.int64))
    trace = _run(engine, workload)
    steps_for_late_prompt = 2  # 56 + 44 tokens: its first token after two steps of sharing
    late_ttft = trace.first_token[8] - trace.sent[8]
    decode_itl = np.median(trace.itl_values)
    assert steps_for_late_prompt * 0.5 * decode_itl < late_ttft < (steps_for_late_prompt + 2) * 2 * decode_itl
    assert (trace.output_tokens[:8] == 400).all()


def test_kv_cache_pressure_preempts_the_newest_request_and_everything_still_completes():
    engine = _engine()
    rule = BlockRule(block_size=16, full_groups=1, windowed_groups=0, window=0, state_blocks=0)
    small = dataclasses.replace(engine.limits, num_blocks=400, blocks=rule, max_model_len=4000)  # 6,400 tokens
    trace = _run(engine, _burst(20, 200, 400), small)
    assert trace.preemptions > 0
    assert (trace.output_tokens == 400).all() and not trace.failed.any()
    roomy = _run(engine, _burst(20, 200, 400))
    assert roomy.preemptions == 0
    assert np.nanmax(trace.finished) > np.nanmax(roomy.finished)  # recomputation costs time


def test_from_0_20_a_waiting_request_needs_room_for_its_whole_prompt():
    """0.20 added scheduler_reserve_full_isl: with 4,000 tokens of KV and a 1,000-token request running,
    a 3,000-token prompt waits for it to finish; before, its first chunk started alongside."""
    rule = BlockRule(block_size=16, full_groups=1, windowed_groups=0, window=0, state_blocks=0)
    old, new = _engine("0.11.0"), _engine("0.33.0")
    assert not old.limits.admit_full_prompt and new.limits.admit_full_prompt
    workload = Workload(np.array([0.0, 0.0]), np.array([1000, 3000], np.int64), np.array([600, 10], np.int64))
    traces = {}
    for engine in (old, new):
        limits = dataclasses.replace(engine.limits, num_blocks=250, blocks=rule, max_model_len=4000,
                                     max_num_batched_tokens=2048)
        traces[engine.limits.admit_full_prompt] = _run(engine, workload, limits)
    # 0.11: the big prompt starts on its first chunk, runs out of blocks and is preempted (recomputed).
    assert traces[False].preemptions >= 1
    # 0.33: it waits until the first request has finished, and nothing is preempted.
    assert traces[True].preemptions == 0 and traces[True].first_token[1] > traces[True].finished[0]


def test_requests_longer_than_max_model_len_fail_as_vllm_rejects_them():
    engine = _engine()
    workload = Workload(np.zeros(3), np.array([100, 16000, 100], np.int64), np.array([10, 1000, 10], np.int64))
    trace = _run(engine, workload)
    assert trace.failed.tolist() == [False, True, False]
    assert bench_metrics(trace)["completed"] == 2


def test_a_shared_prefix_is_served_from_the_prefix_cache():
    engine = _engine()
    cold = simulate(engine, LoadOptions(num_prompts=64, request_rate=8, random_input_len=2048, random_output_len=16))
    warm = simulate(engine, LoadOptions(num_prompts=64, request_rate=8, random_input_len=64, random_output_len=16,
                                        random_prefix_len=1984))
    # Same prompt length (2,048), but 1,984 tokens of it hit the cache after the first request.
    assert warm.metrics["median_ttft_ms"] < 0.6 * cold.metrics["median_ttft_ms"]


def test_max_concurrency_is_a_closed_loop_and_its_wait_is_not_in_ttft():
    engine = _engine()
    closed = simulate(engine, LoadOptions(num_prompts=40, max_concurrency=2, random_input_len=256, random_output_len=64))
    burst = simulate(engine, LoadOptions(num_prompts=40, random_input_len=256, random_output_len=64))
    assert closed.max_running_requests <= 2
    assert closed.metrics["median_ttft_ms"] < burst.metrics["median_ttft_ms"]


def test_a_prompt_whose_last_chunk_is_one_token_still_gets_its_first_token():
    """A decoding request takes 1 token of a 2048 budget, so a 2048-token prompt arriving beside it is chunked
    2047 + 1; its last chunk looks like a decode step (one token left) but yields its first token, which the
    fast-forward over pure-decode spans must not skip (it left TTFT and the first ITL NaN)."""
    engine = _engine(max_num_batched_tokens=2048)
    workload = Workload(np.array([0.0, 0.2]), np.array([16, 2048], np.int64), np.array([400, 200], np.int64))
    trace = _run(engine, workload)
    assert (trace.output_tokens == [400, 200]).all()
    assert np.isfinite(trace.first_token).all() and np.isfinite(trace.itl_values).all()
    assert trace.first_token[1] > trace.sent[1]


def test_fast_forward_gives_the_same_answer_as_stepping(monkeypatch):
    engine = _engine()
    load = LoadOptions(num_prompts=120, request_rate=6, random_input_len=512, random_output_len=300,
                       random_range_ratio=0.5)
    fast = simulate(engine, load)
    monkeypatch.setattr(engine_loop, "_MIN_SPAN_STEPS", 10**9)  # every step one by one
    slow = simulate(engine, load)
    assert slow.engine_steps == fast.engine_steps
    for key in ("duration", "mean_ttft_ms", "median_tpot_ms", "p99_tpot_ms", "median_itl_ms", "mean_e2el_ms"):
        assert fast.metrics[key] == pytest.approx(slow.metrics[key], rel=0.01), key


def test_same_seed_same_answer_and_another_seed_another():
    request = BenchRequest(plan=PlanRequest(model=ModelOptions(model=QWEN), hardware=HardwareOptions(gpu="H100")),
                           load=LoadOptions(num_prompts=80, request_rate=20, random_range_ratio=0.3, seed=7))
    first, again = run_bench(request), run_bench(request)
    assert first.save_result() == again.save_result()
    other = run_bench(request.model_copy(update={"load": request.load.model_copy(update={"seed": 8})}))
    assert other.metrics["mean_ttft_ms"] != first.metrics["mean_ttft_ms"]


def test_arrivals_follow_vllm_bench_serve():
    assert (release_times(5, None, 1.0, 0) == 0).all()  # --request-rate inf
    poisson = release_times(1000, 10.0, 1.0, 0)
    assert poisson[-1] == pytest.approx(100.0)  # rescaled: the last arrival at N / rate
    assert np.all(np.diff(poisson) >= 0)
    bursty, smooth = np.diff(release_times(2000, 10.0, 0.25, 0)), np.diff(release_times(2000, 10.0, 8.0, 0))
    assert bursty.std() > 2 * smooth.std()  # gamma shape = burstiness
    assert np.allclose(np.diff(release_times(4, 2.0, 1.0, 0, "constant")), 0.5)


def test_random_lengths_follow_the_range_ratio():
    inputs, outputs = random_lengths(np.random.default_rng(0), 5000, 1000, 100, 0.2, prefix_len=50)
    assert inputs.min() >= 800 + 50 and inputs.max() <= 1200 + 50
    assert outputs.min() >= 80 and outputs.max() <= 120
    fixed_in, fixed_out = random_lengths(np.random.default_rng(0), 10, 1000, 100, 0.0, prefix_len=0)
    assert (fixed_in == 1000).all() and (fixed_out == 100).all()
    sharegpt = build_workload(LoadOptions(dataset_name="sharegpt", num_prompts=4000))
    assert sharegpt.input_tokens.mean() == pytest.approx(215, rel=0.03)
    assert sharegpt.input_tokens.max() <= 1024 and (sharegpt.input_tokens + sharegpt.output_tokens).max() <= 2048


def test_weighted_statistics_equal_numpy_on_the_expanded_samples():
    rng = np.random.default_rng(3)
    values = rng.exponential(1.0, 300)
    weights = rng.integers(1, 9, 300).astype(float)
    expanded = np.repeat(values, weights.astype(int))
    stats = weighted_stats(values, weights, (50.0, 90.0, 99.0, 99.9))
    assert stats["mean"] == pytest.approx(expanded.mean())
    assert stats["std"] == pytest.approx(expanded.std())
    for p in (50.0, 90.0, 99.0, 99.9):
        assert stats[f"p{p}"] == pytest.approx(np.percentile(expanded, p))
    assert stats["median"] == pytest.approx(np.median(expanded))


def test_bench_metrics_are_computed_as_vllm_bench_serve_computes_them():
    trace = engine_loop.RunTrace(
        sent=np.array([0.0, 1.0]), first_token=np.array([0.5, 1.2]), finished=np.array([2.5, 2.2]),
        input_tokens=np.array([100, 300]), output_tokens=np.array([5, 1]), failed=np.array([False, False]),
        itl_values=np.array([0.5, 0.5, 0.5, 0.5]), itl_weights=np.ones(4), token_times=np.array([0.5, 1.2, 2.5]),
        token_counts=np.array([1.0, 1.0, 1.0]), preemptions=0, max_running=2, steps=5,
    )
    m = bench_metrics(trace, goodput_ms={"ttft": 300.0})
    assert m["duration"] == 2.5 and m["completed"] == 2
    assert m["total_input_tokens"] == 400 and m["total_output_tokens"] == 6
    assert m["mean_ttft_ms"] == pytest.approx(350.0)
    assert m["median_tpot_ms"] == pytest.approx(500.0)  # only the 5-token request has a TPOT: 2.0 s / 4
    assert m["request_goodput"] == pytest.approx(1 / 2.5)  # the second request (TTFT 200 ms) is good
    assert m["output_throughput"] == pytest.approx(6 / 2.5)
    assert m["max_concurrent_requests"] == 2


def test_data_parallel_ranks_share_the_traffic_and_add_up():
    def run(dp: int):  # noqa: ANN202
        plan = PlanRequest(model=ModelOptions(model=QWEN, max_model_len=8192),
                           hardware=HardwareOptions(gpu="H100", tensor_parallel_size=1, data_parallel_size=dp, num_gpus=dp))
        return run_bench(BenchRequest(plan=plan, load=LoadOptions(num_prompts=200, request_rate=40)))

    one, two = run(1), run(2)
    assert two.metrics["completed"] == 200 and two.metrics["total_output_tokens"] == one.metrics["total_output_tokens"]
    # each rank sees half the rate: lighter batches, faster tokens
    assert two.metrics["median_tpot_ms"] < one.metrics["median_tpot_ms"]
    assert any("data parallel 2" in note for note in two.assumptions)
