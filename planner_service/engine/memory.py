"""The memory twin: evaluate one fully resolved configuration, per GPU worker, as vLLM does at startup.

``evaluate(arch, gpu, settings, profile)`` is pure and cheap (microseconds to a few ms), so callers can
re-run it with changed settings (fixes, auto-tuning). Per PP stage (TP ranks of a stage are identical;
with expert parallel rank 0, which holds the most experts, is used):
budget = ceil(T*u); KV = budget - weights - activation peak - non-torch - CUDA-graph estimate
(the last only where the profile subtracts it; ``kv_cache_memory_bytes`` replaces all of this);
num_blocks = floor(KV / bytes_per_block), then the minimum over workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from planner_service.engine import kv_cache, overheads
from planner_service.engine.architecture import ModelArchitecture
from planner_service.engine.errors import InvalidRequestError
from planner_service.engine.gpus import GpuSpec
from planner_service.engine.profiles import Runner, VersionProfile
from planner_service.engine.weights import mxfp4_kernel, pp_layer_ranges, weights_per_rank
from vllm_planner.bounded import shown

GIB = 1 << 30
_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
_FP8_KV = {"fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_ds_mla", "fp8_per_token_head"}


class TwinSettings(BaseModel):
    """Every vLLM setting the twin needs, resolved (no "recommend" placeholders left)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tensor_parallel_size: int = Field(ge=1)
    pipeline_parallel_size: int = Field(ge=1)
    dtype: str  # resolved model dtype: bfloat16 | float16 | float32
    kv_cache_dtype: str  # "auto" or an explicit dtype
    max_model_len: int | None  # None = auto-fit (vLLM -1)
    max_model_len_upper: int  # the derived length auto-fit starts from
    gpu_memory_utilization: float = Field(gt=0, le=1)
    max_num_seqs: int
    max_num_batched_tokens: int
    block_size: int | None = None  # None = the backend default
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    enable_expert_parallel: bool = False
    kv_cache_memory_bytes: int | None = None
    free_memory_bytes: int | None = None
    overhead_bytes: int = 0  # policy: extra non-KV memory per GPU
    fragmentation_factor: float = 0.0  # policy: fraction of KV memory assumed unusable
    weights_scale: float = 1.0  # params_b override / computed parameter count
    # TP/PP ranks talk over NVLink (None: a data-centre GPU type with NVLink; GeForce cards rarely have a
    # bridge, and their driver disables PCIe peer-to-peer, so NCCL stages through host memory)
    nvlink: bool | None = None
    data_parallel_size: int = Field(default=1, ge=1)  # DP replicas; with expert parallel, EP = TP x DP
    # The ``flashinfer`` package imports (the vllm/vllm-openai image): 0.10-0.11 then sample with FlashInfer.
    flashinfer_installed: bool = False


@dataclass(frozen=True)
class WorkerMemory:
    stage: int
    layers: range
    total_bytes: int
    budget_bytes: int
    weights_bytes: int
    activation_peak_bytes: int
    non_torch_bytes: int
    cuda_graph_bytes: int  # estimate; subtracted only when the profile does
    kv_cache_bytes: int  # "Available KV cache memory" (negative: vLLM fails)
    layout: kv_cache.KvLayout
    num_blocks: int


@dataclass(frozen=True)
class MemoryResult:
    workers: tuple[WorkerMemory, ...]  # one per PP stage
    binding: WorkerMemory  # the worker with the fewest blocks (what limits the engine)
    max_model_len: int  # after auto-fit
    num_blocks: int  # engine-wide (min over workers), incl. the null block
    block_size: int
    kv_cache_tokens: int
    max_concurrency: float
    fits: bool
    error: str | None
    estimated_max_model_len: int | None
    in_flight_tokens: int
    warnings: tuple[str, ...] = field(default_factory=tuple)


def _gib(value: float) -> str:
    return f"{round(value / GIB, 2):.2f}"


def kv_dtype_bytes(kv_cache_dtype: str, model_dtype: str) -> int:
    if kv_cache_dtype == "auto":
        return _DTYPE_BYTES[model_dtype]
    if kv_cache_dtype in _FP8_KV:
        return 1
    if kv_cache_dtype in ("bfloat16", "float16"):
        return 2
    raise InvalidRequestError.for_field("model.kv_cache_dtype", f"{shown(kv_cache_dtype)} is not supported by the twin")


