"""What a placement changes of what a deployment asked (pure).

The fleet plans each replica on a concrete GPU group, so the twin may run a deployment differently
than written: with a context shorter than asked (or than the model's default, which is what vLLM uses
when ``--max-model-len`` is not given), with an fp8 KV cache it was not asked for, or with a lower
``gpu_memory_utilization`` than asked (the GPU has less free). None of that may be silent: each change
is one sentence in ``Placement.adjustments`` (shown as a warning in the CLI tables), and a strict
deployment refuses such a placement instead (``RejectReason.WOULD_CHANGE_REQUEST``).

Settings the deployment left to the planner and that are the planner's to choose are not changes: the
tensor-parallel size, the utilization when none was asked (the fleet sizes it to what is free), and a
KV dtype that vLLM itself resolves from the checkpoint (fp8 KV scales).
"""

from __future__ import annotations

from planner_service.engine.models import PlanRequest, PlanResponse

# Utilizations are chosen on a 0.01 grid: below that a difference is rounding, not a change.
UTILIZATION_TOLERANCE = 0.005


def request_changes(asked: PlanRequest, plan: PlanResponse, utilization: float) -> tuple[str, ...]:
    """One sentence per setting that ``plan`` (run at ``utilization``) changes of ``asked``."""
    reasons = {e.setting: e for e in plan.explanations}
    config = plan.config
    changes: list[str] = []
    length = reasons.get("max_model_len")
    if asked.model.max_model_len is None and length is not None and length.source == "recommended":
        changes.append(f"max_model_len {config.max_model_len:,} instead of the model's default "
                       f"{plan.model.derived_max_model_len:,}: the full context does not fit here")
    elif isinstance(asked.model.max_model_len, int) and config.max_model_len != asked.model.max_model_len:
        changes.append(f"max_model_len {config.max_model_len:,} instead of the {asked.model.max_model_len:,} asked")
    kv = reasons.get("kv_cache_dtype")
    asked_kv = asked.model.kv_cache_dtype
    if asked_kv is None and kv is not None and kv.source == "recommended" and config.kv_cache_dtype != "auto":
        changes.append(f"KV cache dtype {config.kv_cache_dtype} instead of auto (the model dtype): the KV cache "
                       "holds too little otherwise")
    elif asked_kv is not None and config.kv_cache_dtype != asked_kv:
        changes.append(f"KV cache dtype {config.kv_cache_dtype} instead of the {asked_kv} asked")
    cap = asked.policy.gpu_memory_utilization
    if cap is not None and utilization < cap - UTILIZATION_TOLERANCE:
        changes.append(f"gpu_memory_utilization {utilization:.2f} instead of the {cap:.2f} asked: "
                       "the GPU has less memory free")
    return tuple(changes)
