"""The last engine stages: add performance estimates and deployment artifacts to a twin's plan.

``build_plan`` (the memory twin) answers everything about memory and settings; ``complete_plan``
adds what follows from it: the steady-state ``Performance`` (the step model ``bench`` shares) and
the rendered ``Artifacts``. Pure code.
"""

from __future__ import annotations

from planner_service.engine.architecture import ModelArchitecture, parse_architecture
from planner_service.engine.artifacts import deployment_from_plan, render_artifacts
from planner_service.engine.errors import GpuNotFoundError
from planner_service.engine.gpus import lookup_gpu
from planner_service.engine.models import Interconnect, PlanRequest, PlanResponse, Performance
from planner_service.engine.performance import estimate_performance
from planner_service.engine.simulation.shape import engine_shape
from planner_service.engine.simulation.step_cost import EngineShape
from planner_service.engine.simulation.versions import engine_behaviour
from planner_service.engine.profiles import resolve_profile
from planner_service.engine.source import ModelSource


def default_interconnect(gpu_name: str) -> Interconnect:
    """NVLink when the catalog says the GPU has it; PCIe (the slower, safer guess) otherwise."""
    try:
        return Interconnect.NVLINK if lookup_gpu(gpu_name).nvlink else Interconnect.PCIE
    except GpuNotFoundError:
        return Interconnect.PCIE


def plan_engine_shape(
    response: PlanResponse, request: PlanRequest, architecture: ModelArchitecture
) -> EngineShape | None:
    """The step model's view of the planned replica; None when the GPU's bandwidth or FLOPs are unknown."""
    gpu, config = response.gpu, response.config
    if not gpu.memory_bandwidth_bytes_per_second or not gpu.bf16_tflops:
        return None
    major = int((gpu.compute_capability or "8.0").split(".")[0])
    behaviour = engine_behaviour(response.vllm_version, pipeline_parallel_size=config.pipeline_parallel_size,
                                 compute_capability_major=major)
    interconnect = request.hardware.interconnect or default_interconnect(gpu.name)
    return engine_shape(architecture, config, gpu, interconnect, behaviour)


def plan_performance(
    response: PlanResponse, request: PlanRequest, architecture: ModelArchitecture | None
) -> Performance | None:
    """Performance only for a plan that starts (a failing plan has no speed) and a known architecture."""
    if not response.feasibility.fits or architecture is None:
        return None
    shape = plan_engine_shape(response, request, architecture)
    if shape is None:
        return None
    config, w = response.config, request.workload
    window = (architecture.sliding_window or 0) if "sliding" in architecture.layer_kinds else 0
    dp = config.data_parallel_size
    # kv_cache_tokens is per engine already (every DP rank has the same pool); the concurrency splits.
    return estimate_performance(
        shape, max_num_seqs=config.max_num_seqs, max_num_batched_tokens=config.max_num_batched_tokens,
        kv_cache_tokens=max(0, response.feasibility.kv_cache_tokens), prompt_tokens=w.prompt_tokens,
        gen_tokens=w.gen_tokens, concurrency=-(-w.concurrency // dp), sliding_window=window, data_parallel_size=dp,
    )


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

    ``architecture`` (or the ``source`` it is parsed from) is what the step model reads (layers, heads,
    experts, windows); without either there is no performance estimate.
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
            "performance": plan_performance(response, request, architecture),
            "artifacts": render_artifacts(deployment),
        }
    )