def validate_parallelism(arch: ModelArchitecture, tp: int, pp: int) -> None:
    """vLLM's divisibility rules; impossible layouts raise with a field violation."""
    field_tp = "hardware.tensor_parallel_size"
    if arch.num_attention_heads % tp:
        raise InvalidRequestError.for_field(
            field_tp,
            f"Total number of attention heads ({arch.num_attention_heads}) must be divisible by tensor "
            f"parallel size ({tp}).",
        )
    kvh = arch.num_kv_heads
    if arch.mla is None and arch.attention_layers and (tp % kvh if tp >= kvh else kvh % tp):
        raise InvalidRequestError.for_field(
            field_tp, f"{kvh} KV heads cannot be split or replicated evenly over tensor parallel size {tp}"
        )
    m = arch.mamba
    if m is not None and m.kind == "gdn" and (m.num_v_heads % tp or m.num_k_heads % tp):
        raise InvalidRequestError.for_field(field_tp, f"linear-attention heads are not divisible by {tp}")
    if pp > arch.num_layers:
        raise InvalidRequestError.for_field(
            "hardware.pipeline_parallel_size", f"{pp} stages exceed the model's {arch.num_layers} layers"
        )


def default_block_size(arch: ModelArchitecture, gpu: GpuSpec, profile: VersionProfile) -> int:
    if arch.mla is None:
        return 16
    major = gpu.cc_tuple[0]
    if major >= 10:
        return 32 if profile.mla_block_size_hopper == 16 else 64
    if major == 9:
        return profile.mla_block_size_hopper
    return 16


def model_runner(arch: ModelArchitecture, profile: VersionProfile) -> Runner:
    """The model runner (V1 / Model Runner V2) vLLM picks for this model in this version."""
    return profile.model_runner(arch.architectures, arch.moe is not None, arch.is_hybrid_mamba,
                                arch.quantization is not None)


