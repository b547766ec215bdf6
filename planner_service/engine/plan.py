"""``build_plan(source, request) -> PlanResponse``: resolve, evaluate, explain and fix one request.

``recommend.resolve_request`` parses the model, picks the GPU and the version profile, recommends every
knob the user left unset (each explained) and runs the memory twin; when the result does not fit, or
fits with less concurrency than asked, ``fixes.propose_fixes`` adds ranked changes, each verified by
re-running the same resolution. This module turns that into the ``PlanResponse`` contract.
``performance`` and ``artifacts`` are left to ``pipeline.complete_plan``. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner_service.engine.architecture import ModelArchitecture, parse_architecture
from planner_service.engine.fixes import propose_fixes
from planner_service.engine.gpus import GpuSpec
from planner_service.engine.memory import MemoryResult, TwinSettings
from planner_service.engine.models import (
    GIB,
    Feasibility,
    Interconnect,
    GpuSummary,
    ModelSummary,
    OomRisk,
    PerGpuMemory,
    PlanRequest,
    PlanResponse,
    VllmConfig,
    VllmInstall,
)
from planner_service.engine.profiles import VersionProfile, resolve_profile
from planner_service.engine.recommend import resolve_gpu, resolve_request
from planner_service.engine.source import ModelSource
from planner_service.engine.weights import total_params

TWIN_UNCERTAINTY_BYTES = 1 * GIB  # worst-case KV error on the calibration table is about this size


def _policy_margin(result: MemoryResult, headroom_bytes: int) -> int:
    """KV bytes left over on the binding worker after one max-length request and the headroom."""
    layout = result.binding.layout
    needed = layout.needed_bytes(result.max_model_len, result.in_flight_tokens)
    return result.binding.kv_cache_bytes - layout.bytes_per_block - needed - headroom_bytes


def _oom_risk(result: MemoryResult, headroom_bytes: int) -> OomRisk:
    if not result.fits:
        return OomRisk.HIGH
    spare = _policy_margin(result, 0)
    if spare < headroom_bytes:
        return OomRisk.MEDIUM
    if spare < headroom_bytes + TWIN_UNCERTAINTY_BYTES:
        return OomRisk.LOW
    return OomRisk.NONE


def max_context_at_concurrency(result: MemoryResult, concurrency: int, reserve_null_block: bool) -> int:
    """Longest context (<= max_model_len) of which ``concurrency`` requests fit the engine's KV blocks at once."""
    if not result.fits or concurrency < 1:
        return 0
    layout = result.binding.layout
    blocks = result.num_blocks - int(reserve_null_block)
    lo, hi, best = 1, result.max_model_len, 0
    while lo <= hi:  # blocks per request grow with the length: binary search the largest that fits
        mid = (lo + hi) // 2
        if concurrency * layout.blocks_per_request(mid, result.in_flight_tokens) <= blocks:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


