"""``build_plan(source, request) -> PlanResponse``: parse, pick GPU and profile, resolve settings, evaluate.

A knob the user set is evaluated as given; every other one gets a simple recommendation (smallest valid
TP that fits the weights plus a useful KV cache, derived max_model_len or the largest that fits, profile
defaults for utilization and batching). ``performance``, ``artifacts`` and ``fixes`` are left empty here.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner_service.engine.architecture import ModelArchitecture, parse_architecture
from planner_service.engine.errors import InvalidRequestError
from planner_service.engine.gpus import GpuSpec, custom_gpu, lookup_gpu
from planner_service.engine.memory import MemoryResult, TwinSettings, evaluate, validate_parallelism
from planner_service.engine.models import (
    GIB,
    Explanation,
    Feasibility,
    GpuSummary,
    ModelSummary,
    OomRisk,
    PerGpuMemory,
    PlanRequest,
    PlanResponse,
    VllmConfig,
)
from planner_service.engine.profiles import VersionProfile, resolve_profile
from planner_service.engine.source import ModelSource
from planner_service.engine.weights import total_params

DEFAULT_GPU = "H100"
TWIN_UNCERTAINTY_BYTES = 1 * GIB  # worst-case KV error on the calibration table is about this size
USEFUL_CONTEXT_TOKENS = 4096
_TP_CANDIDATES = (1, 2, 4, 8, 16, 32, 64)


def _resolve_gpu(request: PlanRequest, notes: list[Explanation]) -> GpuSpec:
    hw = request.hardware
    if hw.gpu:
        gpu = lookup_gpu(hw.gpu)
        if hw.vram_gb:
            gpu = custom_gpu(hw.vram_gb, base=gpu)
        notes.append(Explanation(setting="gpu", value=gpu.name, source="user",
                                 reason=f"CUDA total {gpu.memory_total_bytes / GIB:.2f} GiB per GPU"))
        return gpu
    if hw.vram_gb:
        gpu = custom_gpu(hw.vram_gb)
        notes.append(Explanation(setting="gpu", value=gpu.name, source="user", reason="hardware.vram_gb"))
        return gpu
    gpu = lookup_gpu(DEFAULT_GPU)
    notes.append(Explanation(setting="gpu", value=gpu.name, source="default", reason="no GPU given"))
    return gpu


def _resolve_dtype(arch: ModelArchitecture, gpu: GpuSpec, requested: str) -> tuple[str, str]:
    """vLLM's ``_resolve_auto_dtype`` (internals §7.4)."""
    aliases = {"half": "float16", "float": "float32"}
    if requested != "auto":
        dtype = aliases.get(requested, requested)
        if dtype == "bfloat16" and not gpu.supports_bf16:
            raise InvalidRequestError.for_field("model.dtype", f"{gpu.name} (sm {gpu.compute_capability}) has no bfloat16")
        return dtype, "user"
    dtype = arch.checkpoint_dtype
    if dtype == "float32":
        dtype = "bfloat16" if gpu.supports_bf16 else "float16"
    if dtype == "bfloat16" and not gpu.supports_bf16:
        dtype = "float16"
    return dtype, "derived"


def _resolve_kv_dtype(arch: ModelArchitecture, requested: str | None) -> tuple[str, str]:
    if requested and requested != "auto":
        return requested, "user"
    if arch.quantization is not None and arch.quantization.kv_cache_fp8:
        return "fp8", "derived"
    return "auto", "recommended" if requested is None else "user"


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


def _tp_candidates(arch: ModelArchitecture, pp: int, num_gpus: int | None) -> list[int]:
    limit = (num_gpus or 8 * pp) // pp
    out = []
    for tp in _TP_CANDIDATES:
        if tp > max(1, limit):
            break
        try:
            validate_parallelism(arch, tp, pp)
        except InvalidRequestError:
            continue
        out.append(tp)
    return out


