"""Capacity planning: how many replicas of which configuration serve a request rate within SLOs (pure).

For each configuration worth trying - GPU type (given, or the catalog's data-centre GPUs), tensor
parallel size (the smallest that fits, and twice and four times it), KV-cache dtype (auto, and fp8
where the GPU has fp8), online fp8 weights for an unquantized checkpoint where the GPU has fp8 - the
memory twin plans the replica; a plan that would not start is dropped. The highest request rate one
replica sustains within every SLO at the chosen percentile is then found by bisection on the
simulation (``bench``'s engine loop, Poisson arrivals, the request's lengths and endpoint): a rate is
sustainable when every request completes and each SLO metric's percentile is within its target. The
steady-state model (``performance.steady_state``) gives each configuration a throughput ceiling that
brackets the bisection and bounds its GPU count, so configurations that cannot beat the options found
are skipped. The best two, when latency rather than throughput limits them, are re-tried with smaller
``max_num_seqs``. Options are ranked by total GPUs (replicas x GPUs per replica), then by headroom.
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
from planner_service.engine.performance import decode_batch, steady_state
from planner_service.engine.pipeline import complete_plan
from planner_service.engine.plan import build_plan
from planner_service.engine.simulation.metrics import percentile_key
from planner_service.engine.source import ModelSource

# Default GPU types when the request names none: the data-centre GPUs vLLM deployments use most.
DEFAULT_GPUS = ("H100", "H200", "A100 SXM 80GB", "L40S", "B200", "L4")
SEARCH_PROMPTS = 300  # requests per simulated rate: enough for a p99 over a steady stretch
BISECTION_STEPS = 6
MAX_NUM_SEQS_VARIANTS = (64, 128)


class _Candidate:
    def __init__(self, gpu: str, plan: PlanResponse, request: PlanRequest, engine: PlannedEngine) -> None:
        self.gpu, self.plan, self.request, self.engine = gpu, plan, request, engine
        self.max_rate = 0.0
        self.ceiling = 0.0
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


def steady_ceiling(engine: PlannedEngine, load: LoadOptions) -> float:
    """Requests per second one replica completes when it is full (max_num_seqs or KV bound).

    The plan's steady-state step model at the largest batch: an upper bound for any latency target,
    used to bracket the bisection and to skip configurations that cannot beat the best one found.
    """
    cfg = engine.response.config
    if load.dataset_name == "random":
        prompt, gen = load.random_prefix_len + load.random_input_len, load.random_output_len
    else:
        prompt, gen = round(load.sharegpt_mean_input_len), round(load.sharegpt_mean_output_len)
    batch = decode_batch(cfg.max_num_seqs, cfg.max_num_seqs, engine.response.feasibility.kv_cache_tokens, prompt + gen)
    _, mean_step, _, _ = steady_state(engine.cost, batch=batch, prompt_tokens=prompt, gen_tokens=gen,
                                      max_num_batched_tokens=cfg.max_num_batched_tokens,
                                      window=engine.limits.sliding_window)
    return batch / (mean_step * gen)


def max_sustainable_rate(engine: PlannedEngine, request: CapacityRequest, ceiling: float) -> tuple[float, str]:
    """Highest req/s one replica serves within the SLOs (0 and the reason when even a trickle fails).

    Geometric bisection between ceiling/64 and 1.1 x ceiling (rates span orders of magnitude).
    """
    lo = ceiling / 64
    trial = _load_at(request.load, lo, request.percentile)
    ok, reason = _meets(simulate(engine, trial).metrics, trial, request.slos, request.percentile)
    if not ok:
        return 0.0, f"at {lo:.3g} req/s: {reason}"
    hi = ceiling * 1.1
    for _ in range(BISECTION_STEPS):
        mid = math.sqrt(lo * hi)
        trial = _load_at(request.load, mid, request.percentile)
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


def _evaluate(cands: list[_Candidate], request: CapacityRequest) -> None:
    """Find each candidate's sustainable rate, best bound first; skip those that cannot make the list.

    A candidate's total GPUs can be no lower than ``ceil(rate / ceiling) x GPUs per replica``; once
    ``max_options`` candidates are placed, any whose bound is worse than all of them is skipped.
    """
    rate = request.request_rate
    for cand in sorted(cands, key=lambda c: (_bound(c, rate), -c.ceiling)):
        placed = sorted(_total_gpus(c, rate) for c in cands if c.max_rate > 0)
        if len(placed) >= request.max_options and _bound(cand, rate) > placed[request.max_options - 1]:
            cand.reason = "skipped: cannot need fewer GPUs than the options found"
            continue
        cand.max_rate, cand.reason = max_sustainable_rate(cand.engine, request, cand.ceiling)


def _candidate(source: ModelSource, gpu: str, plan_request: PlanRequest, plan: PlanResponse,
               load: LoadOptions) -> _Candidate:
    done = complete_plan(plan, plan_request, source=source)
    cand = _Candidate(gpu, done, plan_request, PlannedEngine.from_plan(source, plan_request, done))
    cand.ceiling = steady_ceiling(cand.engine, load)
    return cand


def plan_capacity(source: ModelSource, request: CapacityRequest) -> CapacityResponse:
    candidates: list[_Candidate] = []
    rejected: list[str] = []
    for gpu in _gpu_types(request):
        variants = _variants(source, request, gpu)
        if not variants:
            rejected.append(f"{gpu.name}: no tensor-parallel size up to {request.max_gpus_per_replica} GPUs fits")
        candidates += [_candidate(source, gpu.name, pr, plan, request.load) for pr, plan in variants]
    _evaluate(candidates, request)
    # Latency-bound winners (well below their throughput ceiling) may do better with fewer sequences.
    tuned: list[_Candidate] = []
    best = sorted((c for c in candidates if c.max_rate > 0), key=lambda c: _total_gpus(c, request.request_rate))
    for cand in best[:2]:
        if cand.max_rate > 0.7 * cand.ceiling:
            continue
        for mns in MAX_NUM_SEQS_VARIANTS:
            if mns >= cand.plan.config.max_num_seqs:
                continue
            engine = cand.request.engine.model_copy(update={"max_num_seqs": mns})
            tuned_request = cand.request.model_copy(update={"engine": engine})
            plan = build_plan(source, tuned_request)
            if plan.feasibility.fits:
                tuned.append(_candidate(source, cand.gpu, tuned_request, plan, request.load))
    _evaluate(tuned, request)
    candidates += tuned
    for cand in candidates:
        if cand.max_rate <= 0 and not cand.reason.startswith("skipped"):
            rejected.append(f"{_label(cand)}: {cand.reason}")
    ranked = sorted((c for c in candidates if c.max_rate > 0),
                    key=lambda c: (_total_gpus(c, request.request_rate), -c.max_rate))
    options = [_option(c, request) for c in _unique(ranked)[: request.max_options]]
    return CapacityResponse(
        request_rate=request.request_rate, percentile=request.percentile, slos=request.slos, options=options,
        rejected=rejected,
        assumptions=[
            f"each rate simulated with {SEARCH_PROMPTS} Poisson arrivals (seed {request.load.seed}); geometric "
            f"bisection in {BISECTION_STEPS} steps between 1/64 and 1.1x each configuration's steady-state ceiling",
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


def _bound(c: _Candidate, rate: float) -> int:
    return math.ceil(rate / c.ceiling) * _gpus_per_replica(c)


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
