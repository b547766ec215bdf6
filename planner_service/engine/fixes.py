"""Ranked minimal fixes for a request that does not fit (or fits with less concurrency than asked).

Each candidate is a concrete change to the *request* (dotted paths such as ``model.kv_cache_dtype``;
``checkpoint.quant_method`` stands for "use a pre-quantized checkpoint of this model"). It is verified by
applying it with ``apply_changes`` and re-running the same resolution ``build_plan`` uses
(``recommend.resolve_request``, i.e. the twin with every recommendation redone), so a fix's tokens,
concurrency and headroom are exactly what the re-planned request shows, never guessed. Only changes that
make the plan *useful* (starts, holds the target length and concurrency with the policy headroom) are kept.

Search: one change from each applicable kind; when none works, a second change computed from each
single change's own result (e.g. fp8 KV, then the concurrency that fp8 KV holds). Ranking: fewest
changes, then least invasive kind, then the smaller change, then most headroom. Bounded: at most
~10 single changes and 4 x 10 pairs are resolved (each resolution a handful of twin runs).
"""

from __future__ import annotations

from dataclasses import dataclass

from planner_service.engine.errors import InvalidRequestError
from planner_service.engine.kv_cache import cdiv
from planner_service.engine.memory import TwinSettings, evaluate
from planner_service.engine.models import Fix, PlanRequest
from planner_service.engine.recommend import Resolution, resolve_request
from planner_service.engine.recommend_memory import FP8_KV_DTYPES, free_memory_bound, kv_cache_memory_alternative
from planner_service.engine.recommend_parallel import tp_candidates

# Least invasive first: knobs that cost nothing, then speed, accuracy, capability, hardware, checkpoint.
INVASIVENESS = {"utilization": 0, "kv_memory": 0, "eager": 1, "kv_fp8": 2, "context": 3, "concurrency": 4,
                "fp8_weights": 5, "gpus": 6, "checkpoint": 7}
MAX_FIXES = 6
_SECTIONS = ("model", "hardware", "workload", "policy", "engine")
AWQ_4BIT = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"}


@dataclass(frozen=True)
class Change:
    kind: str
    description: str
    changes: dict
    cost: int = 0  # within a kind, smaller is less invasive (e.g. the number of GPUs)


@dataclass(frozen=True)
class _Tried:
    steps: tuple[Change, ...]
    resolution: Resolution
    request: PlanRequest  # the request with the steps applied

    def key(self) -> tuple:
        return (len(self.steps), max(INVASIVENESS[s.kind] for s in self.steps),
                sum(INVASIVENESS[s.kind] for s in self.steps), sum(s.cost for s in self.steps),
                -self.resolution.margin_bytes)


def apply_changes(request: PlanRequest, changes: dict, config: dict) -> PlanRequest:
    """The request with ``changes`` applied (validated). ``config`` is the model's config.json."""
    data = request.model_dump()
    for path, value in changes.items():
        section, _, name = path.partition(".")
        if section == "checkpoint":
            if name != "quant_method" or value != "awq":
                raise ValueError(f"unknown checkpoint change {path}={value!r}")
            base = dict(request.model.config_json or config)
            data["model"]["config_json"] = {**base, "quantization_config": dict(AWQ_4BIT)}
            data["model"]["quantization"] = None
            continue
        if section not in _SECTIONS or name not in data[section]:
            raise ValueError(f"unknown request field {path}")
        data[section][name] = value
    return PlanRequest.model_validate(data)


def _round_length(length: int) -> int:
    """A length people write: a multiple of 1024 above 4096, of 256 above 512."""
    for step, floor in ((1024, 4096), (256, 512)):
        if length >= floor:
            return length // step * step
    return length


def _fitted_length(res: Resolution) -> int:
    """The largest max_model_len the resolved settings fit (the twin's auto-fit), 0 when none."""
    s: TwinSettings = res.settings.model_copy(update={"max_model_len": None})
    fitted = evaluate(res.arch, res.gpu, s, res.profile)
    return fitted.max_model_len if fitted.fits else 0


