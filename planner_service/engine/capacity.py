"""Capacity planning: how many replicas of which configuration serve a request rate within SLOs (pure).

For each configuration worth trying - GPU type (given, or the catalog's data-centre GPUs), tensor
parallel size (the smallest that fits, and twice and four times it), KV-cache dtype (auto, and fp8
where the GPU has fp8), online fp8 weights for an unquantized checkpoint where the GPU has fp8 - the
memory twin plans the replica; a plan that would not start is dropped. The highest request rate one
replica sustains within every SLO at the chosen percentile is then found by bisection on the
simulation (``bench``'s engine loop, Poisson arrivals, the request's lengths and endpoint): a rate is
sustainable when every request completes and each SLO metric's percentile is within its target. The
best few configurations are then re-tried with smaller ``max_num_seqs`` (which trades throughput for
latency). Options are ranked by total GPUs (replicas x GPUs per replica), then by headroom.
"""

from __future__ import annotations

import math

from planner_service.engine.bench import PlannedEngine, simulate
from planner_service.engine.bench_models import (
    CapacityOption, CapacityRequest, CapacityResponse, LoadOptions, SloTarget,
)
from planner_service.engine.errors import PlannerError
from planner_service.engine.gpus import GpuSpec, list_gpus, lookup_gpu
from planner_service.engine.models import PlanRequest, PlanResponse
from planner_service.engine.pipeline import complete_plan
from planner_service.engine.plan import build_plan
from planner_service.engine.simulation.metrics import percentile_key
from planner_service.engine.source import ModelSource

# Default GPU types when the request names none: the data-centre GPUs vLLM deployments use most.
DEFAULT_GPUS = ("H100", "H200", "A100 SXM 80GB", "L40S", "B200", "L4")
SEARCH_PROMPTS = 400  # requests per simulated rate: enough for a p99 over a steady stretch
BISECTION_STEPS = 7
MAX_NUM_SEQS_VARIANTS = (64, 128)


class _Candidate:
    def __init__(self, gpu: str, plan: PlanResponse, request: PlanRequest, engine: PlannedEngine) -> None:
        self.gpu, self.plan, self.request, self.engine = gpu, plan, request, engine
        self.max_rate = 0.0
        self.reason = ""


def _percentile_value(metrics: dict, metric: str, percentile: float) -> float:
    return float(metrics.get(f"p{percentile_key(percentile)}_{metric}_ms") or 0.0)


def _meets(metrics: dict, load: LoadOptions, slos: list[SloTarget], percentile: float) -> tuple[bool, str]:
    if metrics.get("completed", 0) < load.num_prompts:
        return False, f"{load.num_prompts - metrics.get('completed', 0)} requests failed"
    for slo in slos:
        value = _percentile_value(metrics, slo.metric, percentile)
        if value > slo.milliseconds:
            return False, f"p{percentile_key(percentile)} {slo.metric.upper()} {value:.0f} ms > {slo.milliseconds:.0f} ms"
    return True, ""


def _load_at(base: LoadOptions, rate: float, percentile: float) -> LoadOptions:
    percentiles = tuple(sorted({*base.metric_percentiles, percentile}))
    return base.model_copy(update={
        "request_rate": rate, "num_prompts": SEARCH_PROMPTS, "max_concurrency": None, "burstiness": 1.0,
        "metric_percentiles": percentiles, "goodput": None,
    })


def max_sustainable_rate(engine: PlannedEngine, request: CapacityRequest) -> tuple[float, str]:
    """Highest req/s one replica serves within the SLOs (0 and the reason when even a trickle fails)."""
    perf = engine.response.performance
    load = request.load
    # Upper bound: the replica's steady-state throughput at max_num_seqs (from the plan's step model).
    tokens_per_request = load.random_output_len if load.dataset_name == "random" else load.sharegpt_mean_output_len
    ceiling = 1.0
    if perf is not None:
        ceiling = max(perf.decode_tokens_per_second_aggregate.high / max(tokens_per_request, 1.0), 0.01)
    hi = ceiling * 1.5
    lo_rate = hi / 200
    ok, reason = _meets(simulate(engine, _load_at(load, lo_rate, request.percentile)).metrics, _load_at(load, lo_rate, request.percentile), request.slos, request.percentile)
    if not ok:
        return 0.0, f"at {lo_rate:.3g} req/s: {reason}"
    lo = lo_rate
    for _ in range(BISECTION_STEPS):
        mid = math.sqrt(lo * hi)  # geometric: rates span orders of magnitude
        trial = _load_at(load, mid, request.percentile)
        ok, _ = _meets(simulate(engine, trial).metrics, trial, request.slos, request.percentile)
        lo, hi = (mid, hi) if ok else (lo, mid)
    return lo, ""


def _gpu_types(request: CapacityRequest) -> list[GpuSpec]:
    if request.gpus:
        return [lookup_gpu(name) for name in request.gpus]
    names = {spec.name for spec in list_gpus()}
    return [lookup_gpu(name) for name in DEFAULT_GPUS if lookup_gpu(name).name in names]


