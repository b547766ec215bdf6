"""Tensor / pipeline parallel size (and, under KV pressure, fp8 KV): a bounded search over the twin.

Tiers, first useful result wins (``recommend_memory.meets``):
1. TP alone at the target length, smallest divisor-valid TP first. fp8 KV (when it may be recommended)
   is tried at a TP before growing it only where growing costs more than fp8 KV does: on the last TP the
   GPUs allow, or on PCIe before TP would exceed 2 (vLLM disables its custom all-reduce for more than
   two PCIe-only GPUs). On NVLink, TP grows first and the KV cache stays in the model dtype.
2. TP alone with a shorter context (auto-fit), when the user did not set the length.
3. Pipeline parallel, only when TP alone cannot fit: the GPU count allows no larger divisor-valid TP
   or the heads forbid one. Target length, then a shorter one.
If nothing fits, the largest TP-only candidate is returned failing (fixes take over from there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from planner_service.engine.architecture import ModelArchitecture
from planner_service.engine.errors import InvalidRequestError
from planner_service.engine.memory import MemoryResult, validate_parallelism
from planner_service.engine.models import Interconnect
from planner_service.engine.recommend_memory import Target, length_with_headroom, meets

_POWERS = (1, 2, 4, 8, 16, 32, 64)
DEFAULT_GPU_BUDGET = 8  # one node, when the request does not say how many GPUs there are
MAX_PP = 16
GPUS_PER_NODE = 8

# evaluate(tp, pp, kv_cache_dtype, max_model_len) -> MemoryResult
Evaluator = Callable[[int, int, str, "int | None"], MemoryResult]


@dataclass(frozen=True)
class ParallelChoice:
    tensor_parallel_size: int
    pipeline_parallel_size: int
    kv_cache_dtype: str
    result: MemoryResult
    max_model_len: int | None  # the length setting evaluated (None: vLLM auto-fit)
    useful: bool  # meets the target (possibly with a shorter length, see ``reduced``)
    reduced: bool  # the length was auto-fitted below the target
    tp_reason: str
    pp_reason: str
    kv_reason: str | None  # set when fp8 KV was chosen for KV pressure
    evaluations: int


def _no_kv_room(result: MemoryResult) -> bool:
    return min(w.kv_cache_bytes for w in result.workers) <= 0


def valid_tp(arch: ModelArchitecture, tp: int, pp: int) -> bool:
    try:
        validate_parallelism(arch, tp, pp)
    except InvalidRequestError:
        return False
    return True


def tp_candidates(arch: ModelArchitecture, pp: int, gpu_budget: int) -> list[int]:
    """Powers of two plus the whole budget (e.g. 6 GPUs), that divide the heads, within one node.

    Beyond one node (8 GPUs) vLLM's guidance is TP within the node and PP across nodes, so TP-only
    sizes stop at 8 and larger budgets go through ``pp_candidates``.
    """
    limit = max(1, gpu_budget // pp)
    if limit > GPUS_PER_NODE:
        limit = GPUS_PER_NODE
    sizes = sorted({t for t in _POWERS if t <= limit} | {limit})
    return [t for t in sizes if valid_tp(arch, t, pp)]


def pp_candidates(arch: ModelArchitecture, gpu_budget: int, beyond: int) -> list[tuple[int, int]]:
    """(tp, pp) with pp > 1 that use more GPUs than ``beyond`` (the largest TP-only size): the largest TP
    combined with more stages, or layouts that use the whole budget; fewest GPUs, then fewest stages."""
    pairs = set()
    for pp in range(2, min(MAX_PP, arch.num_layers, gpu_budget) + 1):
        for tp in tp_candidates(arch, pp, gpu_budget):
            if tp * pp > beyond and (tp == beyond or tp * pp == gpu_budget) and tp * pp <= gpu_budget:
                pairs.add((tp, pp))
    return sorted(pairs, key=lambda p: (p[0] * p[1], p[1]))


def choose_parallel(
    arch: ModelArchitecture,
    evaluate: Evaluator,
    target: Target,
    kv_dtype: str,
    *,
    user_tp: int | None,
    user_pp: int | None,
    num_gpus: int | None,
    interconnect: Interconnect,
    fp8_allowed: bool,
    may_shorten: bool,
) -> ParallelChoice:
    budget = num_gpus or DEFAULT_GPU_BUDGET
    pp = user_pp or 1
    validate_parallelism(arch, 1, pp)  # a stage count the layers cannot take is the PP's fault, not TP's
    if user_tp is not None:
        tps = [user_tp]
    else:
        tps = tp_candidates(arch, pp, budget)
        if not tps:
            raise InvalidRequestError.for_field(
                "hardware.tensor_parallel_size", "no tensor parallel size divides the model's heads on these GPUs"
            )
    count = 0

    def run(tp: int, pp_: int, kv: str, length: int | None) -> MemoryResult:
        nonlocal count
        count += 1
        return evaluate(tp, pp_, kv, length)

    def done(tp, pp_, kv, res, length, useful, reduced, tp_why, pp_why, kv_why=None) -> ParallelChoice:
        return ParallelChoice(tp, pp_, kv, res, length, useful, reduced, tp_why, pp_why, kv_why, count)

    def shortened(tp: int, pp_: int, kv: str) -> tuple[MemoryResult, int | None] | None:
        """Auto-fit, then back off to keep the policy headroom; None unless the result is useful."""
        res = run(tp, pp_, kv, None)
        if not res.fits:
            return None
        length = length_with_headroom(res, target)
        if length < res.max_model_len:
            if length < 1:
                return None
            res = run(tp, pp_, kv, length)
        return (res, length) if meets(res, target, shortened=True) else None

    pcie = interconnect == Interconnect.PCIE
    link = "PCIe" if pcie else "NVLink"
    pp_why = "set by the user" if user_pp else "one stage: tensor parallel alone fits"
    what = (f"the weights plus a useful KV cache (one {target.max_model_len or 'auto-fit'}-token request and "
            f"{target.concurrency} x {target.request_tokens}-token requests)")
    tp_why = "set by the user" if user_tp else f"smallest valid tensor parallel size that fits {what}; {link}"
    fp8_why = ("KV pressure: the target does not fit with KV in the model dtype at this size; fp8 KV halves the "
               "KV bytes per token (sm >= 8.9)")

    # Tier 1: TP alone at the target length.
    no_room: set[int] = set()  # sizes where weights + activations leave no KV memory at all
    for i, tp in enumerate(tps):
        res = run(tp, pp, kv_dtype, target.max_model_len)
        if _no_kv_room(res):
            no_room.add(tp)
            continue  # neither fp8 KV nor a shorter context can help this size
        if meets(res, target):
            return done(tp, pp, kv_dtype, res, target.max_model_len, True, False, tp_why, pp_why)
        nxt = tps[i + 1] if i + 1 < len(tps) else None
        if fp8_allowed and (nxt is None or (pcie and nxt > 2)):
            res8 = run(tp, pp, "fp8", target.max_model_len)
            if meets(res8, target):
                why = tp_why if nxt is None or user_tp else (
                    f"{tp_why}; fp8 KV at {tp} rather than TP {nxt} over PCIe, which loses vLLM's custom all-reduce")
                return done(tp, pp, "fp8", res8, target.max_model_len, True, False, why, pp_why, fp8_why)

    # Tier 2: TP alone with the longest context that fits (only when the length is ours to choose).
    if may_shorten and target.max_model_len is not None:
        for tp in (t for t in tps if t not in no_room):
            best: tuple[MemoryResult, int | None, str] | None = None
            for kv in (kv_dtype, "fp8") if fp8_allowed else (kv_dtype,):
                got = shortened(tp, pp, kv)
                if got is not None and (best is None or got[0].max_model_len > best[0].max_model_len):
                    best = (got[0], got[1], kv)
            if best is not None:
                why = "set by the user" if user_tp else (
                    f"smallest valid tensor parallel size that fits the weights and a useful KV cache; the "
                    f"{target.max_model_len}-token target fits at no size the GPUs allow; {link}")
                kv_why = fp8_why.replace("the target", "the target length") if best[2] == "fp8" else None
                return done(tp, pp, best[2], best[0], best[1], True, True, why, pp_why, kv_why)

    # Tier 3: pipeline parallel, only when TP alone cannot fit.
    if user_tp is None and user_pp is None:
        pairs = pp_candidates(arch, budget, max(tps))[:12]
        # The pair with the most GPUs holds the least weight per GPU: when even it has no KV room, none has.
        if pairs and _no_kv_room(run(*max(pairs, key=lambda p: p[0] * p[1]), kv_dtype, target.max_model_len)):
            pairs = []
        lengths = [target.max_model_len]
        if may_shorten and target.max_model_len is not None:
            lengths.append(None)
        for length in lengths:
            for tp, pp_ in pairs:
                for kv in (kv_dtype, "fp8") if fp8_allowed else (kv_dtype,):
                    if length is None:
                        got = shortened(tp, pp_, kv)
                        res, used = got if got is not None else (None, None)
                    else:
                        res, used = run(tp, pp_, kv, length), length
                    if res is not None and meets(res, target, shortened=length is None):
                        cause = ("the heads allow no larger tensor parallel size" if max(tps) < budget
                                 else f"{budget} GPUs allow no larger tensor parallel size")
                        pp_reason = f"tensor parallel alone cannot fit: {cause}; {pp_} stages of TP {tp}"
                        return done(tp, pp_, kv, res, used, True, length is None and target.max_model_len is not None,
                                    f"largest valid tensor parallel size within a pipeline stage; {link}",
                                    pp_reason, fp8_why if kv == "fp8" else None)

    tp = tps[-1]
    res = run(tp, pp, kv_dtype, target.max_model_len)
    why = "set by the user" if user_tp else f"nothing fits {what}: the largest valid size the GPUs allow"
    if res.fits and fp8_allowed:  # starts but holds too little: fp8 KV still doubles what it holds
        res8 = run(tp, pp, "fp8", target.max_model_len)
        if res8.fits and res8.kv_cache_tokens > res.kv_cache_tokens:
            return done(tp, pp, "fp8", res8, target.max_model_len, False, False, why, pp_why,
                        fp8_why + "; still short of the target (see fixes)")
    return done(tp, pp, kv_dtype, res, target.max_model_len, False, False, why, pp_why)
