"""Resolve every vLLM setting of a request, explained: the recommendation half of ``build_plan``.

``resolve_request(config, request)`` parses the model, picks the GPU, the version profile and the dtypes,
then recommends each knob the user left unset (a knob the user set is evaluated as given):
utilization (``recommend_memory``), TP/PP and fp8 KV under pressure (``recommend_parallel``), the
context length (derived, or the largest that fits, or vLLM's auto-fit), and MNS/MNBT by batching mode
(``recommend_batching``, then the twin is re-run since they move the activation peak). Each setting
gets an ``Explanation``; warnings go to ``Resolution.warnings``. Pure and cheap: a bounded number of
twin evaluations, so ``fixes`` can re-run it on changed requests.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from planner_service.engine.architecture import ModelArchitecture, parse_architecture
from planner_service.engine.errors import FieldViolation, InvalidRequestError
from planner_service.engine.gpus import GpuSpec, custom_gpu, lookup_gpu
from planner_service.engine.memory import MemoryResult, TwinSettings, evaluate
from planner_service.engine.models import GIB, Explanation, Interconnect, PlanRequest, VllmInstall
from planner_service.engine.profiles import VersionProfile, resolve_profile
from planner_service.engine.recommend_batching import resolve_batching
from planner_service.engine.recommend_memory import (
    Target,
    fp8_kv_recommendable,
    interconnect_of,
    kv_cache_memory_alternative,
    kv_dtype_warnings,
    length_with_headroom,
    make_target,
    margin_bytes,
    quantization_explanation,
    quantization_warnings,
    recommend_utilization,
    workload_capacity,
)
from planner_service.engine.recommend_parallel import ParallelChoice, choose_parallel
from planner_service.engine.weights import total_params

AUTO_GPU = "auto"


@dataclass(frozen=True)
class Resolution:
    """The resolved settings, the twin's verdict on them, and why each setting has its value."""

    arch: ModelArchitecture
    gpu: GpuSpec
    profile: VersionProfile
    settings: TwinSettings
    result: MemoryResult
    target: Target
    interconnect: Interconnect
    explanations: tuple[Explanation, ...]
    warnings: tuple[str, ...]
    error: str | None  # what vLLM would print when refusing to start (None: it starts)
    margin_bytes: int  # KV left after the target's requests and the headroom (negative: short)
    workload_capacity: int  # requests of prompt+gen tokens the KV cache holds
    num_gpus: int
    evaluations: int

    @property
    def fits(self) -> bool:
        return self.error is None

    @property
    def useful(self) -> bool:
        """Starts, and holds the target length and the requested concurrency with the headroom."""
        return self.fits and self.margin_bytes >= 0


def resolve_gpu(request: PlanRequest) -> tuple[GpuSpec, Explanation]:
    """The GPU the request names. There is no default GPU: a plan for a GPU the user does not have answers
    the wrong question, so a request without one is refused (the CLI resolves ``--gpu auto`` first)."""
    hw = request.hardware
    if hw.gpu and hw.gpu.strip().lower() == AUTO_GPU:
        raise InvalidRequestError.for_field(
            "hardware.gpu", "'auto' is resolved by the client from its own GPUs (vllm-planner --gpu auto, or "
            "--agent HOST:PORT); send the GPU name (and free_memory_bytes) it detected")
    if hw.gpu:
        gpu = lookup_gpu(hw.gpu)
        if not gpu.vllm_supported:
            raise InvalidRequestError.for_field("hardware.gpu", f"{gpu.name}: {gpu.unsupported_reason}")
        estimate = " (estimated: derived from nvidia-smi's total, see the catalog source)" if gpu.memory_is_estimate else ""
        if hw.vram_gb:
            gpu = custom_gpu(hw.vram_gb, base=gpu)
            estimate = " (hardware.vram_gb)"
        return gpu, Explanation(setting="gpu", value=gpu.name, source="user",
                                reason=f"CUDA total {gpu.memory_total_bytes / GIB:.2f} GiB per GPU{estimate}")
    if hw.vram_gb:
        gpu = custom_gpu(hw.vram_gb)
        return gpu, Explanation(setting="gpu", value=gpu.name, source="user", reason="hardware.vram_gb")
    raise InvalidRequestError.for_field(
        "hardware.gpu", "no GPU given and none detected: name one (--gpu H100, hardware.gpu) or give its memory "
        "(--vram-gb, hardware.vram_gb)")