def _single_changes(res: Resolution, request: PlanRequest) -> list[Change]:
    """One concrete change of each kind that could help, computed from ``res`` (the current resolution)."""
    m, hw, eng, wl = request.model, request.hardware, request.engine, request.workload
    s, gpu, arch = res.settings, res.gpu, res.arch
    out: list[Change] = []
    total = gpu.memory_total_bytes
    if eng.kv_cache_memory_bytes is None:
        bound = free_memory_bound(total, hw.free_memory_bytes)
        ceiling = bound if bound is not None else (0.90 if gpu.consumer else 0.95)
        u = s.gpu_memory_utilization
        if ceiling > 0 and abs(ceiling - u) >= 0.005 and (ceiling > u or (bound is not None and u > bound)):
            verb = "raise" if ceiling > u else "lower"
            why = "the free-memory bound" if bound is not None else "a safe maximum for this GPU"
            out.append(Change("utilization", f"{verb} gpu_memory_utilization from {u:g} to {ceiling:g} ({why})",
                              {"policy.gpu_memory_utilization": ceiling}))
        if hw.free_memory_bytes is not None and hw.free_memory_bytes < total:
            alt = kv_cache_memory_alternative(res.result, hw.free_memory_bytes)
            if alt:
                out.append(Change("kv_memory", f"size the KV cache directly: --kv-cache-memory-bytes={alt} "
                                  "(exact when several instances share the GPU)",
                                  {"engine.kv_cache_memory_bytes": alt}))
    if not s.enforce_eager and res.profile.subtract_cuda_graph_estimate:
        out.append(Change("eager", "--enforce-eager: no CUDA graphs, saving their memory (slower decode)",
                          {"engine.enforce_eager": True}))
    if s.kv_cache_dtype not in FP8_KV_DTYPES and gpu.supports_fp8 and arch.attention_layers:
        out.append(Change("kv_fp8", "--kv-cache-dtype fp8: half the KV bytes per token (small accuracy cost)",
                          {"model.kv_cache_dtype": "fp8"}))
    if isinstance(m.max_model_len, int):
        derived = arch.derived_max_model_len
        fitted = min(_fitted_length(res), derived)
        length = _round_length(fitted)
        if 0 < length < m.max_model_len:
            out.append(Change("context", f"shorter context: --max-model-len {length} (the largest that fits)",
                              {"model.max_model_len": length}))
    if res.fits and 0 < res.workload_capacity < wl.concurrency:
        c = res.workload_capacity
        out.append(Change("concurrency", f"lower concurrency to {c} requests of {res.target.request_tokens} tokens",
                          {"workload.concurrency": c}))
    out.extend(_gpu_changes(res, request))
    if arch.quantization is None and gpu.supports_fp8 and m.quantization is None:
        out.append(Change("fp8_weights", "--quantization fp8: vLLM quantizes this bf16 checkpoint to fp8 at load "
                          "(about half the linear-layer bytes; sm >= 8.9)", {"model.quantization": "fp8"}))
    if arch.quantization is None or arch.quantization.bits > 4:
        out.append(Change("checkpoint", "use a 4-bit AWQ/GPTQ checkpoint of this model (an '-AWQ' or '-GPTQ-Int4' "
                          "repo); vLLM cannot quantize to AWQ/GPTQ on the fly", {"checkpoint.quant_method": "awq"}))
    return out


