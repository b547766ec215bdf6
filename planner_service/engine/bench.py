"""``bench``: what ``vllm bench serve`` would print for a planned configuration under a load (pure).

Data flow: the memory twin's plan (``build_plan``) gives the engine settings, the KV block pool and its
layout; ``simulation.shape`` turns plan + architecture into the step model; ``simulation.engine_loop``
runs the load through vLLM's scheduler; ``simulation.metrics`` computes bench's numbers. A plan that would
not start is not simulated (the caller reports the plan's error, as ``plan`` does).
"""

from __future__ import annotations

import math

import numpy as np

from planner_service.engine.architecture import ModelArchitecture
from planner_service.engine.bench_models import BenchResponse, LoadOptions
from planner_service.engine.kv_cache import KvLayout
from planner_service.engine.memory import evaluate
from planner_service.engine.models import Interconnect, PlanRequest, PlanResponse
from planner_service.engine.pipeline import default_interconnect
from planner_service.engine.plan import twin_inputs
from planner_service.engine.simulation import frontend
from planner_service.engine.simulation.engine_loop import EngineSimulation, SchedulerLimits
from planner_service.engine.simulation.frontend import ApiServer
from planner_service.engine.simulation.metrics import bench_metrics
from planner_service.engine.simulation.shape import block_rule, engine_shape
from planner_service.engine.simulation.step_cost import StepCostModel
from planner_service.engine.simulation.versions import engine_behaviour
from planner_service.engine.simulation.workload import Workload, random_lengths, release_times, sharegpt_lengths
from planner_service.engine.source import ModelSource


class PlannedEngine:
    """A started replica as the simulation needs it: architecture, plan, KV layout and the step model."""

    def __init__(self, arch: ModelArchitecture, response: PlanResponse, layout: KvLayout,
                 interconnect: Interconnect | str) -> None:
        config, gpu = response.config, response.gpu
        major = int((gpu.compute_capability or "8.0").split(".")[0])
        self.arch = arch
        self.response = response
        self.interconnect = interconnect
        self.behaviour = engine_behaviour(
            response.vllm_version, pipeline_parallel_size=config.pipeline_parallel_size,
            compute_capability_major=major,
        )
        self.shape = engine_shape(arch, config, gpu, interconnect, self.behaviour)
        self.cost = StepCostModel(self.shape)
        has_sliding = "sliding" in arch.layer_kinds
        self.limits = SchedulerLimits(
            max_num_seqs=config.max_num_seqs,
            max_num_batched_tokens=config.max_num_batched_tokens,
            num_blocks=max(1, response.feasibility.num_gpu_blocks - 1),  # the block pool's null block
            blocks=block_rule(layout),
            max_model_len=config.max_model_len,
            enable_prefix_caching=config.enable_prefix_caching,
            admit_full_prompt=self.behaviour.admit_full_prompt,
            sliding_window=(arch.sliding_window or 0) if has_sliding else 0,
        )

    @classmethod
    def from_plan(cls, source: ModelSource, request: PlanRequest, response: PlanResponse) -> "PlannedEngine":
        inputs = twin_inputs(source, request, response)
        result = evaluate(inputs.arch, inputs.gpu, inputs.settings, inputs.profile)
        interconnect = request.hardware.interconnect or default_interconnect(response.gpu.name)
        return cls(inputs.arch, response, result.binding.layout, interconnect)


def build_workload(load: LoadOptions) -> Workload:
    rng = np.random.default_rng(load.seed)
    n = load.num_prompts
    if load.dataset_name == "sharegpt":
        inputs, outputs = sharegpt_lengths(rng, n, load.sharegpt_mean_input_len, load.sharegpt_mean_output_len)
        prefix = 0
    else:
        prefix = load.random_prefix_len
        inputs, outputs = random_lengths(rng, n, load.random_input_len, load.random_output_len,
                                         load.random_range_ratio, prefix)
    releases = release_times(n, load.request_rate, load.burstiness, load.seed, load.arrival_process)
    return Workload(releases, inputs, outputs, shared_prefix_tokens=prefix)


# Metrics that add up over data-parallel ranks (each rank serves its share of the same traffic).
_ADDITIVE = ("completed", "failed", "total_input_tokens", "total_output_tokens", "request_throughput",
             "request_goodput", "output_throughput", "total_token_throughput", "max_output_tokens_per_s",
             "max_concurrent_requests")