def build_plan(source: ModelSource, request: PlanRequest) -> PlanResponse:
    """The pure planning pipeline for one request (no I/O)."""
    m, hw, eng, pol = request.model, request.hardware, request.engine, request.policy
    notes: list[Explanation] = []
    config = m.config_json or source.config
    arch = parse_architecture(config, m.quantization)
    profile = resolve_profile(eng.vllm_version)
    gpu = _resolve_gpu(request, notes)
    dtype, dtype_src = _resolve_dtype(arch, gpu, m.dtype)
    kv_dtype, kv_src = _resolve_kv_dtype(arch, m.kv_cache_dtype)
    defaults = profile.batch_defaults(gpu.name, gpu.memory_total_bytes)
    mnbt = eng.max_num_batched_tokens or defaults.max_num_batched_tokens
    mns = min(eng.max_num_seqs or defaults.max_num_seqs, mnbt)
    util = pol.gpu_memory_utilization or profile.default_gpu_memory_utilization
    pp = hw.pipeline_parallel_size or 1
    derived = arch.derived_max_model_len
    prefix_caching = eng.enable_prefix_caching if eng.enable_prefix_caching is not None else True

    computed, active = total_params(arch)
    weights_scale, params_source, num_params = 1.0, "computed", computed
    if m.params_b:
        num_params, params_source = round(m.params_b * 1e9), "override"
        weights_scale = num_params / computed
    elif source.safetensors is not None:
        num_params, params_source = source.safetensors.total_parameters, "safetensors"

    len_error: str | None = None
    if isinstance(m.max_model_len, int):
        user_len: int | None = m.max_model_len
        if m.max_model_len > derived:
            len_error = (
                f"User-specified max_model_len ({m.max_model_len}) is greater than the derived max_model_len "
                f"({arch.max_len_source}={derived} in model's config.json). To allow overriding this maximum, "
                "set the env var VLLM_ALLOW_LONG_MAX_MODEL_LEN=1."
            )
    else:
        user_len = None

    def settings(tp: int, max_len: int | None) -> TwinSettings:
        return TwinSettings(
            tensor_parallel_size=tp, pipeline_parallel_size=pp, dtype=dtype, kv_cache_dtype=kv_dtype,
            max_model_len=max_len, max_model_len_upper=arch.default_max_model_len, gpu_memory_utilization=util,
            max_num_seqs=mns, max_num_batched_tokens=mnbt, block_size=eng.block_size,
            enable_prefix_caching=prefix_caching,
            enforce_eager=eng.enforce_eager, enable_expert_parallel=hw.enable_expert_parallel,
            kv_cache_memory_bytes=eng.kv_cache_memory_bytes, free_memory_bytes=hw.free_memory_bytes,
            overhead_bytes=int(pol.overhead_gb * GIB), fragmentation_factor=pol.fragmentation_factor,
            weights_scale=weights_scale,
        )

    headroom = int(pol.headroom_gb * GIB)
    len_for_eval = None if m.max_model_len == "auto" else (user_len or arch.default_max_model_len)
    if hw.tensor_parallel_size:
        tp, tp_src, tp_reason = hw.tensor_parallel_size, "user", "set by the user"
        result = evaluate(arch, gpu, settings(tp, len_for_eval), profile)
    else:
        tp, result, tp_src = _recommend_tp(arch, gpu, profile, settings, pp, hw.num_gpus, len_for_eval, headroom)
        tp_reason = "smallest valid tensor parallel size that fits the weights and a useful KV cache"
    len_src, len_reason = "user", "set by the user"
    if m.max_model_len == "auto":
        len_src, len_reason = "derived", "vLLM auto-fit (-1): the largest length that fits the KV cache"
    elif user_len is None:
        len_src, len_reason = "derived", f"derived from config.json ({arch.max_len_source})"
        if arch.default_max_model_len < derived:
            len_reason = "LongRoPE: vLLM defaults to original_max_position_embeddings"
        if not result.fits and eng.kv_cache_memory_bytes is None:
            fitted = evaluate(arch, gpu, settings(tp, None), profile)
            if fitted.fits:
                result = fitted
                len_src = "recommended"
                len_reason = f"the derived {derived} does not fit; this is the largest length that does"
    error = len_error or result.error
    fits = error is None
    notes += [
        Explanation(setting="tensor_parallel_size", value=str(tp), source=tp_src, reason=tp_reason),
        Explanation(setting="pipeline_parallel_size", value=str(pp), source="user" if hw.pipeline_parallel_size else "default",
                    reason="set by the user" if hw.pipeline_parallel_size else "one stage unless asked"),
        Explanation(setting="dtype", value=dtype, source=dtype_src, reason=f"checkpoint dtype {arch.checkpoint_dtype}"),
        Explanation(setting="kv_cache_dtype", value=kv_dtype, source=kv_src,
                    reason=f"auto stores KV in the model dtype ({dtype})" if kv_dtype == "auto"
                    else ("set by the user" if kv_src == "user" else "the checkpoint carries fp8 KV scales")),
        Explanation(setting="quantization", value=str(arch.quantization.method if arch.quantization else None),
                    source="user" if m.quantization else "derived",
                    reason="from the checkpoint's quantization_config" if arch.quantization else "unquantized"),
        Explanation(setting="max_model_len", value=str(result.max_model_len), source=len_src, reason=len_reason),
        Explanation(setting="gpu_memory_utilization", value=f"{util:g}",
                    source="user" if pol.gpu_memory_utilization else "default",
                    reason="set by the user" if pol.gpu_memory_utilization else f"{profile.name} default"),
        Explanation(setting="max_num_seqs", value=str(mns), source="user" if eng.max_num_seqs else "default",
                    reason="set by the user" if eng.max_num_seqs else f"vLLM server default for {gpu.name}"),
        Explanation(setting="max_num_batched_tokens", value=str(mnbt),
                    source="user" if eng.max_num_batched_tokens else "default",
                    reason="set by the user" if eng.max_num_batched_tokens else f"vLLM server default for {gpu.name}"),
        Explanation(setting="block_size", value=str(result.block_size), source="user" if eng.block_size else "derived",
                    reason="set by the user" if eng.block_size else "attention backend default / hybrid alignment"),
        Explanation(setting="enable_prefix_caching", value=str(prefix_caching),
                    source="user" if eng.enable_prefix_caching is not None else "default",
                    reason="vLLM enables it for generative models" if eng.enable_prefix_caching is None
                    else "set by the user"),
        Explanation(setting="enforce_eager", value=str(eng.enforce_eager),
                    source="user" if eng.enforce_eager else "default",
                    reason="no CUDA graphs" if eng.enforce_eager else "CUDA graphs on (vLLM default)"),
        Explanation(setting="enable_expert_parallel", value=str(hw.enable_expert_parallel),
                    source="user" if hw.enable_expert_parallel else "default",
                    reason="set by the user" if hw.enable_expert_parallel else "MoE experts are tensor-parallel"),
    ]
    b = result.binding
    warnings = list(result.warnings)
    if arch.vision_params:
        warnings.append("multimodal encoder profiling is not modelled; activation may be underestimated")
    return PlanResponse(
        vllm_version=eng.vllm_version or profile.representative_version,
        version_profile=profile.name,
        model=ModelSummary(
            model=source.model, source=source.source, architecture=(arch.architectures or (arch.model_type,))[0],
            model_type=arch.model_type, num_params=num_params, num_active_params=active, params_source=params_source,
            checkpoint_dtype=arch.checkpoint_dtype, quantization=arch.quantization.method if arch.quantization else None,
            derived_max_model_len=derived,
        ),
        gpu=GpuSummary(
            name=gpu.name, memory_total_bytes=gpu.memory_total_bytes,
            memory_bandwidth_bytes_per_second=gpu.memory_bandwidth_bytes_per_second,
            bf16_tflops=gpu.bf16_tflops, fp8_tflops=gpu.fp8_tflops, compute_capability=gpu.compute_capability,
            num_gpus=hw.num_gpus or tp * pp,
        ),
        config=VllmConfig(
            tensor_parallel_size=tp, pipeline_parallel_size=pp, dtype=dtype,
            quantization=arch.quantization.method if arch.quantization else None, kv_cache_dtype=kv_dtype,
            max_model_len=result.max_model_len, gpu_memory_utilization=util, max_num_seqs=mns,
            max_num_batched_tokens=mnbt, block_size=result.block_size,
            enable_prefix_caching=prefix_caching,
            enforce_eager=eng.enforce_eager, enable_expert_parallel=hw.enable_expert_parallel,
            kv_cache_memory_bytes=eng.kv_cache_memory_bytes,
        ),
        feasibility=Feasibility(
            fits=fits, oom_risk=_oom_risk(result, headroom) if fits else OomRisk.HIGH, warnings=warnings,
            error=error,
            per_gpu=PerGpuMemory(
                total_bytes=b.total_bytes, budget_bytes=b.budget_bytes, weights_bytes=b.weights_bytes,
                activation_peak_bytes=b.activation_peak_bytes, non_torch_bytes=b.non_torch_bytes,
                cuda_graph_bytes=b.cuda_graph_bytes, kv_cache_bytes=b.kv_cache_bytes,
            ),
            kv_cache_tokens=result.kv_cache_tokens if fits else 0, num_gpu_blocks=result.num_blocks,
            block_size=result.block_size, max_concurrency=result.max_concurrency if fits else 0.0,
            max_concurrency_at_tokens=result.max_model_len, estimated_max_model_len=result.estimated_max_model_len,
            kv_bytes_per_token=b.layout.kv_bytes_per_token,
        ),
        explanations=notes,
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
    arch = parse_architecture(m.config_json or source.config, m.quantization)
    gpu = _resolve_gpu(request, [])
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
    )
    return TwinInputs(arch, gpu, resolve_profile(request.engine.vllm_version), settings)


def _recommend_tp(arch, gpu, profile: VersionProfile, settings, pp, num_gpus, max_len, headroom):
    """Smallest TP whose binding worker fits one request at the target length plus the headroom."""
    candidates = _tp_candidates(arch, pp, num_gpus)
    if not candidates:
        raise InvalidRequestError.for_field(
            "hardware.tensor_parallel_size", "no tensor parallel size divides the model's heads on these GPUs"
        )
    useful = min(arch.derived_max_model_len, USEFUL_CONTEXT_TOKENS)
    fallback = None
    for tp in candidates:
        result = evaluate(arch, gpu, settings(tp, max_len), profile)
        if result.fits and _policy_margin(result, headroom) >= 0:
            return tp, result, "recommended"
        if fallback is None and max_len is not None:
            shorter = evaluate(arch, gpu, settings(tp, None), profile)
            if shorter.fits and shorter.max_model_len >= useful:
                fallback = (tp, result)
    if fallback is not None:
        return fallback[0], fallback[1], "recommended"
    tp = candidates[-1]
    return tp, evaluate(arch, gpu, settings(tp, max_len), profile), "recommended"
