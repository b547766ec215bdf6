"""``max_num_seqs`` / ``max_num_batched_tokens`` from the batching mode, the workload and the KV capacity.

* throughput: a large token budget per step (>= 8192) and as many sequences as the KV cache holds at
  ``prompt + gen`` tokens each (never more than vLLM's default or the stated concurrency allow);
* latency: a small step (2048, or the whole prompt so it prefills in one step) and about ``concurrency``
  sequences, so decode steps stay short;
* balanced: vLLM's own server defaults for the GPU (what ``vllm serve`` does when nothing is set).

In every mode a recommended ``max_num_seqs`` stays consistent with the KV capacity the plan reports:
far above it (``FAR_ABOVE_CAPACITY``x) it is lowered to the next power of two of that capacity; only a
value the user set can be far above it, and then the plan warns.

Both knobs move the profiled activation peak (the sampler's MNS x vocab logits, the MNBT-token forward),
so the caller re-evaluates the twin after the final values are known.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner_service.engine.models import BatchingMode, Explanation, WorkloadOptions
from planner_service.engine.profiles import BatchDefaults

THROUGHPUT_MIN_BATCHED_TOKENS = 8192
LATENCY_BATCHED_TOKENS = 2048
LATENCY_MAX_BATCHED_TOKENS = 16384
# "far above" the KV capacity, for the balanced-mode note: MNS beyond this only queues requests.
FAR_ABOVE_CAPACITY = 4


@dataclass(frozen=True)
class Batching:
    max_num_seqs: int
    max_num_batched_tokens: int
    explanations: tuple[Explanation, ...]
    warnings: tuple[str, ...] = ()


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def resolve_batching(
    mode: BatchingMode,
    defaults: BatchDefaults,
    workload: WorkloadOptions,
    user_mns: int | None,
    user_mnbt: int | None,
    kv_capacity: int | None,
) -> Batching:
    """Resolve both knobs; ``kv_capacity`` (requests of prompt+gen tokens) is None on the first pass."""
    if mode == BatchingMode.THROUGHPUT:
        mnbt = max(THROUGHPUT_MIN_BATCHED_TOKENS, defaults.max_num_batched_tokens)
        mns = max(defaults.max_num_seqs, workload.concurrency)
        if kv_capacity is not None:
            mns = min(mns, max(1, kv_capacity))
        mnbt_why = f"throughput mode: a large step (>= {THROUGHPUT_MIN_BATCHED_TOKENS} tokens) batches more prefill"
        mns_why = "throughput mode: as many sequences as the KV cache holds at prompt+gen tokens each"
    elif mode == BatchingMode.LATENCY:
        mnbt = max(LATENCY_BATCHED_TOKENS, min(_round_up(workload.prompt_tokens, 256), LATENCY_MAX_BATCHED_TOKENS))
        mns = workload.concurrency
        if kv_capacity is not None:
            mns = min(mns, max(1, kv_capacity))
        mnbt_why = (f"latency mode: a small step ({LATENCY_BATCHED_TOKENS}, or the {workload.prompt_tokens}-token "
                    "prompt in one step) keeps decode steps short")
        mns_why = f"latency mode: about the requested concurrency ({workload.concurrency})"
    else:
        mnbt, mns = defaults.max_num_batched_tokens, defaults.max_num_seqs
        mnbt_why = mns_why = "balanced mode: vLLM's server default for this GPU"
    if kv_capacity is not None and mode != BatchingMode.BALANCED:
        mns_why += f" (KV cache holds {kv_capacity} requests of {workload.prompt_tokens + workload.gen_tokens} tokens)"

    warnings: list[str] = []
    mns_src, mnbt_src = "recommended", "recommended"
    if mode == BatchingMode.BALANCED:
        mns_src = mnbt_src = "default"
    if kv_capacity is not None and mns > FAR_ABOVE_CAPACITY * max(1, kv_capacity):
        # Never recommend a value the plan would then warn against: the KV cache holds only
        # ``kv_capacity`` requests, so more running sequences only queue while the sampler reserves
        # activation memory for every one of them. Round up to a power of two (vLLM-style sizes).
        fitted = 1 << (max(1, kv_capacity) - 1).bit_length()
        mns_why = (f"{mns_why.split(':')[0]}: {mns} would be far above the {kv_capacity} requests of "
                   f"{workload.prompt_tokens + workload.gen_tokens} tokens the KV cache holds at that setting; {fitted} "
                   "runs them all")
        mns, mns_src = fitted, "recommended"
    if user_mnbt is not None:
        mnbt, mnbt_src, mnbt_why = user_mnbt, "user", "set by the user"
    if user_mns is not None:
        mns, mns_src, mns_why = user_mns, "user", "set by the user"
    if mns > mnbt:  # vLLM requires max_num_batched_tokens >= max_num_seqs
        mns = mnbt
        mns_why += f"; capped at max_num_batched_tokens ({mnbt})"
    if user_mns is not None and kv_capacity is not None and mns > FAR_ABOVE_CAPACITY * max(1, kv_capacity):
        warnings.append(
            f"max_num_seqs {mns} is far above the {kv_capacity} requests of "
            f"{workload.prompt_tokens + workload.gen_tokens} tokens the KV cache holds: the extra sequences only "
            "queue, while the sampler still reserves activation memory for all of them"
        )
    return Batching(
        max_num_seqs=mns,
        max_num_batched_tokens=mnbt,
        explanations=(
            Explanation(setting="max_num_seqs", value=str(mns), source=mns_src, reason=mns_why),
            Explanation(setting="max_num_batched_tokens", value=str(mnbt), source=mnbt_src, reason=mnbt_why),
        ),
        warnings=tuple(warnings),
    )