def check_gpu_count(request: PlanRequest) -> None:
    """vLLM needs TP x PP x DP GPUs: a layout larger than the GPUs the request says it has cannot start."""
    hw = request.hardware
    tp, pp, dp = hw.tensor_parallel_size or 1, hw.pipeline_parallel_size or 1, hw.data_parallel_size or 1
    if hw.num_gpus is None or tp * pp * dp <= hw.num_gpus:
        return
    named = [(f, v) for f, v in (("hardware.tensor_parallel_size", hw.tensor_parallel_size),
                                  ("hardware.pipeline_parallel_size", hw.pipeline_parallel_size),
                                  ("hardware.data_parallel_size", hw.data_parallel_size)) if v is not None]
    fields = [f for f, _ in named] + ["hardware.num_gpus"]
    product = " x ".join(f"{f.split('.')[1]} {v}" for f, v in named)
    message = (f"{product} = {tp * pp * dp} GPUs, more than hardware.num_gpus {hw.num_gpus}: vLLM needs "
               "tensor_parallel_size x pipeline_parallel_size x data_parallel_size GPUs")
    raise InvalidRequestError(f"{', '.join(fields)}: {message}", [FieldViolation(f, message) for f in fields])


# GiB figures round-trip through floats (vram_gb): allow that much, never a physically impossible reading.
_FREE_MEMORY_SLACK_BYTES = 1 << 20


def check_free_memory(free_bytes: int | None, gpu: GpuSpec) -> None:
    """Free memory above the GPU's CUDA total is impossible: refuse it rather than plan with it."""
    if free_bytes is not None and free_bytes > gpu.memory_total_bytes + _FREE_MEMORY_SLACK_BYTES:
        raise InvalidRequestError.for_field(
            "hardware.free_memory_bytes",
            f"{free_bytes / GIB:.2f} GiB free is more than the {gpu.memory_total_bytes / GIB:.2f} GiB "
            f"{gpu.name} has (CUDA total)",
        )


def resolve_dtype(arch: ModelArchitecture, gpu: GpuSpec, requested: str) -> tuple[str, str]:
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


def _initial_kv_dtype(arch: ModelArchitecture, requested: str | None) -> tuple[str, str, str]:
    if requested and requested != "auto":
        return requested, "user", "set by the user"
    if arch.quantization is not None and arch.quantization.kv_cache_fp8:
        return "fp8", "derived", "the checkpoint carries fp8 KV-cache scales (vLLM resolves auto to fp8)"
    if requested == "auto":
        return "auto", "user", "auto stores KV in the model dtype"
    return "auto", "default", "auto stores KV in the model dtype: the KV cache fits without fp8"