def _variants(source: ModelSource, request: CapacityRequest, gpu: GpuSpec) -> list[tuple[PlanRequest, PlanResponse]]:
    """Plans that start on this GPU type: smallest fitting TP (x1, x2, x4), KV dtypes, online fp8."""
    base = request.plan
    quantized = bool((base.model.config_json or source.config).get("quantization_config"))
    quants: list[str | None] = [base.model.quantization]
    if base.model.quantization is None and not quantized and gpu.supports_fp8:
        quants.append("fp8")
    kv_dtypes = [base.model.kv_cache_dtype] if base.model.kv_cache_dtype else ["auto"] + (["fp8"] if gpu.supports_fp8 else [])
    fixed_tp = base.hardware.tensor_parallel_size
    tps = [fixed_tp] if fixed_tp else [tp for tp in (1, 2, 4, 8, 16) if tp <= request.max_gpus_per_replica]
    found: list[tuple[PlanRequest, PlanResponse]] = []
    for quant in quants:
        for kv in kv_dtypes:
            fitting: list[tuple[PlanRequest, PlanResponse]] = []
            for tp in tps:
                plan_request = base.model_copy(update={
                    "model": base.model.model_copy(update={"quantization": quant, "kv_cache_dtype": kv}),
                    "hardware": base.hardware.model_copy(update={
                        "gpu": gpu.name, "num_gpus": tp * (base.hardware.pipeline_parallel_size or 1),
                        "tensor_parallel_size": tp, "vram_gb": None, "free_memory_bytes": None,
                    }),
                })
                try:
                    plan = build_plan(source, plan_request)
                except PlannerError:
                    continue
                if plan.feasibility.fits:
                    fitting.append((plan_request, plan))
                if len(fitting) == 3:
                    break
            found.extend(fitting)
    return found


def plan_capacity(source: ModelSource, request: CapacityRequest) -> CapacityResponse:
    candidates: list[_Candidate] = []
    rejected: list[str] = []
    for gpu in _gpu_types(request):
        variants = _variants(source, request, gpu)
        if not variants:
            rejected.append(f"{gpu.name}: no tensor-parallel size up to {request.max_gpus_per_replica} GPUs fits")
        for plan_request, plan in variants:
            done = complete_plan(plan, plan_request, source=source)
            candidates.append(_Candidate(gpu.name, done, plan_request, PlannedEngine.from_plan(source, plan_request, done)))
    for cand in candidates:
        cand.max_rate, cand.reason = max_sustainable_rate(cand.engine, request)
    viable = sorted((c for c in candidates if c.max_rate > 0), key=lambda c: _total_gpus(c, request.request_rate))
    for cand in viable[:3]:  # tune the best few: smaller max_num_seqs trades throughput for latency
        for mns in MAX_NUM_SEQS_VARIANTS:
            if mns >= cand.plan.config.max_num_seqs:
                continue
            tuned_request = cand.request.model_copy(update={
                "engine": cand.request.engine.model_copy(update={"max_num_seqs": mns})})
            tuned = build_plan(source, tuned_request)
            if not tuned.feasibility.fits:
                continue
            tuned = complete_plan(tuned, tuned_request, source=source)
            extra = _Candidate(cand.gpu, tuned, tuned_request, PlannedEngine.from_plan(source, tuned_request, tuned))
            extra.max_rate, extra.reason = max_sustainable_rate(extra.engine, request)
            candidates.append(extra)
    for cand in candidates:
        if cand.max_rate <= 0:
            rejected.append(f"{_label(cand)}: {cand.reason}")
    ranked = sorted((c for c in candidates if c.max_rate > 0),
                    key=lambda c: (_total_gpus(c, request.request_rate), -c.max_rate))
    options = [_option(c, request) for c in _unique(ranked)[: request.max_options]]
    return CapacityResponse(
        request_rate=request.request_rate, percentile=request.percentile, slos=request.slos, options=options,
        rejected=rejected,
        assumptions=[
            f"each rate simulated with {SEARCH_PROMPTS} Poisson arrivals (seed {request.load.seed}); "
            f"{BISECTION_STEPS} bisection steps per configuration",
            "replicas share the rate evenly (a round-robin or least-loaded router)",
        ],
    )


def _label(c: _Candidate) -> str:
    cfg = c.plan.config
    quant = f" {cfg.quantization}" if cfg.quantization else ""
    return f"{c.gpu} TP{cfg.tensor_parallel_size}{quant} kv {cfg.kv_cache_dtype} max_num_seqs {cfg.max_num_seqs}"


def _unique(cands: list[_Candidate]) -> list[_Candidate]:
    seen, out = set(), []
    for c in cands:
        if _label(c) not in seen:
            seen.add(_label(c))
            out.append(c)
    return out


def _gpus_per_replica(c: _Candidate) -> int:
    return c.plan.config.tensor_parallel_size * c.plan.config.pipeline_parallel_size


def _total_gpus(c: _Candidate, rate: float) -> int:
    return math.ceil(rate / c.max_rate) * _gpus_per_replica(c)


def _option(c: _Candidate, request: CapacityRequest) -> CapacityOption:
    replicas = math.ceil(request.request_rate / c.max_rate)
    share = request.request_rate / replicas
    trial = _load_at(request.load, share, request.percentile)
    metrics = simulate(c.engine, trial).metrics
    cfg = c.plan.config
    predicted = {
        f"p{percentile_key(request.percentile)}_{m}_ms": _percentile_value(metrics, m, request.percentile)
        for m in ("ttft", "tpot", "e2el")
    }
    return CapacityOption(
        gpu=c.gpu, gpus_per_replica=_gpus_per_replica(c), tensor_parallel_size=cfg.tensor_parallel_size,
        pipeline_parallel_size=cfg.pipeline_parallel_size, quantization=cfg.quantization,
        kv_cache_dtype=cfg.kv_cache_dtype, max_num_seqs=cfg.max_num_seqs,
        max_num_batched_tokens=cfg.max_num_batched_tokens, max_rate_per_replica=c.max_rate, replicas=replicas,
        total_gpus=replicas * _gpus_per_replica(c), predicted=predicted,
        serve_command=c.plan.artifacts.serve_command if c.plan.artifacts else "",
    )
