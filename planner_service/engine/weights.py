"""Weights per GPU worker, as "Model loading took" reports them (internals §4).

Column/row-parallel linears are split by TP; KV projections are replicated once ``tp > kv_heads``;
vocab is padded to 64 and split by TP; tied embeddings are stored once (twice under PP when the first and
last stage differ); MoE experts are split over ``tp`` (intermediate dim) or, with expert parallel, whole
experts are spread over ranks. Quantized linears use ``QuantConfig.linear_bytes`` (scales and zeros in).

MXFP4 MoE experts (gpt-oss) are sized as the kernel vLLM picks lays them out (``Mxfp4Kernel``): 4-bit
values (uint8, two per byte) and one e8m0 scale byte per 32 along the input dimension, with per-kernel
padding, bias dtype and, on Hopper's triton_kernels path, the swizzled scale copy (rows padded to 256,
``HopperMXScaleLayout``) held beside the checkpoint's scales until 0.24.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from planner_service.engine.architecture import ModelArchitecture
from planner_service.engine.quantization import Part

_VOCAB_PAD = 64
_MX_BLOCK = 32  # elements per e8m0 scale


@dataclass(frozen=True)
class Mxfp4Kernel:
    """How vLLM lays out MXFP4 expert weights for the MoE kernel it picks (``Mxfp4MoEMethod.create_weights``
    and ``process_weights_after_loading``)."""

    backend: Literal["marlin", "flashinfer", "triton"]
    hidden_multiple: int  # hidden size padded to this
    intermediate_multiple: int  # intermediate size per partition padded to this
    bias_bytes: int  # w13/w2 bias element size (triton converts them to fp32)
    scale_row_multiple: int = 1  # triton's Hopper swizzled scale layout pads rows (output features) to 256
    keeps_checkpoint_scales: bool = False  # the original scale parameters stay allocated beside the copy


MARLIN_MXFP4 = Mxfp4Kernel("marlin", 256, 128, 2)


def mxfp4_kernel(hopper_layout: str, compute_capability: tuple[int, int]) -> Mxfp4Kernel:
    """The MXFP4 MoE layout on this GPU for a version's Hopper rule (``VersionProfile.mxfp4_hopper_layout``).

    Ampere/Ada and consumer Blackwell (SM120: triton_kernels supports SM90-SM100 only) get Marlin
    (n % 256, k % 128); data-centre Blackwell FlashInfer's TRT-LLM kernels (256 / 256); Hopper per version.
    """
    major = compute_capability[0]
    if major == 10:
        return Mxfp4Kernel("flashinfer", 256, 256, 2)
    if major != 9 or hopper_layout == "marlin":
        return MARLIN_MXFP4
    swizzled = hopper_layout.startswith("triton_swizzled")
    return Mxfp4Kernel("triton", 1, 64, 4, scale_row_multiple=256 if swizzled else 1,
                       keeps_checkpoint_scales=hopper_layout.endswith("kept_scales"))


def mxfp4_experts_bytes(experts: int, hidden: int, intermediate: int, kernel: Mxfp4Kernel) -> int:
    """Bytes of ``experts`` MXFP4 experts (fused gate/up w13, down w2, their scales and biases) on one rank."""
    h = _round_up(hidden, kernel.hidden_multiple)
    i = _round_up(intermediate, kernel.intermediate_multiple)
    values = 2 * i * h // 2 + h * i // 2  # w13 (2I x H/2) and w2 (H x I/2), uint8
    scales = 2 * i * (h // _MX_BLOCK) + h * (i // _MX_BLOCK)
    kernel_scales = (_round_up(2 * i, kernel.scale_row_multiple) * (h // _MX_BLOCK)
                     + _round_up(h, kernel.scale_row_multiple) * (i // _MX_BLOCK))
    biases = (2 * i + h) * kernel.bias_bytes
    return experts * (values + kernel_scales + (scales if kernel.keeps_checkpoint_scales else 0) + biases)


@dataclass(frozen=True)
class WeightsBreakdown:
    """Bytes on one rank. ``params`` counts logical parameters on that rank (unquantized elements)."""

    bytes: float
    params: int


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _round_up(x: int, multiple: int) -> int:
    return _cdiv(x, multiple) * multiple


class _Acc:
    def __init__(self, arch: ModelArchitecture, dtype_bytes: int, mxfp4: Mxfp4Kernel = MARLIN_MXFP4) -> None:
        self.arch = arch
        self.dt = dtype_bytes
        self.mxfp4 = mxfp4
        self.bytes = 0.0
        self.params = 0
        self.layer: int | None = None  # the decoder layer being summed (per-layer ignore lists)

    def linear(self, k: int, n: int, part: Part | None, count: int = 1) -> None:
        if k <= 0 or n <= 0 or count <= 0:
            return
        quant = self.arch.quantization
        if quant is not None and part is not None and quant.quantizes(part, self.layer):
            self.bytes += count * quant.linear_bytes(k, n, self.dt)
        else:
            self.bytes += count * k * n * self.dt
        self.params += count * k * n

    def dense(self, elements: int) -> None:
        self.bytes += elements * self.dt
        self.params += elements


def kv_heads_per_rank(arch: ModelArchitecture, tp: int) -> int:
    return max(1, arch.num_kv_heads // tp)


def _attention(acc: _Acc, arch: ModelArchitecture, tp: int) -> None:
    h = arch.hidden_size
    heads = arch.num_attention_heads // tp
    if arch.mla is not None:
        m = arch.mla
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        if m.q_lora_rank:
            acc.linear(h, m.q_lora_rank, "attention")  # q_a (replicated)
            acc.dense(m.q_lora_rank)
            acc.linear(m.q_lora_rank, heads * qk, "attention")
        else:
            acc.linear(h, heads * qk, "attention")
        acc.linear(h, m.kv_lora_rank + m.qk_rope_head_dim, "attention")  # kv_a_proj_with_mqa (replicated)
        acc.dense(m.kv_lora_rank)
        acc.linear(m.kv_lora_rank, heads * (m.qk_nope_head_dim + m.v_head_dim), "attention")
        acc.linear(heads * m.v_head_dim, h, "attention")
        return
    hd = arch.head_dim
    kvh = kv_heads_per_rank(arch, tp)
    q_heads = 2 * heads if arch.model_type == "qwen3_next" else heads  # Qwen3-Next: gated attention output
    acc.linear(h, (q_heads + 2 * kvh) * hd, "attention")
    acc.linear(heads * hd, h, "attention")
    if arch.attention_bias:
        acc.dense((heads + 2 * kvh) * hd)
    if arch.qk_norm:
        acc.dense(2 * hd)


def _linear_attention(acc: _Acc, arch: ModelArchitecture, tp: int) -> None:
    m = arch.mamba
    assert m is not None
    h = arch.hidden_size
    if m.kind == "gdn":
        key, val = m.num_k_heads * m.k_head_dim, m.num_v_heads * m.v_head_dim
        acc.linear(h, (2 * key + 2 * val) // tp, "linear_attention")  # in_proj_qkvz
        acc.linear(h, 2 * m.num_v_heads // tp, "linear_attention")  # in_proj_ba
        acc.dense((2 * key + val) // tp * m.conv_kernel + 2 * m.num_v_heads // tp + m.v_head_dim)
        acc.linear(val // tp, h, "linear_attention")
        return
    inter = m.intermediate_size
    groups = m.n_groups * m.state_size
    if m.kind == "mamba2":
        acc.linear(h, (2 * inter + 2 * groups + m.num_heads) // tp, "linear_attention")
        acc.dense((inter + 2 * groups) // tp * m.conv_kernel + 3 * m.num_heads // tp + inter // tp)
    else:
        acc.linear(h, 2 * inter // tp, "linear_attention")
        acc.dense(inter // tp * (m.conv_kernel + m.state_size + 2))
        acc.linear(inter // tp, 2 * m.state_size + max(1, h // 16), "linear_attention")
    acc.linear(inter // tp, h, "linear_attention")


def _experts_on_rank(num_experts: int, ep: int, rank: int = 0) -> int:
    return num_experts // ep + (1 if rank < num_experts % ep else 0)


def _mlp(acc: _Acc, arch: ModelArchitecture, layer: int, tp: int, expert_parallel: bool, ep_size: int) -> None:
    h = arch.hidden_size
    moe = arch.moe
    if moe is not None and moe.moe_layers[layer]:
        acc.dense(h * moe.num_experts)  # router, replicated, model dtype
        if expert_parallel and ep_size > 1:  # vLLM: EP size = TP x DP, whole experts per rank
            experts, inter = _experts_on_rank(moe.num_experts, ep_size), moe.moe_intermediate_size
        else:
            experts, inter = moe.num_experts, moe.moe_intermediate_size // tp
        quant = arch.quantization
        if quant is not None and quant.kind == "mxfp4" and quant.quantizes("experts"):
            acc.bytes += mxfp4_experts_bytes(experts, h, inter, acc.mxfp4)  # biases included
            acc.params += experts * (3 * h * inter + (2 * inter + h if moe.expert_bias else 0))
        else:
            acc.linear(h, 2 * inter, "experts", count=experts)
            acc.linear(inter, h, "experts", count=experts)
            if moe.expert_bias:
                acc.dense(experts * (2 * inter + h))
        if moe.shared_intermediate_size:
            shared = moe.shared_intermediate_size // tp
            acc.linear(h, 2 * shared, "shared_experts")
            acc.linear(shared, h, "shared_experts")
            if arch.model_type in ("qwen2_moe", "qwen3_next"):
                acc.dense(h)  # shared_expert_gate
        return
    if arch.intermediate_size:
        inter = arch.intermediate_size // tp
        acc.linear(h, (2 if arch.gated_mlp else 1) * inter, "mlp")
        acc.linear(inter, h, "mlp")


def weights_per_rank(
    arch: ModelArchitecture,
    dtype_bytes: int,
    tp: int,
    layers: range,
    first_stage: bool,
    last_stage: bool,
    expert_parallel: bool = False,
    mxfp4: Mxfp4Kernel = MARLIN_MXFP4,
    ep_size: int | None = None,
) -> WeightsBreakdown:
    """Bytes of one TP rank of the PP stage holding ``layers`` (``mxfp4``: the MXFP4 expert layout;
    ``ep_size``: TP x DP, default TP)."""
    ep_size = tp if ep_size is None else ep_size
    acc = _Acc(arch, dtype_bytes, mxfp4)
    h = arch.hidden_size
    acc.bytes += arch.rotary_cache_elements * dtype_bytes  # a buffer, not a parameter
    padded_vocab = _cdiv(arch.vocab_size, _VOCAB_PAD) * _VOCAB_PAD
    vocab_rows = padded_vocab // tp
    if first_stage:
        acc.dense(vocab_rows * h)
        acc.dense(arch.absolute_position_rows * h)  # GPT-2-style learned positions (replicated)
        if arch.vision_params:
            acc.dense(arch.vision_params // tp)
    if last_stage:
        acc.dense(h)  # final norm
        if not arch.tie_word_embeddings or not first_stage:
            acc.dense(vocab_rows * h)
    for layer in layers:
        acc.layer = layer
        kind = arch.layer_kinds[layer]
        acc.dense(2 * h)  # input / post-attention norms
        if kind in ("full", "sliding", "chunked"):
            _attention(acc, arch, tp)
        elif kind == "mamba":
            _linear_attention(acc, arch, tp)
        if arch.mlp_layers is None or arch.mlp_layers[layer]:
            _mlp(acc, arch, layer, tp, expert_parallel, ep_size)
    return WeightsBreakdown(bytes=acc.bytes, params=acc.params)


def total_params(arch: ModelArchitecture) -> tuple[int, int | None]:
    """(all parameters, active parameters per token for MoE) computed from the architecture."""
    full = weights_per_rank(arch, 2, 1, range(arch.num_layers), True, True).params
    if arch.moe is None:
        return full, None
    moe = arch.moe
    inactive = sum(moe.moe_layers) * (moe.num_experts - moe.experts_per_token) * 3 * arch.hidden_size * moe.moe_intermediate_size
    return full, full - inactive


def pp_layer_ranges(num_layers: int, pp: int) -> list[range]:
    """vLLM ``get_pp_indices``: n//pp layers each, one more for the ``n % pp`` ranks just before the last."""
    base, rem = divmod(num_layers, pp)
    sizes = [base] * pp
    for i in range(2, rem + 2):
        sizes[-i] += 1
    out, start = [], 0
    for size in sizes:
        out.append(range(start, start + size))
        start += size
    return out


