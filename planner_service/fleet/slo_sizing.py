"""Size a deployment given as ``request_rate`` + SLOs: replicas and configuration from a capacity plan.

A fleet deployment may say how much traffic it must serve instead of how many replicas to run. The
capacity search (``engine/capacity.py``) then runs over the GPU types the fleet has (those of the hosts
its filter admits), and the best option - fewest GPUs - becomes the deployment: that many replicas,
pinned to that GPU type, with the option's TP size, quantization, KV-cache dtype and max_num_seqs, and
each replica given the memory that is free (the search assumed vLLM's full budget). The packing that
follows is PlanFleet's usual one. Pure given the model's metadata.
"""

from __future__ import annotations

from typing import Callable

from planner_service.engine.bench_models import CapacityRequest, LoadOptions
from planner_service.engine.capacity import plan_capacity
from planner_service.engine.errors import GpuNotFoundError
from planner_service.engine.gpus import lookup_gpu
from planner_service.engine.source import ModelSource
from planner_service.fleet.models import (
    Deployment, DeploymentSizing, FleetHost, FleetPlanRequest, MemorySizing, Unplaced,
)


def fleet_gpu_types(deployment: Deployment, hosts: tuple[FleetHost, ...] | list[FleetHost]) -> dict[str, str]:
    """Catalog GPU name -> the NVML name the fleet reports, for GPUs the deployment's filter admits."""
    wanted = [t.lower() for t in deployment.filter.gpu_types]
    found: dict[str, str] = {}
    for host in hosts:
        if deployment.filter.hosts and host.host not in deployment.filter.hosts:
            continue
        for gpu in host.gpus:
            if gpu.is_mig_instance or (wanted and not any(w in gpu.name.lower() for w in wanted)):
                continue
            try:
                found.setdefault(lookup_gpu(gpu.name).name, gpu.name)
            except GpuNotFoundError:
                continue  # a GPU the catalog does not know has no speed figures to size with
    return found


def size_for_rate(deployment: Deployment, source: ModelSource,
                  gpu_types: dict[str, str]) -> tuple[Deployment, DeploymentSizing]:
    """The deployment with replicas and settings from the best capacity option (replicas 0: none meets)."""
    assert deployment.request_rate is not None
    plan = deployment.plan
    load = deployment.load or LoadOptions(random_input_len=plan.workload.prompt_tokens,
                                          random_output_len=plan.workload.gen_tokens)
    name = deployment.display_name
    if not gpu_types:
        return deployment, DeploymentSizing(deployment=name, request_rate=deployment.request_rate, replicas=0, gpu="",
                                            tensor_parallel_size=0, kv_cache_dtype="", max_num_seqs=0,
                                            max_rate_per_replica=0.0, reason="no GPU type in the fleet matches")
    answer = plan_capacity(source, CapacityRequest(
        plan=plan, request_rate=deployment.request_rate, slos=list(deployment.slos),
        percentile=deployment.slo_percentile, load=load, gpus=sorted(gpu_types), max_options=1,
    ))
    if not answer.options:
        reason = "; ".join(answer.rejected[:3]) or "no configuration meets the SLOs"
        return deployment, DeploymentSizing(deployment=name, request_rate=deployment.request_rate, replicas=0, gpu="",
                                            tensor_parallel_size=0, kv_cache_dtype="", max_num_seqs=0,
                                            max_rate_per_replica=0.0, reason=reason)
    best = answer.options[0]
    sized_plan = plan.model_copy(update={
        "model": plan.model.model_copy(update={"quantization": best.quantization, "kv_cache_dtype": best.kv_cache_dtype}),
        "hardware": plan.hardware.model_copy(update={"tensor_parallel_size": best.tensor_parallel_size}),
        "engine": plan.engine.model_copy(update={"max_num_seqs": best.max_num_seqs}),
    })
    # The capacity search simulated replicas with vLLM's own memory budget (the default utilization):
    # give each replica what is free (MAX_FREE), not the smallest budget for the plan's workload
    # concurrency, or its KV cache would hold far fewer requests than the rate needs.
    sized = deployment.model_copy(update={
        "plan": sized_plan, "replicas": best.replicas, "sizing": MemorySizing.MAX_FREE,
        "filter": deployment.filter.model_copy(update={"gpu_types": (gpu_types[best.gpu],)}),
    })
    return sized, DeploymentSizing(
        deployment=name, request_rate=deployment.request_rate, replicas=best.replicas, gpu=gpu_types[best.gpu],
        tensor_parallel_size=best.tensor_parallel_size, quantization=best.quantization,
        kv_cache_dtype=best.kv_cache_dtype, max_num_seqs=best.max_num_seqs,
        max_rate_per_replica=best.max_rate_per_replica, predicted=dict(best.predicted),
    )


def size_deployments(request: FleetPlanRequest, hosts: tuple[FleetHost, ...] | list[FleetHost],
                     source_for: Callable[[Deployment], ModelSource]
                     ) -> tuple[FleetPlanRequest, tuple[DeploymentSizing, ...], tuple[Unplaced, ...]]:
    """Replace every rate-given deployment by its sized one; those no configuration serves are unplaced."""
    deployments: list[Deployment] = []
    sizings: list[DeploymentSizing] = []
    unplaced: list[Unplaced] = []
    for deployment in request.deployments:
        if deployment.request_rate is None:
            deployments.append(deployment)
            continue
        sized, sizing = size_for_rate(deployment, source_for(deployment), fleet_gpu_types(deployment, hosts))
        sizings.append(sizing)
        if sizing.replicas:
            deployments.append(sized)
        else:
            unplaced.append(Unplaced(deployment=sizing.deployment, replica=0,
                                     reason=f"{sizing.request_rate:g} req/s within the SLOs: {sizing.reason}"))
    return request.model_copy(update={"deployments": tuple(deployments)}), tuple(sizings), tuple(unplaced)
