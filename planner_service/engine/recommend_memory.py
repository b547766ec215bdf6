"""Memory-side recommendations: what "fits usefully" means, utilization, KV dtype and quantization advice.

A configuration fits *usefully* when vLLM starts (the twin's ``fits``) and every worker's KV cache also
holds one request at the target length and ``concurrency`` requests of ``prompt + gen`` tokens, with the
policy headroom left over. ``margin_bytes`` is that leftover (negative: short by that much); fixes report
it as their headroom. Everything here is pure and takes twin results, never guesses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from planner_service.engine import kv_cache
from planner_service.engine.architecture import ModelArchitecture
from planner_service.engine.gpus import GpuSpec
from planner_service.engine.memory import MemoryResult
from planner_service.engine.models import GIB, Explanation, Interconnect
from planner_service.engine.profiles import VersionProfile

MIB = 1 << 20
USEFUL_CONTEXT_TOKENS = 4096
# Consumer cards often drive a display and run a desktop compositor that grows after vLLM starts.
CONSUMER_UTILIZATION_CAP = 0.90
# Other processes' usage moves a little between the measurement and vLLM's own check.
FREE_MEMORY_MARGIN_BYTES = 128 * MIB
# vLLM subtracts the same margin in its own --kv-cache-memory suggestion (internals §1.7).
KV_SUGGESTION_MARGIN_BYTES = 150 * MIB
FP8_KV_DTYPES = frozenset({"fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_ds_mla", "fp8_per_token_head"})


@dataclass(frozen=True)
class Target:
    """What the KV cache must hold for a plan to count as useful."""

    max_model_len: int | None  # None: auto-fit (the length is whatever fits)
    request_tokens: int  # prompt + gen of one workload request
    concurrency: int
    headroom_bytes: int
    min_useful_len: int  # the shortest fitted length still worth recommending
    reserve_null_block: bool  # the profile keeps one block back (vLLM >= 0.21)


def make_target(derived_len: int, max_len: int | None, prompt: int, gen: int, concurrency: int,
                headroom_bytes: int, profile: VersionProfile) -> Target:
    useful = min(derived_len, max(USEFUL_CONTEXT_TOKENS, prompt + gen))
    return Target(max_len, prompt + gen, concurrency, headroom_bytes, useful,
                  profile.kv_tokens_rule == "concurrency")


def margin_bytes(result: MemoryResult, target: Target) -> int:
    """KV bytes left on the tightest worker after the target's requests, the null block and the headroom."""
    worst: int | None = None
    for w in result.workers:
        layout = w.layout
        if not layout.bytes_per_block:
            continue
        one_long = layout.needed_bytes(result.max_model_len, result.in_flight_tokens)
        tokens = min(target.request_tokens, result.max_model_len)
        workload = target.concurrency * layout.needed_bytes(tokens, result.in_flight_tokens)
        null = layout.bytes_per_block if target.reserve_null_block else 0
        left = w.kv_cache_bytes - null - max(one_long, workload) - target.headroom_bytes
        worst = left if worst is None else min(worst, left)
    return worst if worst is not None else 0


def workload_capacity(result: MemoryResult, target: Target) -> int:
    """How many ``prompt + gen``-token requests the engine's KV blocks hold at once."""
    layout = result.binding.layout
    per = layout.blocks_per_request(min(target.request_tokens, result.max_model_len), result.in_flight_tokens)
    if not result.fits or per <= 0:
        return 0
    return max(0, result.num_blocks - int(target.reserve_null_block)) // per


def meets(result: MemoryResult, target: Target, shortened: bool = False) -> bool:
    """Useful: starts, holds the target, and (auto-fit or shortened) keeps at least a useful length."""
    if not result.fits or margin_bytes(result, target) < 0:
        return False
    if shortened or target.max_model_len is None:
        return result.max_model_len >= target.min_useful_len
    return True


def length_with_headroom(result: MemoryResult, target: Target) -> int:
    """The largest length <= the fitted one whose single request still leaves the policy headroom."""
    best = result.max_model_len
    for w in result.workers:
        layout = w.layout
        if not layout.bytes_per_block:
            continue
        null = layout.bytes_per_block if target.reserve_null_block else 0
        check = w.kv_cache_bytes - null - target.headroom_bytes
        best = min(best, kv_cache.estimate_max_model_len(layout, check, result.max_model_len,
                                                         result.in_flight_tokens))
    return best


