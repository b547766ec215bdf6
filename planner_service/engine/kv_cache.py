"""KV-cache specs, page sizes, hybrid grouping, block counts and capacity, as vLLM derives them.

Mirrors ``vllm/v1/kv_cache_interface.py`` and ``vllm/v1/core/kv_cache_planning.py`` (internals §2-§3):
page bytes per layer type, hybrid Mamba block-size alignment, grouping with padding layers,
``bytes_per_block``, per-request blocks, the fit check and the max-model-len binary search.
Pure arithmetic; everything is per GPU worker (one TP rank of one PP stage).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from planner_service.engine.architecture import ModelArchitecture

SpecKind = Literal["full", "sliding", "chunked", "mla", "mamba"]


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class KvSpec:
    kind: SpecKind
    block_size: int  # tokens per block (for Mamba: the attention block size it is aligned to)
    page_bytes: int  # bytes of one block of one layer
    window: int | None = None  # sliding window or attention chunk
    state_pages: int = 1  # Mamba: pages a request holds

    def blocks_per_request(self, max_model_len: int, in_flight_tokens: int) -> int:
        if self.kind in ("full", "mla"):
            return cdiv(max_model_len, self.block_size)
        if self.kind == "sliding":
            assert self.window is not None
            return cdiv(min(self.window - 1 + in_flight_tokens, max_model_len), self.block_size) + 1
        if self.kind == "chunked":
            assert self.window is not None
            return cdiv(min(self.window + in_flight_tokens, max_model_len), self.block_size)
        return self.state_pages


@dataclass(frozen=True)
class KvGroup:
    spec: KvSpec
    num_layers: int  # real layers in the group (padding slots excluded)


@dataclass(frozen=True)
class KvLayout:
    """How one worker's KV cache is organised."""

    groups: tuple[KvGroup, ...]
    bytes_per_block: int
    block_size: int  # the attention block size vLLM reports
    padding_layers: int
    hybrid_manager_disabled: bool
    kv_bytes_per_token: int  # attention KV bytes per token, all attention layers of the worker

    def blocks_per_request(self, max_model_len: int, in_flight_tokens: int) -> int:
        return sum(g.spec.blocks_per_request(max_model_len, in_flight_tokens) for g in self.groups)

    def needed_bytes(self, max_model_len: int, in_flight_tokens: int) -> int:
        return self.bytes_per_block * self.blocks_per_request(max_model_len, in_flight_tokens)