class _PartsAcc(_Acc):
    """An ``_Acc`` that also books every linear under its ``Part`` (norms, routers, biases: "other")."""

    def __init__(self, arch: ModelArchitecture, dtype_bytes: int, mxfp4: Mxfp4Kernel = MARLIN_MXFP4) -> None:
        super().__init__(arch, dtype_bytes, mxfp4)
        self.parts: dict[str, WeightsBreakdown] = {}

    def _book(self, part: str, before: tuple[float, int]) -> None:
        old = self.parts.get(part, WeightsBreakdown(0.0, 0))
        self.parts[part] = WeightsBreakdown(old.bytes + self.bytes - before[0], old.params + self.params - before[1])

    def linear(self, k: int, n: int, part: Part | None, count: int = 1) -> None:
        before = (self.bytes, self.params)
        super().linear(k, n, part, count)
        self._book(part or "other", before)

    def dense(self, elements: int) -> None:
        before = (self.bytes, self.params)
        super().dense(elements)
        self._book("other", before)


def decoder_layer_parts(
    arch: ModelArchitecture, dtype_bytes: int, tp: int, layer: int, expert_parallel: bool = False,
    mxfp4: Mxfp4Kernel = MARLIN_MXFP4, ep_size: int | None = None,
) -> dict[str, WeightsBreakdown]:
    """One decoder layer's bytes and parameters on one TP rank, by ``Part`` (plus "other").

    The same arithmetic as ``weights_per_rank``, split so a step-time model can stream attention,
    dense MLP, shared experts and routed experts separately (a decode step reads only touched experts).
    """
    acc = _PartsAcc(arch, dtype_bytes, mxfp4)
    acc.layer = layer
    kind = arch.layer_kinds[layer]
    if kind in ("full", "sliding", "chunked"):
        _attention(acc, arch, tp)
    elif kind == "mamba":
        _linear_attention(acc, arch, tp)
    if arch.mlp_layers is None or arch.mlp_layers[layer]:
        _mlp(acc, arch, layer, tp, expert_parallel, tp if ep_size is None else ep_size)
    return acc.parts


def experts_per_rank(num_experts: int, ep_size: int, expert_parallel: bool) -> int:
    """Routed experts whose weights one rank holds (all of them, sliced, without expert parallel)."""
    return _experts_on_rank(num_experts, ep_size) if expert_parallel and ep_size > 1 else num_experts
