"""Scheduler and step behaviour that changed between vLLM releases (pure data, read from the wheels).

Sources: reference ``vllm-engine-and-bench.md`` §1-§4 and §7, which read ``vllm/v1/core/sched/scheduler.py``,
``vllm/config/{scheduler,vllm,compilation}.py``, ``vllm/platforms/cuda.py`` and ``vllm/benchmarks/serve.py``
of the 0.10-0.33 wheels. Where the release that first shipped a change lies between two sampled wheels,
the later sampled wheel is used and the comment says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner_service.engine.profiles import parse_version


@dataclass(frozen=True)
class EngineBehaviour:
    """The version-dependent facts the simulation and the step model read."""

    version: tuple[int, int, int]
    # Async scheduling: a flag (default off) in 0.10.2-0.13, auto-on from 0.14 unless PP > 1; PP support
    # landed with PR #32359/#32618 (Jan 2026; taken as 0.16, the first sampled wheel after it).
    async_scheduling: bool
    # scheduler_reserve_full_isl (0.20+): a waiting request is admitted only if blocks for its whole
    # prompt fit; before, only its first chunk had to fit.
    admit_full_prompt: bool
    # Default cudagraph capture ceiling: min(2*MNS, 512); 1024 on data-centre Blackwell from 0.28.
    capture_ceiling: int
    # MLA decode backend on SM90: FlashMLA until 0.13, FlashAttention-MLA from 0.14 (PR #27363).
    mla_backend: str
    # vllm bench serve forced temperature 0 (greedy: argmax, no sort) up to 0.14; from 0.16 the server's
    # sampling defaults apply (§2.5).
    bench_greedy: bool


def engine_behaviour(version: str, *, pipeline_parallel_size: int, compute_capability_major: int) -> EngineBehaviour:
    v = parse_version(version)
    async_default = v >= (0, 14, 0) and (pipeline_parallel_size == 1 or v >= (0, 16, 0))
    blackwell = compute_capability_major == 10
    return EngineBehaviour(
        version=v,
        async_scheduling=async_default,
        admit_full_prompt=v >= (0, 20, 0),
        capture_ceiling=1024 if blackwell and v >= (0, 28, 0) else 512,
        mla_backend="flash_attn_mla" if v >= (0, 14, 0) else "flashmla",
        bench_greedy=v < (0, 16, 0),
    )


def max_capture_size(behaviour: EngineBehaviour, max_num_seqs: int, max_num_batched_tokens: int) -> int:
    """Largest CUDA-graph batch (tokens): ``min(2*MNS, ceiling)``, never above MNBT (§2.3)."""
    return max(1, min(2 * max_num_seqs, behaviour.capture_ceiling, max_num_batched_tokens))
