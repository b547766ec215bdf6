"""The last engine stages: add performance estimates and deployment artifacts to a twin's plan.

``build_plan`` (the memory twin) answers everything about memory and settings; ``complete_plan``
adds what follows from it: the roofline ``Performance`` and the rendered ``Artifacts``. Pure code.
"""

from __future__ import annotations

from typing import Any

from planner_service.engine.artifacts import deployment_from_plan, render_artifacts
from planner_service.engine.errors import GpuNotFoundError
from planner_service.engine.gpus import lookup_gpu
from planner_service.engine.models import Interconnect, PlanRequest, PlanResponse, Performance
from planner_service.engine.performance import ModelShape, PerfInputs, estimate_performance
from planner_service.engine.profiles import resolve_profile

_FP8_COMPUTE_QUANTIZATIONS = {"fp8", "fbgemm_fp8", "fp8_per_tensor", "fp8_per_block", "fp8_per_channel", "mxfp8"}


def default_interconnect(gpu_name: str) -> Interconnect:
    """NVLink when the catalog says the GPU has it; PCIe (the slower, safer guess) otherwise."""
    try:
        return Interconnect.NVLINK if lookup_gpu(gpu_name).nvlink else Interconnect.PCIE
    except GpuNotFoundError:
        return Interconnect.PCIE


def shape_from_architecture(architecture: Any) -> ModelShape | None:
    """ModelShape from the twin's ModelArchitecture (read by attribute; None when a field is missing)."""
    if architecture is None:
        return None

    def first(*names: str, default: Any = None) -> Any:
        for name in names:
            value = getattr(architecture, name, None)
            if value is not None:
                return value
        return default

    layers = first("num_layers", "num_hidden_layers")
    hidden = first("hidden_size")
    heads = first("num_attention_heads", "num_heads")
    if not (layers and hidden and heads):
        return None
    return ModelShape(
        num_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        head_dim=first("head_dim", "head_size", default=hidden // heads),
        num_experts=first("num_experts", default=0) or 0,
        experts_per_token=first("experts_per_token", "num_experts_per_tok", "top_k", default=0) or 0,
        expert_params=first("expert_params", "routed_expert_params", default=0) or 0,
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


def plan_performance(response: PlanResponse, request: PlanRequest, shape: ModelShape | None = None) -> Performance | None:
    """Performance only for a plan that starts; a failing plan has no speed to estimate."""
    if not response.feasibility.fits:
        return None
    inputs = performance_inputs(response, request, shape)
    return estimate_performance(inputs) if inputs else None


def complete_plan(
    response: PlanResponse,
    request: PlanRequest,
    *,
    architecture: Any = None,
    gpu_uuids: list[str] | None = None,
    hostname: str | None = None,
    serve_flags: frozenset[str] | None = None,
) -> PlanResponse:
    """Return ``response`` with ``performance`` and ``artifacts`` filled in.

    ``architecture`` is the twin's ModelArchitecture (adds attention FLOPs and the MoE expert layout);
    ``gpu_uuids``/``hostname`` pin the artifacts to a placement. Rendering checks every serve flag
    against the target version's flag set (``serve_flags``, default: the version profile's) and fails
    loudly rather than emit a flag that version lacks.
    """
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