def build_plan(source: ModelSource, request: PlanRequest) -> PlanResponse:
    """The pure planning pipeline for one request (no I/O)."""
    m = request.model
    config = m.config_json or source.config
    res = resolve_request(config, request)
    arch, gpu, profile, s, result = res.arch, res.gpu, res.profile, res.settings, res.result
    fixes = [] if res.useful else propose_fixes(config, request, res)
    warnings = list(res.warnings)
    if not res.useful and not fixes:
        warnings.append("no fix within two changes makes this request fit; see the explanations")

    computed, active = total_params(arch)
    params_source, num_params = "computed", computed
    if m.params_b:
        num_params, params_source = round(m.params_b * 1e9), "override"
    elif source.safetensors is not None:
        num_params, params_source = source.safetensors.total_parameters, "safetensors"
    quant = arch.quantization.method if arch.quantization else None
    fits = res.fits
    b = result.binding
    return PlanResponse(
        vllm_version=request.engine.vllm_version or profile.representative_version,
        version_profile=profile.name,
        model=ModelSummary(
            model=source.model, source=source.source, architecture=(arch.architectures or (arch.model_type,))[0],
            model_type=arch.model_type, num_params=num_params, num_active_params=active, params_source=params_source,
            checkpoint_dtype=arch.checkpoint_dtype, quantization=quant, derived_max_model_len=arch.derived_max_model_len,
            quantization_what_if=bool(arch.quantization and arch.quantization.what_if),
        ),
        gpu=GpuSummary(
            name=gpu.name, memory_total_bytes=gpu.memory_total_bytes,
            memory_bandwidth_bytes_per_second=gpu.memory_bandwidth_bytes_per_second,
            bf16_tflops=gpu.bf16_tflops, fp8_tflops=gpu.fp8_tflops, compute_capability=gpu.compute_capability,
            num_gpus=res.num_gpus,
        ),
        config=VllmConfig(
            tensor_parallel_size=s.tensor_parallel_size, pipeline_parallel_size=s.pipeline_parallel_size,
            data_parallel_size=s.data_parallel_size, dtype=s.dtype, quantization=quant, kv_cache_dtype=s.kv_cache_dtype, max_model_len=result.max_model_len,
            gpu_memory_utilization=s.gpu_memory_utilization, max_num_seqs=s.max_num_seqs,
            max_num_batched_tokens=s.max_num_batched_tokens, block_size=result.block_size,
            enable_prefix_caching=s.enable_prefix_caching, enforce_eager=s.enforce_eager,
            enable_expert_parallel=s.enable_expert_parallel, kv_cache_memory_bytes=s.kv_cache_memory_bytes,
        ),
        feasibility=Feasibility(
            fits=fits, oom_risk=_oom_risk(result, res.target.headroom_bytes) if fits else OomRisk.HIGH,
            warnings=warnings, error=res.error,
            per_gpu=PerGpuMemory(
                total_bytes=b.total_bytes, budget_bytes=b.budget_bytes, weights_bytes=b.weights_bytes,
                activation_peak_bytes=b.activation_peak_bytes, non_torch_bytes=b.non_torch_bytes,
                cuda_graph_bytes=b.cuda_graph_bytes, kv_cache_bytes=b.kv_cache_bytes,
            ),
            kv_cache_tokens=result.kv_cache_tokens if fits else 0, num_gpu_blocks=result.num_blocks,
            block_size=result.block_size, max_concurrency=result.max_concurrency if fits else 0.0,
            max_concurrency_at_tokens=result.max_model_len, estimated_max_model_len=result.estimated_max_model_len,
            kv_bytes_per_token=b.layout.kv_bytes_per_token,
            max_context_at_concurrency=max_context_at_concurrency(
                result, request.workload.concurrency, res.target.reserve_null_block) if fits else 0,
        ),
        explanations=list(res.explanations),
        fixes=fixes,
    )


@dataclass(frozen=True)
class TwinInputs:
    """Everything ``memory.evaluate`` needs to re-run a plan with changed settings."""

    arch: ModelArchitecture
    gpu: GpuSpec
    profile: VersionProfile
    settings: TwinSettings


def twin_inputs(source: ModelSource, request: PlanRequest, response: PlanResponse) -> TwinInputs:
    """The twin's inputs behind ``response`` (its resolved config), e.g. to try fixes:
    ``evaluate(i.arch, i.gpu, i.settings.model_copy(update={"max_model_len": 8192}), i.profile)``."""
    m, pol, c = request.model, request.policy, response.config
    profile = resolve_profile(request.engine.vllm_version)
    arch = parse_architecture(m.config_json or source.config, m.quantization,
                              yarn_scales_max_len=profile.yarn_scales_max_len)
    gpu, _ = resolve_gpu(request)
    computed, _ = total_params(arch)
    settings = TwinSettings(
        tensor_parallel_size=c.tensor_parallel_size, pipeline_parallel_size=c.pipeline_parallel_size,
        dtype=c.dtype, kv_cache_dtype=c.kv_cache_dtype, max_model_len=c.max_model_len,
        max_model_len_upper=arch.default_max_model_len, gpu_memory_utilization=c.gpu_memory_utilization,
        max_num_seqs=c.max_num_seqs, max_num_batched_tokens=c.max_num_batched_tokens,
        block_size=request.engine.block_size, enable_prefix_caching=c.enable_prefix_caching,
        enforce_eager=c.enforce_eager, enable_expert_parallel=c.enable_expert_parallel,
        kv_cache_memory_bytes=c.kv_cache_memory_bytes, free_memory_bytes=request.hardware.free_memory_bytes,
        overhead_bytes=int(pol.overhead_gb * GIB), fragmentation_factor=pol.fragmentation_factor,
        weights_scale=(round(m.params_b * 1e9) / computed) if m.params_b else 1.0,
        nvlink=None if request.hardware.interconnect is None else request.hardware.interconnect == Interconnect.NVLINK,
        data_parallel_size=c.data_parallel_size,
        flashinfer_installed=request.engine.vllm_install == VllmInstall.IMAGE,
    )
    return TwinInputs(arch, gpu, profile, settings)
