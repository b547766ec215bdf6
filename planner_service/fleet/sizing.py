"""How much of a GPU a placement may claim, given its live free memory (pure arithmetic).

vLLM's startup rule (vllm-0.33-internals §1.2): ``requested = ceil(T x u)`` with T the CUDA total,
and startup fails unless the free memory at the baseline snapshot is at least ``requested``. That
snapshot is taken *after* the CUDA context, NCCL and cuBLAS workspaces exist (about 0.8 GiB on the
H100 capture), so the free memory the agent sees must also cover that overhead. A placement therefore
reserves ``ceil(T x u) + startup_overhead_bytes`` out of a GPU's free memory, and the utilization is
the largest 0.01 step for which that holds.

Free memory is floored to ``free_bucket_bytes`` before deriving ``u``: this is conservative (never
more than what is free) and makes many GPUs share one twin evaluation (see placement's cache).
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

GIB = 1 << 30
MIB = 1 << 20

# Utilization is chosen in steps of 1/UTILIZATION_STEPS (0.01), as people write it on the command line.
UTILIZATION_STEPS = 100


class SizingPolicy(BaseModel):
    """Margins of the fleet sizing (not vLLM settings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    startup_overhead_bytes: int = Field(
        default=1 * GIB, ge=0, description="CUDA context + NCCL + cuBLAS created before vLLM's free-memory check."
    )
    free_bucket_bytes: int = Field(default=256 * MIB, ge=1, description="Free memory is floored to this grain.")
    default_utilization: float = Field(default=0.9, gt=0, le=1, description="vLLM's default --gpu-memory-utilization.")
    require_native_fp8: bool = Field(default=True, description="fp8 weights/KV need compute capability >= 8.9.")


def requested_bytes(total_bytes: int, utilization: float) -> int:
    """What vLLM claims per GPU: ``ceil(T x u)`` (float maths, as vLLM computes it)."""
    return math.ceil(total_bytes * utilization)


def bucket_free(free_bytes: int, policy: SizingPolicy) -> int:
    return (free_bytes // policy.free_bucket_bytes) * policy.free_bucket_bytes


def max_utilization(total_bytes: int, free_bytes: int, policy: SizingPolicy, cap: float | None = None) -> float | None:
    """Largest 0.01-step ``u`` <= cap with ``ceil(T x u) + overhead <= bucketed free``; None if below 0.01."""
    if total_bytes <= 0:
        return None
    available = bucket_free(free_bytes, policy) - policy.startup_overhead_bytes
    if available <= 0:
        return None
    cap_steps = math.floor((cap if cap is not None else policy.default_utilization) * UTILIZATION_STEPS + 1e-9)
    steps = min(cap_steps, (available * UTILIZATION_STEPS) // total_bytes)
    # Float rounding in ceil(T*u) can exceed the integer bound by a byte: step down until it holds.
    while steps > 0 and requested_bytes(total_bytes, steps / UTILIZATION_STEPS) > available:
        steps -= 1
    return steps / UTILIZATION_STEPS if steps > 0 else None


def reserved_bytes(total_bytes: int, utilization: float, policy: SizingPolicy) -> int:
    """What a placement takes out of a GPU's free memory: vLLM's claim plus the pre-snapshot overhead."""
    return requested_bytes(total_bytes, utilization) + policy.startup_overhead_bytes


def utilization_steps(lowest: float, highest: float) -> list[float]:
    """All 0.01 steps from lowest to highest inclusive (ascending)."""
    lo = math.ceil(lowest * UTILIZATION_STEPS - 1e-9)
    hi = math.floor(highest * UTILIZATION_STEPS + 1e-9)
    return [s / UTILIZATION_STEPS for s in range(max(lo, 1), hi + 1)]