def resolve_request(config: dict, request: PlanRequest) -> Resolution:
    """Resolve and evaluate every setting of ``request`` for the model whose config.json is ``config``."""
    m, hw, eng, pol, wl = request.model, request.hardware, request.engine, request.policy, request.workload
    check_gpu_count(request)
    profile = resolve_profile(eng.vllm_version)
    arch = parse_architecture(m.config_json or config, m.quantization, yarn_scales_max_len=profile.yarn_scales_max_len)
    gpu, gpu_note = resolve_gpu(request)
    check_free_memory(hw.free_memory_bytes, gpu)
    interconnect = interconnect_of(gpu, hw.interconnect)
    dp = hw.data_parallel_size or 1
    dtype, dtype_src = resolve_dtype(arch, gpu, m.dtype)
    kv_dtype, kv_src, kv_why = _initial_kv_dtype(arch, m.kv_cache_dtype)
    defaults = profile.batch_defaults(gpu.name, gpu.memory_total_bytes)
    first = resolve_batching(wl.batching_mode, defaults, wl, eng.max_num_seqs, eng.max_num_batched_tokens, None)
    util, util_note, warnings = recommend_utilization(gpu, profile, pol.gpu_memory_utilization, hw.free_memory_bytes)
    derived = arch.derived_max_model_len
    default_len = arch.default_max_model_len  # LongRoPE: the original length, not the derived one
    computed, _ = total_params(arch)
    weights_scale = round(m.params_b * 1e9) / computed if m.params_b else 1.0

    user_len = m.max_model_len if isinstance(m.max_model_len, int) else None
    len_error = None
    if user_len is not None and user_len > derived:
        len_error = (
            f"User-specified max_model_len ({user_len}) is greater than the derived max_model_len "
            f"({arch.max_len_source}={derived} in model's config.json). To allow overriding this maximum, "
            "set the env var VLLM_ALLOW_LONG_MAX_MODEL_LEN=1."
        )
    target_len = None if m.max_model_len == "auto" else (user_len or default_len)
    headroom = int(pol.headroom_gb * GIB)
    target = make_target(default_len, target_len, wl.prompt_tokens, wl.gen_tokens, wl.concurrency, headroom, profile)
    base = TwinSettings(
        tensor_parallel_size=hw.tensor_parallel_size or 1, pipeline_parallel_size=hw.pipeline_parallel_size or 1,
        dtype=dtype, kv_cache_dtype=kv_dtype, max_model_len=target_len, max_model_len_upper=default_len,
        gpu_memory_utilization=util, max_num_seqs=first.max_num_seqs,
        max_num_batched_tokens=first.max_num_batched_tokens, block_size=eng.block_size,
        enable_prefix_caching=eng.enable_prefix_caching if eng.enable_prefix_caching is not None else True,
        enforce_eager=eng.enforce_eager, enable_expert_parallel=hw.enable_expert_parallel,
        kv_cache_memory_bytes=eng.kv_cache_memory_bytes, free_memory_bytes=hw.free_memory_bytes,
        overhead_bytes=int(pol.overhead_gb * GIB), fragmentation_factor=pol.fragmentation_factor,
        weights_scale=weights_scale, data_parallel_size=dp,
        nvlink=None if hw.interconnect is None else hw.interconnect == Interconnect.NVLINK,
        flashinfer_installed=eng.vllm_install == VllmInstall.IMAGE,
    )

    def run(tp: int, pp: int, kv: str, length: int | None, **extra) -> MemoryResult:
        update = {"tensor_parallel_size": tp, "pipeline_parallel_size": pp, "kv_cache_dtype": kv,
                  "max_model_len": length, **extra}
        return evaluate(arch, gpu, base.model_copy(update=update), profile)

    may_shorten = user_len is None and m.max_model_len != "auto" and eng.kv_cache_memory_bytes is None
    fp8_allowed = fp8_kv_recommendable(arch, gpu, m.kv_cache_dtype, kv_dtype)

    def choose(evaluator) -> ParallelChoice:
        return choose_parallel(arch, evaluator, target, kv_dtype, user_tp=hw.tensor_parallel_size,
                               user_pp=hw.pipeline_parallel_size,
                               num_gpus=hw.num_gpus // dp if hw.num_gpus else None, interconnect=interconnect,
                               fp8_allowed=fp8_allowed, may_shorten=may_shorten)

    choice = choose(run)
    if not choice.useful and _free_memory_refusal(choice.result, hw.free_memory_bytes):
        # Every size fails vLLM's free-memory check alike: pick the layout as if it passed, report the refusal.
        blind = choose(lambda tp, pp, kv, n: run(tp, pp, kv, n, free_memory_bytes=None))
        choice = replace(blind, result=run(blind.tensor_parallel_size, blind.pipeline_parallel_size,
                                           blind.kv_cache_dtype, blind.max_model_len), useful=False,
                         evaluations=choice.evaluations + blind.evaluations + 1)
    tp, pp, kv_dtype, result = (choice.tensor_parallel_size, choice.pipeline_parallel_size, choice.kv_cache_dtype,
                                choice.result)
    evaluations = choice.evaluations
    reduced, length_setting = choice.reduced, choice.max_model_len
    if not result.fits and may_shorten:  # vLLM-style auto-fit even when it falls short of "useful"
        fitted = run(tp, pp, kv_dtype, None)
        evaluations += 1
        if fitted.fits:
            result, reduced, length_setting = fitted, True, None

    # Second pass: MNS/MNBT from the KV capacity, then the twin again (they move the activation peak).
    capacity = workload_capacity(result, target) if result.fits else None
    batching = resolve_batching(wl.batching_mode, defaults, wl, eng.max_num_seqs, eng.max_num_batched_tokens,
                                capacity)
    if (batching.max_num_seqs, batching.max_num_batched_tokens) != (first.max_num_seqs, first.max_num_batched_tokens):
        knobs = {"max_num_seqs": batching.max_num_seqs, "max_num_batched_tokens": batching.max_num_batched_tokens}
        again = run(tp, pp, kv_dtype, length_setting, **knobs)
        evaluations += 1
        if reduced and again.fits:
            # The length was fitted to the first-pass activation peak; smaller MNS/MNBT leave more KV
            # memory, so fit it again (vLLM's auto-fit, then the policy headroom, as in tier 2).
            refit = run(tp, pp, kv_dtype, None, **knobs)
            evaluations += 1
            length = length_with_headroom(refit, target) if refit.fits else 0
            if 1 <= length < refit.max_model_len:
                refit = run(tp, pp, kv_dtype, length, **knobs)
                evaluations += 1
            if refit.fits and refit.max_model_len >= again.max_model_len:
                again, length_setting = refit, (length if 1 <= length < refit.max_model_len else None)
        if again.fits or not result.fits:
            result = again
        else:  # cannot happen with smaller MNS/MNBT; keep the first-pass values rather than fail
            batching = first
    settings = base.model_copy(update={
        "tensor_parallel_size": tp, "pipeline_parallel_size": pp, "kv_cache_dtype": kv_dtype,
        "max_model_len": length_setting, "max_num_seqs": batching.max_num_seqs,
        "max_num_batched_tokens": batching.max_num_batched_tokens,
    })

    if choice.kv_reason:
        kv_src, kv_why = "recommended", choice.kv_reason
    elif kv_src == "default" and not choice.useful:
        kv_why = f"auto stores KV in the model dtype ({dtype})"
        if not gpu.supports_fp8:
            kv_why += f"; fp8 KV would need compute capability >= 8.9 ({gpu.name} is sm {gpu.compute_capability})"
    if m.max_model_len == "auto":
        len_src, len_why = "derived", "vLLM auto-fit (-1): the largest length that fits the KV cache"
    elif user_len is not None:
        len_src, len_why = "user", "set by the user"
    elif reduced:
        len_src, len_why = "recommended", (f"the derived {default_len} does not fit with a useful KV cache; this is "
                                           "the largest length that does")
    elif default_len < derived:
        len_src, len_why = "derived", "LongRoPE: vLLM defaults to original_max_position_embeddings"
    else:
        len_src, len_why = "derived", f"derived from config.json ({arch.max_len_source})"
    margin = margin_bytes(result, target)
    capacity = workload_capacity(result, target)
    weights_too_big = not result.fits and min(w.kv_cache_bytes for w in result.workers) <= 0
    notes = [
        gpu_note,
        Explanation(setting="tensor_parallel_size", value=str(tp), source="user" if hw.tensor_parallel_size else
                    "recommended", reason=choice.tp_reason),
        Explanation(setting="pipeline_parallel_size", value=str(pp), source="user" if hw.pipeline_parallel_size else
                    ("recommended" if pp > 1 else "default"), reason=choice.pp_reason),
        Explanation(setting="dtype", value=dtype, source=dtype_src, reason=f"checkpoint dtype {arch.checkpoint_dtype}"),
        Explanation(setting="kv_cache_dtype", value=kv_dtype, source=kv_src, reason=kv_why),
        quantization_explanation(arch, gpu, m.quantization, weights_too_big),
        Explanation(setting="max_model_len", value=str(result.max_model_len), source=len_src, reason=len_why),
        util_note,
        *batching.explanations,
        Explanation(setting="block_size", value=str(result.block_size), source="user" if eng.block_size else "derived",
                    reason="set by the user" if eng.block_size else "attention backend default / hybrid alignment"),
        Explanation(setting="enable_prefix_caching", value=str(settings.enable_prefix_caching),
                    source="user" if eng.enable_prefix_caching is not None else "default",
                    reason="set by the user" if eng.enable_prefix_caching is not None
                    else "vLLM enables it for generative models"),
        Explanation(setting="enforce_eager", value=str(eng.enforce_eager),
                    source="user" if eng.enforce_eager else "default",
                    reason="no CUDA graphs" if eng.enforce_eager else "CUDA graphs on (vLLM default)"),
        Explanation(setting="enable_expert_parallel", value=str(hw.enable_expert_parallel),
                    source="user" if hw.enable_expert_parallel else "default",
                    reason="set by the user" if hw.enable_expert_parallel else "MoE experts are tensor-parallel"),
    ]
    warnings = [*warnings, *result.warnings, *batching.warnings]
    warnings += kv_dtype_warnings(gpu, kv_dtype, kv_src == "user")
    warnings += quantization_warnings(arch, gpu, m.quantization)
    _shared_gpu_note(notes, warnings, result, hw.free_memory_bytes, gpu, eng.kv_cache_memory_bytes)
    if tp > 2 and interconnect == Interconnect.PCIE:
        warnings.append(
            f"tensor parallel {tp} over PCIe: vLLM disables its custom all-reduce for more than two PCIe-only GPUs, "
            "so every all-reduce goes through NCCL (slower decode); prefer an NVLink-connected group, or fewer GPUs "
            "with fp8 KV / quantized weights")
    if result.fits and pol.headroom_gb > 0 and margin < 0:
        left = margin + int(pol.headroom_gb * GIB)
        warnings.append(f"headroom {left / GIB:.2f} GiB per GPU (KV memory left after one {result.max_model_len}-token "
                        f"request, or {wl.concurrency} x {target.request_tokens}-token requests) is below the "
                        f"requested --headroom-gb {pol.headroom_gb:g}")
    notes.append(Explanation(
        setting="data_parallel_size", value=str(dp), source="user" if hw.data_parallel_size else "default",
        reason=(f"{dp} replicas of the TP {tp} x PP {pp} engine, each with its own KV cache ({tp * pp * dp} GPUs); "
                "KV figures are per replica") if dp > 1 else "one engine (no data parallel)"))
    if profile.flashinfer_sampler_when_installed:
        notes.append(_install_explanation(eng.vllm_install,
                                          profile.v1_sampler_for(gpu.cc_tuple, settings.flashinfer_installed)))
    if wl.prompt_tokens + wl.gen_tokens > result.max_model_len:
        warnings.append(f"prompt+gen ({wl.prompt_tokens + wl.gen_tokens} tokens) exceeds max_model_len "
                        f"{result.max_model_len}: vLLM rejects such requests")
    if result.fits and capacity < wl.concurrency:
        warnings.append(f"the KV cache holds {capacity} concurrent requests of {target.request_tokens} tokens, "
                        f"fewer than the requested {wl.concurrency}: the rest queue (see fixes)")
    if arch.vision_params:
        warnings.append("multimodal encoder profiling is not modelled; activation may be underestimated")
    return Resolution(
        arch=arch, gpu=gpu, profile=profile, settings=settings, result=result, target=target,
        interconnect=interconnect, explanations=tuple(notes), warnings=tuple(dict.fromkeys(warnings)),
        error=len_error or result.error, margin_bytes=margin, workload_capacity=capacity,
        num_gpus=hw.num_gpus or tp * pp * dp, evaluations=evaluations,
    )