# --------------------------------------------------------------------------------------------------
# gpu_memory_utilization
# --------------------------------------------------------------------------------------------------


def free_memory_bound(total_bytes: int, free_bytes: int | None) -> float | None:
    """Largest utilization (2 decimals) with ceil(total*u) below the free memory, minus a margin."""
    if free_bytes is None:
        return None
    return math.floor((free_bytes - FREE_MEMORY_MARGIN_BYTES) / total_bytes * 100) / 100


def utilization_cap(gpu: GpuSpec, default: float, free_bytes: int | None) -> float:
    cap = min(default, CONSUMER_UTILIZATION_CAP) if gpu.consumer else default
    bound = free_memory_bound(gpu.memory_total_bytes, free_bytes)
    if bound is not None:
        cap = min(cap, bound)
    return max(0.01, cap)


def recommend_utilization(
    gpu: GpuSpec, profile: VersionProfile, user_value: float | None, free_bytes: int | None
) -> tuple[float, Explanation, list[str]]:
    """The user's value, else the profile default capped for consumer cards and for free memory."""
    total = gpu.memory_total_bytes
    bound = free_memory_bound(total, free_bytes)
    warnings: list[str] = []
    if user_value is not None:
        if free_bytes is not None and free_bytes < math.ceil(total * user_value):
            warnings.append(
                f"gpu_memory_utilization {user_value:g} asks for {math.ceil(total * user_value) / GIB:.2f} GiB but only "
                f"{free_bytes / GIB:.2f} GiB are free: vLLM refuses to start; use at most {max(bound or 0, 0.01):g} "
                "or --kv-cache-memory-bytes"
            )
        return user_value, Explanation(setting="gpu_memory_utilization", value=f"{user_value:g}", source="user",
                                       reason="set by the user"), warnings
    default = profile.default_gpu_memory_utilization
    value = utilization_cap(gpu, default, free_bytes)
    parts = [f"{profile.name} default {default:g}"]
    if gpu.consumer and value <= CONSUMER_UTILIZATION_CAP < default:
        parts.append(f"capped at {CONSUMER_UTILIZATION_CAP:g} on a consumer card that may drive a display")
    if bound is not None and value == max(0.01, bound) and bound < default:
        parts.append(
            f"other processes hold memory: {free_bytes / GIB:.2f} of {total / GIB:.2f} GiB free, and vLLM refuses to "
            f"start when free < ceil(total x utilization), so at most {bound:g}"
        )
    if bound is not None and bound <= 0:
        warnings.append(f"only {free_bytes / GIB:.2f} GiB free on {gpu.name}: no utilization can start vLLM")
    source = "default" if value == default else "recommended"
    return value, Explanation(setting="gpu_memory_utilization", value=f"{value:g}", source=source,
                              reason="; ".join(parts)), warnings


def kv_cache_memory_alternative(result: MemoryResult, free_bytes: int) -> int | None:
    """vLLM's own "fully utilize" suggestion: free - (weights + non-torch + activation + graphs) - 150 MiB."""
    best: int | None = None
    for w in result.workers:
        value = (free_bytes - w.weights_bytes - w.non_torch_bytes - w.activation_peak_bytes - w.cuda_graph_bytes
                 - KV_SUGGESTION_MARGIN_BYTES)
        best = value if best is None else min(best, value)
    return best if best is not None and best > 0 else None


# --------------------------------------------------------------------------------------------------
# kv_cache_dtype and quantization
# --------------------------------------------------------------------------------------------------


def fp8_kv_recommendable(arch: ModelArchitecture, gpu: GpuSpec, user_kv: str | None, resolved_kv: str) -> bool:
    """fp8 KV may be *recommended* only when the user left it unset and the GPU has fp8 (cc >= 8.9)."""
    return (user_kv is None and resolved_kv == "auto" and gpu.supports_fp8 and arch.attention_layers > 0)