def _gpu_changes(res: Resolution, request: PlanRequest) -> list[Change]:
    """More GPUs: the next valid TP when the user pinned it, else a larger GPU budget to plan over."""
    hw, s = request.hardware, res.settings
    tp, pp = s.tensor_parallel_size, s.pipeline_parallel_size
    if hw.tensor_parallel_size is not None:
        bigger = [t for t in tp_candidates(res.arch, pp, 64) if t > tp][:1]
        if not bigger and tp * pp < 64:
            nxt = min(res.arch.num_layers, pp * 2)
            if nxt > pp:
                return [Change("gpus", f"pipeline parallel {nxt} ({tp * nxt} GPUs): the heads allow no larger TP",
                               {"hardware.pipeline_parallel_size": nxt, "hardware.num_gpus": tp * nxt}, tp * nxt)]
            return []
        return [Change("gpus", f"tensor parallel {t} ({t * pp} GPUs)",
                       {"hardware.tensor_parallel_size": t, "hardware.num_gpus": max(hw.num_gpus or 0, t * pp)}, t * pp)
                for t in bigger]
    budget = hw.num_gpus or 8
    if budget >= 64:
        return []
    counts = sorted({min(64, budget * 2), min(64, cdiv(budget * 3, 2) if budget > 1 else 2)})
    return [Change("gpus", f"{n} GPUs", {"hardware.num_gpus": n}, n) for n in counts if n > budget][:2]


def _fix(tried: _Tried) -> Fix:
    res = tried.resolution
    changes: dict = {}
    for step in tried.steps:
        changes.update(step.changes)
    s = res.settings
    picked = f" (TP {s.tensor_parallel_size}, PP {s.pipeline_parallel_size})" if any(
        st.kind == "gpus" for st in tried.steps) else ""
    return Fix(
        description=" + ".join(st.description for st in tried.steps) + picked,
        changes=changes,
        kv_cache_tokens=res.result.kv_cache_tokens,
        max_concurrency=res.result.max_concurrency,
        headroom_bytes=res.margin_bytes,
    )


def propose_fixes(config: dict, request: PlanRequest, current: Resolution, limit: int = MAX_FIXES) -> list[Fix]:
    """Ranked fixes for ``current`` (the resolution of ``request``); [] when it is already useful."""
    if current.useful:
        return []
    found: list[_Tried] = []
    partial: list[_Tried] = []
    for change in _single_changes(current, request):
        tried = _try(config, request, (change,))
        if tried is None:
            continue
        if tried.resolution.useful:
            found.append(tried)
        elif tried.resolution.fits or tried.resolution.margin_bytes > current.margin_bytes:
            partial.append(tried)
    if not found:
        # Only first changes that let vLLM start, or leave some KV room, are worth a second change.
        partial = [t for t in partial if t.resolution.fits or _kv_room(t.resolution) > 0]
        found = _second_steps(config, partial)
    found.sort(key=_Tried.key)
    seen: set[tuple] = set()
    out: list[Fix] = []
    for tried in found:
        fix = _fix(tried)
        sig = tuple(sorted(fix.changes.items()))
        if sig not in seen:
            seen.add(sig)
            out.append(fix)
    return out[:limit]


def _kv_room(res: Resolution) -> int:
    return min(w.kv_cache_bytes for w in res.result.workers)


def _try(config: dict, request: PlanRequest, steps: tuple[Change, ...]) -> _Tried | None:
    """Apply the last step to ``request`` and resolve it; None when the model cannot take the change."""
    try:
        changed = apply_changes(request, steps[-1].changes, config)
        return _Tried(steps, resolve_request(config, changed), changed)
    except (ValueError, InvalidRequestError):  # e.g. heads not divisible by the new TP
        return None


def _second_steps(config: dict, partial: list[_Tried]) -> list[_Tried]:
    """A second change computed from each partial first change's own result (bounded: 4 x kinds)."""
    found: list[_Tried] = []
    pairs: set[frozenset[str]] = set()
    # Length and concurrency always come second: their values follow from the other change's result.
    partial = sorted((t for t in partial if t.steps[0].kind not in ("context", "concurrency")),
                     key=lambda t: (INVASIVENESS[t.steps[0].kind], -t.resolution.margin_bytes))
    for first in partial[:4]:
        kind = first.steps[0].kind
        # The second change is computed from the first one's result (e.g. the length fp8 weights allow).
        for second in _single_changes(first.resolution, first.request):
            pair = frozenset((kind, second.kind))
            if second.kind == kind or pair in pairs:
                continue  # each unordered pair of kinds once
            pairs.add(pair)
            tried = _try(config, first.request, (*first.steps, second))
            if tried is not None and tried.resolution.useful:
                found.append(tried)
    return found