def rank_share(load: LoadOptions, dp: int) -> LoadOptions:
    """One data-parallel rank's share of ``load``: vLLM's DP coordinator balances requests over ranks."""
    if dp <= 1:
        return load
    return load.model_copy(update={
        "num_prompts": math.ceil(load.num_prompts / dp),
        "request_rate": load.request_rate / dp if load.request_rate is not None else None,
        "max_concurrency": math.ceil(load.max_concurrency / dp) if load.max_concurrency else None,
    })


def simulate(engine: PlannedEngine, load: LoadOptions) -> BenchResponse:
    """Run ``load`` through ``engine`` and answer with bench's metrics.

    With data parallelism every rank is an engine of its own behind the same endpoint: one rank is
    simulated with its share of the traffic and the additive results are scaled by the rank count.
    """
    dp = engine.response.config.data_parallel_size
    share = rank_share(load, dp)
    workload = build_workload(share)
    api = ApiServer(load.endpoint_type)
    trace = EngineSimulation(workload, engine.cost, engine.limits, api, share.max_concurrency).run()
    metrics = bench_metrics(trace, percentiles=load.metric_percentiles, goodput_ms=load.goodput)
    if dp > 1:
        metrics = {k: (v * dp if k in _ADDITIVE and v is not None else v) for k, v in metrics.items()}
    return BenchResponse(
        metrics=metrics,
        preemptions=trace.preemptions,
        max_running_requests=trace.max_running,
        engine_steps=trace.steps,
        load=load,
        plan=engine.response,
        assumptions=assumptions(engine, load),
    )


def assumptions(engine: PlannedEngine, load: LoadOptions) -> list[str]:
    b, shape, lim = engine.behaviour, engine.shape, engine.limits
    version = ".".join(map(str, b.version))
    notes = [
        f"vLLM {version} V1 scheduler: token budget {lim.max_num_batched_tokens}, max_num_seqs {lim.max_num_seqs}, "
        f"chunked prefill, {lim.num_blocks:,} KV blocks of {lim.blocks.block_size} tokens from the memory twin; "
        "preemption by recomputation when blocks run out",
        "async scheduling: CPU work overlaps the GPU" if b.async_scheduling
        else "synchronous scheduling: each step's CPU work adds to its GPU time",
        "a waiting request is admitted only when its whole prompt fits the free blocks" if b.admit_full_prompt
        else "a waiting request is admitted when its first chunk fits the free blocks",
        f"CUDA graphs up to {shape.max_capture_size} tokens" if shape.cuda_graphs
        else "--enforce-eager: every kernel launched from Python",
        f"API server ({load.endpoint_type}): {frontend.REQUEST_LATENCY_SECONDS[load.endpoint_type] * 1e3:.0f} ms latency "
        f"+ {frontend.REQUEST_CPU_SECONDS[load.endpoint_type] * 1e3:.1f} ms CPU per request "
        f"+ {frontend.TOKENIZE_SECONDS_PER_TOKEN * 1e6:.0f} us per prompt token, "
        f"{frontend.STREAM_SECONDS_PER_TOKEN[load.endpoint_type] * 1e6:.0f} us per streamed token",
        "outputs run to their max_tokens (EOS not modelled), as with --ignore-eos",
    ]
    if load.dataset_name == "sharegpt":
        notes.append(
            f"ShareGPT lengths modelled (log-normal, vLLM's filters) with means {load.sharegpt_mean_input_len:.0f} "
            f"in / {load.sharegpt_mean_output_len:.0f} out; the file itself is not read"
        )
    if lim.enable_prefix_caching:
        notes.append("prefix caching on: random prompts share nothing beyond --random-prefix-len")
    dp = engine.response.config.data_parallel_size
    if dp > 1:
        notes.append(f"data parallel {dp}: one rank simulated with 1/{dp} of the requests, rate and concurrency; "
                     "counts and throughputs scaled by the ranks")
    if shape.tensor_parallel_size > 1:
        hw = shape.hardware
        notes.append(
            f"TP {shape.tensor_parallel_size} all-reduce over {hw.interconnect}: "
            f"{hw.allreduce_latency_seconds * 1e6:.0f} us + {hw.allreduce_bus_bytes_per_second / 1e9:.0f} GB/s bus"
        )
    return notes