def attention_bytes_per_token(arch: ModelArchitecture, tp: int, kv_dtype: str, kv_dtype_bytes: int) -> int:
    """KV bytes per token of one attention layer on one TP rank."""
    if arch.mla is not None:
        if kv_dtype == "fp8_ds_mla":
            return 656
        return (arch.mla.kv_lora_rank + arch.mla.qk_rope_head_dim) * kv_dtype_bytes  # replicated, not sharded
    kv_heads = max(1, arch.num_kv_heads // tp)
    return 2 * kv_heads * arch.head_dim * kv_dtype_bytes


def mamba_page_bytes(arch: ModelArchitecture, tp: int, state_dtype_bytes: int) -> int:
    """Unpadded bytes of one request's Mamba / linear-attention state on one TP rank."""
    m = arch.mamba
    assert m is not None
    conv_rows = m.conv_kernel - 1
    if m.kind == "gdn":
        conv = (2 * m.num_k_heads * m.k_head_dim + m.num_v_heads * m.v_head_dim) // tp * conv_rows
        ssm = (m.num_v_heads // tp) * m.v_head_dim * m.k_head_dim
        return (conv + ssm) * state_dtype_bytes
    if m.kind == "mamba2":
        groups = m.n_groups if m.n_groups % tp == 0 else tp
        conv = conv_rows * (m.intermediate_size + 2 * groups * m.state_size) // tp
        ssm = (m.num_heads // tp) * m.head_dim * m.state_size
        ssm_bytes = 4 if m.ssm_dtype_fp32 else state_dtype_bytes
        return conv * state_dtype_bytes + ssm * ssm_bytes
    conv = conv_rows * m.intermediate_size // tp
    ssm = m.intermediate_size // tp * m.state_size
    return (conv + ssm) * state_dtype_bytes


def _group_size(bucket_sizes: list[int], ratio: float) -> int:
    """Layers per KV group: the largest per-type count when under ``ratio`` x the smallest, else the smallest
    (``_get_kv_cache_groups_uniform_page_size``; the ratio is 1.0 in 0.10-0.11, 1.25 in 0.12-0.17, 1.5 since)."""
    smallest, largest = min(bucket_sizes), max(bucket_sizes)
    return largest if largest < ratio * smallest else smallest


def build_layout(
    arch: ModelArchitecture,
    layers: range,
    tp: int,
    kv_dtype: str,
    kv_dtype_bytes: int,
    state_dtype_bytes: int,
    block_size: int,
    mamba_state_pages: int,
    group_ratio: float = 1.5,
) -> KvLayout:
    """Group the layers of one worker and size a block (``_get_kv_cache_groups_uniform_page_size``)."""
    kinds = [arch.layer_kinds[i] for i in layers]
    per_token = attention_bytes_per_token(arch, tp, kv_dtype, kv_dtype_bytes)
    # Chunked local attention auto-disables the hybrid manager: its layers (and sliding ones) become full.
    hma_off = "chunked" in kinds and "mamba" not in kinds
    if hma_off:
        kinds = ["full" if k in ("sliding", "chunked") else k for k in kinds]
    attn_kinds = [k for k in kinds if k in ("full", "sliding", "chunked")]
    bs = block_size
    mamba_layers = kinds.count("mamba")
    if mamba_layers and attn_kinds:
        mamba_page = mamba_page_bytes(arch, tp, state_dtype_bytes)
        bs = bs * cdiv(mamba_page, bs * per_token)  # attention page >= Mamba page
    page = bs * per_token
    specs: dict[str, KvSpec] = {}
    counts: dict[str, int] = {}
    for kind in kinds:
        if kind == "none":
            continue
        if kind == "mamba":
            if not attn_kinds:  # pure Mamba: the page is the state itself
                page_m = mamba_page_bytes(arch, tp, state_dtype_bytes)
                spec = KvSpec("mamba", bs, page_m, state_pages=mamba_state_pages)
            else:
                spec = KvSpec("mamba", bs, page, state_pages=mamba_state_pages)  # padded to the attention page
        elif kind == "full":
            spec = KvSpec("mla" if arch.mla is not None else "full", bs, page)
        elif kind == "sliding":
            spec = KvSpec("sliding", bs, page, window=arch.sliding_window)
        else:
            spec = KvSpec("chunked", bs, page, window=arch.attention_chunk_size)
        specs.setdefault(spec.kind, spec)
        counts[spec.kind] = counts.get(spec.kind, 0) + 1
    if not specs:
        return KvLayout((), 0, bs, 0, hma_off, 0)
    if len(specs) == 1:
        (kind, spec), = specs.items()
        n = counts[kind]
        return KvLayout((KvGroup(spec, n),), n * spec.page_bytes, bs, 0, hma_off, per_token * len(attn_kinds))
    size = _group_size(list(counts.values()), group_ratio)
    groups: list[KvGroup] = []
    padding = 0
    for kind, spec in specs.items():
        n = counts[kind]
        num_groups = cdiv(n, size)
        for g in range(num_groups):
            members = len(range(g, n, num_groups))  # layers[g::num_groups]
            groups.append(KvGroup(spec, members))
        padding += num_groups * size - n
    bytes_per_block = size * max(s.page_bytes for s in specs.values())
    return KvLayout(tuple(groups), bytes_per_block, bs, padding, hma_off, per_token * len(attn_kinds))


@dataclass(frozen=True)
class FitCheck:
    fits: bool
    needed_bytes: int
    check_bytes: int  # KV memory the check compares against
    estimated_max_model_len: int  # 0 when even one token does not fit


def check_fit(
    layout: KvLayout, kv_bytes: int, max_model_len: int, in_flight_tokens: int, reserve_null_block: bool
) -> FitCheck:
    """vLLM's ``_check_enough_kv_cache_memory`` plus ``_estimate_max_model_len_from_groups``."""
    check = kv_bytes - (layout.bytes_per_block if reserve_null_block else 0)
    needed = layout.needed_bytes(max_model_len, in_flight_tokens)
    if check > 0 and needed <= check:
        return FitCheck(True, needed, check, max_model_len)
    return FitCheck(False, needed, check, estimate_max_model_len(layout, check, max_model_len, in_flight_tokens))


def estimate_max_model_len(layout: KvLayout, check_bytes: int, upper: int, in_flight_tokens: int) -> int:
    """Largest length in [1, upper] whose per-request KV fits ``check_bytes`` (binary search), else 0."""
    if check_bytes <= 0 or layout.bytes_per_block == 0:
        return 0
    lo, hi, best = 1, upper, 0
    while lo <= hi:
        mid = (lo + hi) // 2
        if layout.needed_bytes(mid, in_flight_tokens) <= check_bytes:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


def capacity(
    layout: KvLayout, num_blocks: int, max_model_len: int, in_flight_tokens: int, tokens_rule: str
) -> tuple[int, float]:
    """("GPU KV cache size" tokens, "Maximum concurrency") from the engine's block count."""
    per_request = layout.blocks_per_request(max_model_len, in_flight_tokens)
    concurrency = num_blocks / per_request if per_request else math.inf
    if tokens_rule == "blocks_per_group":
        tokens = num_blocks // max(1, len(layout.groups)) * layout.block_size
    else:
        tokens = int(concurrency * max_model_len)
    return tokens, concurrency