def _install_explanation(install: VllmInstall | None, sampler: str) -> Explanation:
    """0.10-0.11 only: the install decides the profile run's sampler warm-up (bigger with the sort)."""
    chosen = install or VllmInstall.PIP
    how = ("the vllm/vllm-openai image bundles FlashInfer" if chosen == VllmInstall.IMAGE
           else "pip install vllm has no FlashInfer before 0.12")
    used = "FlashInfer" if sampler == "flashinfer" else "the PyTorch sort"
    if chosen == VllmInstall.IMAGE and sampler != "flashinfer":
        used += " (FlashInfer's sampler needs compute capability 7.5 or newer)"
    reason = (f"{how}, so the startup profile samples with {used}"
              + ("" if install else "; with the image pass --vllm-install image (smaller sampler peak, more KV cache)"))
    return Explanation(setting="vllm_install", value=chosen.value, source="user" if install else "default",
                       reason=reason)


def _free_memory_refusal(result: MemoryResult, free: int | None) -> bool:
    """vLLM's startup check failed: free memory below ceil(total x utilization) (independent of TP)."""
    if free is None or result.fits:
        return False
    return result.binding.budget_bytes > free and result.error is not None and result.error.startswith("Free memory")


def _shared_gpu_note(notes: list[Explanation], warnings: list[str], result: MemoryResult, free: int | None,
                     gpu: GpuSpec, kv_bytes: int | None) -> None:
    """When other processes hold memory, --kv-cache-memory-bytes is the exact alternative to utilization."""
    if kv_bytes is not None:
        nonkv = max(w.weights_bytes + w.non_torch_bytes + w.activation_peak_bytes + w.cuda_graph_bytes
                    for w in result.workers)
        room = free if free is not None else gpu.memory_total_bytes
        if kv_bytes + nonkv > room:
            warnings.append(f"kv_cache_memory_bytes {kv_bytes} plus {nonkv / GIB:.2f} GiB of weights and activations "
                            f"exceeds the {room / GIB:.2f} GiB {'free' if free is not None else 'total'} per GPU: "
                            "expect an out-of-memory error at startup")
        return
    if free is None or free >= gpu.memory_total_bytes:
        return
    alt = kv_cache_memory_alternative(result, free)
    if alt is None:
        return
    text = (f"--kv-cache-memory-bytes={alt} ({alt / GIB:.2f} GiB) is the exact alternative when several instances "
            f"share the GPU: it sizes the KV cache directly, ignoring utilization and other processes' memory")
    i = next(i for i, n in enumerate(notes) if n.setting == "gpu_memory_utilization")
    notes[i] = notes[i].model_copy(update={"reason": f"{notes[i].reason}; {text}"})
    warnings.append(f"{free / GIB:.2f} of {gpu.memory_total_bytes / GIB:.2f} GiB free: {text}")

