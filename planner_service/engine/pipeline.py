"""The last engine stages: add performance estimates and deployment artifacts to a twin's plan.

``build_plan`` (the memory twin) answers everything about memory and settings; ``complete_plan``
adds what follows from it: the roofline ``Performance`` and the rendered ``Artifacts``. Pure code.
"""

from __future__ import annotations

from planner_service.engine.architecture import ModelArchitecture, parse_architecture
from planner_service.engine.artifacts import deployment_from_plan, render_artifacts
from planner_service.engine.errors import GpuNotFoundError
from planner_service.engine.gpus import lookup_gpu
from planner_service.engine.models import Interconnect, PlanRequest, PlanResponse, Performance
from planner_service.engine.performance import ModelShape, PerfInputs, estimate_performance
from planner_service.engine.profiles import resolve_profile
from planner_service.engine.source import ModelSource

_FP8_COMPUTE_QUANTIZATIONS = {"fp8", "fbgemm_fp8", "fp8_per_tensor", "fp8_per_block", "fp8_per_channel", "mxfp8"}


def default_interconnect(gpu_name: str) -> Interconnect:
    """NVLink when the catalog says the GPU has it; PCIe (the slower, safer guess) otherwise."""
    try:
        return Interconnect.NVLINK if lookup_gpu(gpu_name).nvlink else Interconnect.PCIE
    except GpuNotFoundError:
        return Interconnect.PCIE


def shape_from_architecture(arch: ModelArchitecture | None) -> ModelShape | None:
    """The roofline's view of the twin's ModelArchitecture (routed experts: gate, up and down)."""
    if arch is None:
        return None
    moe = arch.moe
    expert_params = 0
    if moe is not None:
        per_expert = 3 * arch.hidden_size * moe.moe_intermediate_size
        expert_params = sum(moe.moe_layers) * moe.num_experts * per_expert
    head_dim = arch.head_dim
    if arch.mla is not None:
        # Absorbed MLA: QK^T over kv_lora_rank + rope dims and PV over kv_lora_rank, per head.
        head_dim = (2 * arch.mla.kv_lora_rank + arch.mla.qk_rope_head_dim) // 2
    return ModelShape(
        num_layers=arch.num_layers,
        attention_layers=arch.attention_layers,
        hidden_size=arch.hidden_size,
        num_attention_heads=arch.num_attention_heads,
        head_dim=head_dim,
        num_experts=moe.num_experts if moe else 0,
        experts_per_token=moe.experts_per_token if moe else 0,
        expert_params=expert_params,
    )


def performance_inputs(
    response: PlanResponse, request: PlanRequest, shape: ModelShape | None = None
) -> PerfInputs | None:
    """None when the GPU's bandwidth or peak FLOPs are unknown (no roofline without them)."""
    gpu = response.gpu
    if not gpu.memory_bandwidth_bytes_per_second or not gpu.bf16_tflops:
        return None
    if response.feasibility.per_gpu.weights_bytes <= 0 or response.model.num_params <= 0:
        return None
    config = response.config
    return PerfInputs(
        memory_bandwidth_bytes_per_second=gpu.memory_bandwidth_bytes_per_second,
        bf16_flops_per_second=gpu.bf16_tflops * 1e12,
        fp8_flops_per_second=gpu.fp8_tflops * 1e12 if gpu.fp8_tflops else None,
        interconnect=request.hardware.interconnect or default_interconnect(gpu.name),
        tensor_parallel_size=config.tensor_parallel_size,
        pipeline_parallel_size=config.pipeline_parallel_size,
        weights_bytes_per_rank=response.feasibility.per_gpu.weights_bytes,
        kv_bytes_per_token_per_rank=response.feasibility.kv_bytes_per_token,
        num_params=response.model.num_params,
        num_active_params=response.model.num_active_params,
        fp8_compute=(config.quantization or "") in _FP8_COMPUTE_QUANTIZATIONS,
        enforce_eager=config.enforce_eager,
        max_num_seqs=config.max_num_seqs,
        max_num_batched_tokens=config.max_num_batched_tokens,
        kv_cache_tokens=max(0, response.feasibility.kv_cache_tokens),
        prompt_tokens=request.workload.prompt_tokens,
        gen_tokens=request.workload.gen_tokens,
        concurrency=request.workload.concurrency,
        shape=shape,
    )


def plan_performance(
    response: PlanResponse, request: PlanRequest, shape: ModelShape | None = None
) -> Performance | None:
    """Performance only for a plan that starts; a failing plan has no speed to estimate."""
    if not response.feasibility.fits:
        return None
    inputs = performance_inputs(response, request, shape)
    return estimate_performance(inputs) if inputs else None


def complete_plan(
    response: PlanResponse,
    request: PlanRequest,
    *,
    source: ModelSource | None = None,
    architecture: ModelArchitecture | None = None,
    gpu_uuids: list[str] | None = None,
    hostname: str | None = None,
    serve_flags: frozenset[str] | None = None,
) -> PlanResponse:
    """Return ``response`` with ``performance`` and ``artifacts`` filled in.

    ``architecture`` (or the ``source`` it is parsed from) adds attention FLOPs and the MoE expert
    layout to the roofline; without either, those terms are approximated (and the assumptions say so).
    ``gpu_uuids``/``hostname`` pin the artifacts to a placement. Rendering checks every serve flag
    against the target version's flag set (``serve_flags``, default: the version profile's) and fails
    loudly rather than emit a flag that version lacks.
    """
    if architecture is None and source is not None:
        architecture = parse_architecture(source.config, request.model.quantization)
    if serve_flags is None:
        serve_flags = resolve_profile(response.vllm_version).serve_flags
    deployment = deployment_from_plan(
        response, request, gpu_uuids=gpu_uuids, hostname=hostname, serve_flags=serve_flags
    )
    return response.model_copy(
        update={
            "performance": plan_performance(response, request, shape_from_architecture(architecture)),
            "artifacts": render_artifacts(deployment),
        }
    )
