"""Build the step model's view of a planned replica: ``EngineShape`` and the KV block rule (pure).

Everything comes from the memory twin's own objects, so ``plan`` and ``bench`` see the same model: the
parsed ``ModelArchitecture``, the resolved ``VllmConfig``/``GpuSummary`` of the ``PlanResponse`` and the
binding worker's ``KvLayout`` (block size, KV groups). Per-layer weight bytes come from
``weights.decoder_layer_parts``, the same arithmetic as "Model loading took".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner_service.engine.architecture import ModelArchitecture
from planner_service.engine.errors import GpuNotFoundError
from planner_service.engine.gpus import lookup_gpu
from planner_service.engine.kv_cache import KvLayout, attention_bytes_per_token, mamba_page_bytes
from planner_service.engine.memory import kv_dtype_bytes
from planner_service.engine.models import GpuSummary, Interconnect, VllmConfig
from planner_service.engine.simulation.moe_configs import has_tuned_config
from planner_service.engine.simulation.step_cost import EngineShape, HardwareFacts, StageShape
from planner_service.engine.simulation.versions import EngineBehaviour, max_capture_size
from planner_service.engine.profiles import resolve_profile
from planner_service.engine.weights import decoder_layer_parts, experts_per_rank, mxfp4_kernel, pp_layer_ranges

_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
_VOCAB_PAD = 64
# Checkpoint formats whose linears run on fp8 tensor cores (W8A8) where the GPU has them (sm >= 8.9);
# elsewhere vLLM runs them as W8A16 (Marlin), bf16 compute over fp8 bytes.
FP8_COMPUTE_METHODS = frozenset(
    {"fp8", "fbgemm_fp8", "fp8_per_tensor", "fp8_per_block", "fp8_per_channel", "mxfp8", "modelopt"}
)


@dataclass(frozen=True)
class BlockRule:
    """KV blocks one request holds at a length, summed over the KV groups (``kv_cache_interface``).

    Full-attention / MLA groups hold ``cdiv(tokens, bs)``; sliding-window and chunked-local groups free
    what fell out of the window (at most ``cdiv(W - 1, bs) + 1`` plus the new chunk's blocks);
    Mamba/GDN groups hold a fixed number of state pages.
    """

    block_size: int
    full_groups: int
    windowed_groups: int
    window: int
    state_blocks: int

    def blocks(self, tokens: np.ndarray | int, new_tokens: np.ndarray | int = 1) -> np.ndarray | int:
        full = -(-np.asarray(tokens) // self.block_size)
        held = self.full_groups * full + self.state_blocks
        if self.windowed_groups:
            cap = -(-(self.window - 1) // self.block_size) + 1 + -(-np.asarray(new_tokens) // self.block_size)
            held = held + self.windowed_groups * np.minimum(full, cap)
        return held


def block_rule(layout: KvLayout) -> BlockRule:
    full = windowed = state = 0
    window = 0
    for group in layout.groups:
        kind = group.spec.kind
        if kind in ("full", "mla"):
            full += 1
        elif kind in ("sliding", "chunked"):
            windowed += 1
            window = max(window, group.spec.window or 0)
        else:
            state += group.spec.state_pages
    if not (full or windowed or state):
        full = 1
    return BlockRule(layout.block_size, full, windowed, window, state)


def hardware_facts(gpu: GpuSummary, interconnect: Interconnect | str) -> HardwareFacts:
    major = int((gpu.compute_capability or "8.0").split(".")[0])
    return HardwareFacts(
        memory_bandwidth_bytes_per_second=float(gpu.memory_bandwidth_bytes_per_second or 0.0),
        bf16_flops_per_second=float(gpu.bf16_tflops or 0.0) * 1e12,
        fp8_flops_per_second=gpu.fp8_tflops * 1e12 if gpu.fp8_tflops else None,
        compute_capability_major=major,
        interconnect=interconnect.value if isinstance(interconnect, Interconnect) else str(interconnect),
        gpu_name=gpu.name,
    )


def _moe_kernel_dtype(arch: ModelArchitecture, fp8_compute: bool) -> tuple[str | None, tuple[int, int] | None, bool]:
    """(config-file dtype, block shape, runs on the Triton fused-MoE kernel at all).

    bf16/fp16 experts: no dtype suffix; fp8 experts on fp8 tensor cores: ``fp8_w8a8`` (+ block shape);
    fp8 without fp8 tensor cores, int4/int8 weight-only and MXFP4/NVFP4 experts run Marlin or
    triton_kernels paths that take no tuned config file (treated like the default config).
    """
    quant = arch.quantization
    if quant is None or not quant.quantizes("experts"):
        return None, None, True
    if quant.kind == "fp8" and fp8_compute:
        return "fp8_w8a8", quant.block_size, True
    return None, None, False


def _stage(arch: ModelArchitecture, config: VllmConfig, layers: range, last: bool, fp8_compute: bool,
           mla_backend: str | None, device_names: tuple[str, ...] = (), version: tuple[int, int, int] = (0, 33, 0),
           compute_capability: str | None = None) -> StageShape:
    tp = config.tensor_parallel_size
    dtype_bytes = _DTYPE_BYTES.get(config.dtype, 2)
    kv_bytes = kv_dtype_bytes(config.kv_cache_dtype, config.dtype)
    kinds = [arch.layer_kinds[i] for i in layers]
    full = sum(k in ("full", "chunked") for k in kinds)
    sliding = kinds.count("sliding")
    linear = kinds.count("mamba")
    heads = max(1, arch.num_attention_heads // tp)
    if arch.mla is not None:
        # Absorbed MLA decode: QK^T over kv_lora_rank + rope dims, PV over kv_lora_rank, per head.
        pair_flops = 2 * heads * (2 * arch.mla.kv_lora_rank + arch.mla.qk_rope_head_dim)
    else:
        pair_flops = 4 * heads * arch.head_dim
    dense_bytes = dense_params = 0.0
    expert_bytes = expert_params = 0.0
    moe_layers = shared_layers = 0
    ep = config.enable_expert_parallel
    ep_size = tp * config.data_parallel_size  # vLLM: EP spans TP x DP
    major, minor = (int(p) for p in (compute_capability or "8.0").split(".")[:2])
    mxfp4 = mxfp4_kernel(resolve_profile(".".join(map(str, version))).mxfp4_hopper_layout, (major, minor))
    for layer in layers:
        parts = decoder_layer_parts(arch, dtype_bytes, tp, layer, ep, mxfp4=mxfp4, ep_size=ep_size)
        for name, part in parts.items():
            if name == "experts":
                moe_layers += 1
                expert_bytes, expert_params = part.bytes, float(part.params)
            else:
                dense_bytes += part.bytes
                dense_params += part.params
        shared_layers += "shared_experts" in parts
    moe = arch.moe
    on_rank = experts_per_rank(moe.num_experts, ep_size, ep) if moe else 0
    if moe_layers and on_rank:
        expert_bytes /= on_rank
        expert_params /= on_rank
    # Per token per layer, bf16: two fused add+RMSNorms (read 2h, write 2h each), rotary on q/k, the
    # attention output, SiLU-and-mul (read 2I, write I) over the active MLP width (k experts + shared).
    q_width = heads * (arch.mla.qk_nope_head_dim + arch.mla.qk_rope_head_dim if arch.mla else arch.head_dim)
    if moe is not None:
        mlp_width = (moe.experts_per_token * moe.moe_intermediate_size + moe.shared_intermediate_size) // tp
    else:
        mlp_width = arch.intermediate_size // tp
    activation_bytes = len(kinds) * 2 * (8 * arch.hidden_size + 3 * q_width + 3 * mlp_width)
    tuned = False
    if moe is not None and moe_layers:
        dtype, block, triton = _moe_kernel_dtype(arch, fp8_compute)
        inter = moe.moe_intermediate_size if ep and ep_size > 1 else moe.moe_intermediate_size // tp
        tuned = triton and has_tuned_config(version, on_rank, inter, device_names, dtype, block)
    padded_vocab = -(-arch.vocab_size // _VOCAB_PAD) * _VOCAB_PAD
    vocab_rows = padded_vocab // tp
    state_bytes = float(mamba_page_bytes(arch, tp, dtype_bytes)) if arch.mamba is not None and linear else 0.0
    return StageShape(
        layers=len(kinds),
        full_attention_layers=full,
        sliding_attention_layers=sliding,
        sliding_window=arch.sliding_window or 0,
        linear_attention_layers=linear,
        kv_bytes_per_token_per_layer=float(attention_bytes_per_token(arch, tp, config.kv_cache_dtype, kv_bytes)),
        attention_flops_per_pair_per_layer=float(pair_flops),
        linear_state_bytes_per_request_per_layer=state_bytes,
        dense_weight_bytes=dense_bytes,
        dense_params=dense_params,
        moe_layers=moe_layers,
        experts_on_rank=on_rank if moe_layers else 0,
        num_experts=moe.num_experts if moe else 0,
        experts_per_token=moe.experts_per_token if moe else 0,
        expert_weight_bytes=expert_bytes,
        expert_params=expert_params,
        shared_expert_layers=shared_layers,
        lm_head_bytes=float(vocab_rows * arch.hidden_size * dtype_bytes) if last else 0.0,
        lm_head_params=float(vocab_rows * arch.hidden_size) if last else 0.0,
        vocab_per_rank=vocab_rows,
        hidden_size=arch.hidden_size,
        mla_backend=mla_backend if arch.mla is not None else None,
        fp8_compute=fp8_compute,
        activation_bytes_per_token=float(activation_bytes),
        moe_tuned_config=tuned,
    )


def engine_shape(
    arch: ModelArchitecture,
    config: VllmConfig,
    gpu: GpuSummary,
    interconnect: Interconnect | str,
    behaviour: EngineBehaviour,
) -> EngineShape:
    """The replica as the step model sees it (every TP rank identical; one entry per PP stage)."""
    hw = hardware_facts(gpu, interconnect)
    fp8_compute = (config.quantization or "") in FP8_COMPUTE_METHODS and hw.fp8_flops_per_second is not None
    ranges = pp_layer_ranges(arch.num_layers, config.pipeline_parallel_size)
    try:
        device_names = lookup_gpu(gpu.name).nvidia_smi_names
    except GpuNotFoundError:
        device_names = ()
    stages = tuple(
        _stage(arch, config, layers, i == len(ranges) - 1, fp8_compute, behaviour.mla_backend, device_names,
               behaviour.version, gpu.compute_capability)
        for i, layers in enumerate(ranges)
    )
    return EngineShape(
        stages=stages,
        tensor_parallel_size=config.tensor_parallel_size,
        hardware=hw,
        cuda_graphs=not config.enforce_eager,
        max_capture_size=max_capture_size(behaviour, config.max_num_seqs, config.max_num_batched_tokens),
        async_scheduling=behaviour.async_scheduling,
        greedy_sampling=behaviour.bench_greedy,
    )