def kv_dtype_warnings(gpu: GpuSpec, kv_dtype: str, user_set: bool) -> list[str]:
    if not user_set or kv_dtype not in FP8_KV_DTYPES or gpu.supports_fp8:
        return []
    return [
        f"kv_cache_dtype {kv_dtype} on {gpu.name} (sm {gpu.compute_capability} < 8.9): there is no fp8 hardware "
        "support; the FlashAttention backend refuses fp8 KV there, vLLM falls back to a slower Triton/FlashInfer "
        "path and some paths fail (vLLM #26431, #7714). Use kv_cache_dtype auto on this GPU."
    ]


def what_if_text(arch: ModelArchitecture, user_method: str | None) -> str:
    q = arch.quantization
    assert q is not None
    shape = f"{q.bits}-bit, groups of {q.group_size}" if q.group_size else f"{q.bits}-bit, per-channel scales"
    return (f"what-if: --quantization {user_method or q.method} on an unquantized {arch.checkpoint_dtype} checkpoint "
            f"is sized as {'an' if q.method[0] in 'aeiou' else 'a'} {q.method} checkpoint of this model ({shape}); "
            f"vLLM cannot quantize to {q.method} on "
            "the fly, so serve such a checkpoint (e.g. an -AWQ / -GPTQ-Int4 / -W8A8 repo of this model) in place "
            "of this model id")


def quantization_warnings(arch: ModelArchitecture, gpu: GpuSpec, user_method: str | None) -> list[str]:
    q = arch.quantization
    if q is not None and q.what_if:
        return [what_if_text(arch, user_method)]
    if q is None or q.kind != "fp8" or gpu.supports_fp8:
        return []
    how = "the --quantization fp8 request" if user_method else "this fp8 checkpoint"
    return [f"{how} on {gpu.name} (sm {gpu.compute_capability} < 8.9): no fp8 tensor cores; vLLM runs fp8 weights "
            "weight-only (Marlin) at best, with no fp8 compute speed-up"]


def quantization_advice(arch: ModelArchitecture, gpu: GpuSpec) -> str:
    """Which quantization would shrink the weights, and which checkpoint kind it needs."""
    if arch.quantization is not None and arch.quantization.bits <= 4:
        return "the checkpoint is already 4-bit; only more GPUs (tensor/pipeline parallel) reduce weights per GPU"
    fp8 = ("online fp8 (`--quantization fp8` on this bf16 checkpoint; vLLM quantizes at load, about half the "
           "linear-layer bytes)" if gpu.supports_fp8 and arch.quantization is None else None)
    four_bit = ("a pre-quantized 4-bit checkpoint (AWQ or GPTQ, e.g. an '-AWQ' / '-GPTQ-Int4' repo of this model; "
                "vLLM cannot quantize to AWQ/GPTQ on the fly)")
    if fp8:
        return f"use {fp8}, or {four_bit}"
    no_fp8 = "" if gpu.supports_fp8 else f" (online fp8 needs compute capability >= 8.9; {gpu.name} is sm {gpu.compute_capability})"
    return f"use {four_bit}{no_fp8}"


def quantization_explanation(arch: ModelArchitecture, gpu: GpuSpec, user_method: str | None,
                             weights_too_big: bool) -> Explanation:
    q = arch.quantization
    if user_method and q is not None and q.what_if:
        value, source, reason = user_method, "user", what_if_text(arch, user_method)
    elif user_method:
        value, source, reason = user_method, "user", "set by the user"
    elif q is not None:
        value, source, reason = q.method, "derived", f"from the checkpoint's quantization_config ({q.kind}, {q.bits}-bit)"
    else:
        value, source, reason = "none", "default", f"unquantized {arch.checkpoint_dtype} checkpoint"
    if weights_too_big:
        reason += f"; the weights do not fit the GPUs available: {quantization_advice(arch, gpu)}"
    return Explanation(setting="quantization", value=value, source=source, reason=reason)


def interconnect_of(gpu: GpuSpec, given: Interconnect | None) -> Interconnect:
    """The user's statement, else NVLink when the GPU type has it; PCIe (the safer guess) otherwise."""
    if given is not None:
        return given
    return Interconnect.NVLINK if gpu.nvlink else Interconnect.PCIE