def _worker(
    arch: ModelArchitecture, gpu: GpuSpec, s: TwinSettings, profile: VersionProfile, stage: int, layers: range
) -> WorkerMemory:
    tp, pp = s.tensor_parallel_size, s.pipeline_parallel_size
    dt = _DTYPE_BYTES[s.dtype]
    first, last = stage == 0, stage == pp - 1
    total = gpu.memory_total_bytes
    budget = math.ceil(total * s.gpu_memory_utilization)
    mxfp4 = mxfp4_kernel(profile.mxfp4_hopper_layout, gpu.cc_tuple)
    weights = int(weights_per_rank(arch, dt, tp, layers, first, last, s.enable_expert_parallel, mxfp4=mxfp4,
                                   ep_size=tp * s.data_parallel_size).bytes * s.weights_scale)
    sampler = profile.sampler_bytes_per_logit(model_runner(arch, profile), gpu.cc_tuple, s.flashinfer_installed)
    act = overheads.activation_peak_bytes(
        arch, tp, s.max_num_batched_tokens, s.max_num_seqs, dt, last, sampler, s.enable_expert_parallel,
        s.enforce_eager,
    )
    nvlink = (gpu.nvlink and not gpu.consumer) if s.nvlink is None else s.nvlink
    non_torch = overheads.non_torch_bytes(tp, pp, profile.nccl_buffers_in_profile, nvlink)
    graphs = overheads.cuda_graph_bytes(len(layers), tp, s.enforce_eager, profile.cuda_graph_bytes_per_layer)
    if s.kv_cache_memory_bytes is not None:
        kv = s.kv_cache_memory_bytes
    else:
        kv = budget - weights - act - non_torch - (graphs if profile.subtract_cuda_graph_estimate else 0)
    kv -= s.overhead_bytes
    if kv > 0 and s.fragmentation_factor:
        kv = int(kv * (1 - s.fragmentation_factor))
    kvb = kv_dtype_bytes(s.kv_cache_dtype, s.dtype)
    block = s.block_size or default_block_size(arch, gpu, profile)
    align = profile.hybrid_prefix_caching and s.enable_prefix_caching
    layout = kv_cache.build_layout(
        arch, layers, tp, s.kv_cache_dtype, kvb, dt, block, mamba_state_pages=3 if align else 1,
        group_ratio=profile.hybrid_group_ratio,
    )
    blocks = max(0, kv // layout.bytes_per_block) if layout.bytes_per_block else 0
    return WorkerMemory(stage, layers, total, budget, weights, act, non_torch, graphs, kv, layout, blocks)


def evaluate(
    arch: ModelArchitecture, gpu: GpuSpec, settings: TwinSettings, profile: VersionProfile
) -> MemoryResult:
    """Predict vLLM's startup memory, KV capacity and whether it starts, for one configuration."""
    s = settings
    tp, pp = s.tensor_parallel_size, s.pipeline_parallel_size
    validate_parallelism(arch, tp, pp)
    workers = tuple(
        _worker(arch, gpu, s, profile, stage, layers)
        for stage, layers in enumerate(pp_layer_ranges(arch.num_layers, pp))
    )
    binding = min(workers, key=lambda w: (w.num_blocks, w.kv_cache_bytes))
    in_flight = profile.in_flight_tokens(s.max_num_batched_tokens, pp, model_runner(arch, profile))
    reserve_null = profile.fit_check_reserves_null_block
    warnings: list[str] = []
    error: str | None = None
    estimated: int | None = None

    if s.free_memory_bytes is not None and s.kv_cache_memory_bytes is None:
        requested = math.ceil(gpu.memory_total_bytes * s.gpu_memory_utilization)
        if s.free_memory_bytes < requested:
            error = profile.free_memory_message.format(
                device="cuda:0", free_gib=_gib(s.free_memory_bytes), total_gib=_gib(gpu.memory_total_bytes),
                utilization=s.gpu_memory_utilization, requested_gib=_gib(requested),
            )

    max_len = s.max_model_len
    if max_len is None:  # auto-fit: the same search on every worker, the minimum wins
        fitted = min(
            kv_cache.estimate_max_model_len(
                w.layout, w.kv_cache_bytes - (w.layout.bytes_per_block if reserve_null else 0),
                s.max_model_len_upper, in_flight,
            )
            for w in workers
        )
        if fitted == 0 and error is None:
            error = ("Cannot auto-fit max_model_len: not enough GPU memory available to serve even a single "
                     "token. Try increasing `gpu_memory_utilization`.")
        max_len = max(fitted, 1)
        if 0 < fitted < s.max_model_len_upper:
            warnings.append(f"Auto-fit max_model_len: reduced from {s.max_model_len_upper} to {fitted}")

    if error is None:
        for w in workers:
            if w.kv_cache_bytes - (w.layout.bytes_per_block if reserve_null else 0) <= 0:
                error = profile.no_memory_message
                break
            fit = kv_cache.check_fit(w.layout, w.kv_cache_bytes, max_len, in_flight, reserve_null)
            if not fit.fits:
                estimated = fit.estimated_max_model_len
                sentence = profile.estimate_sentence.format(estimated=estimated) if estimated else ""
                error = profile.not_fit_message.format(
                    max_model_len=max_len, needed_gib=_gib(fit.needed_bytes), available_gib=_gib(fit.check_bytes),
                    estimate=sentence,
                )
                break

    num_blocks = binding.num_blocks
    tokens, concurrency = kv_cache.capacity(binding.layout, num_blocks, max_len, in_flight, profile.kv_tokens_rule)
    if binding.layout.padding_layers:
        warnings.append(f"Add {binding.layout.padding_layers} padding layers to the hybrid KV cache groups")
    if not profile.subtract_cuda_graph_estimate and not s.enforce_eager:
        warnings.append("CUDA graphs are captured after the KV cache is sized (not in the budget)")
    return MemoryResult(
        workers=workers, binding=binding, max_model_len=max_len, num_blocks=num_blocks,
        block_size=binding.layout.block_size, kv_cache_tokens=tokens if error is None else 0,
        max_concurrency=concurrency if error is None else 0.0, fits=error is None, error=error,
        estimated_max_model_len=estimated, in_flight_tokens=in_flight, warnings=tuple(warnings),
    )
