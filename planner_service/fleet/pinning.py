"""Deployment artifacts pinned to a placement's exact GPUs, rendered by the engine's one renderer.

The fleet adds *where*, never *how to run vLLM*: the ``vllm serve`` arguments, the docker command
and the Kubernetes objects all come from ``planner_service.engine.artifacts`` (the same renderer the
``generate`` command uses), given the GPU UUIDs, the node and how Kubernetes should pin them:

- ``CUDA_VISIBLE_DEVICES`` / docker ``--gpus '"device=UUID,..."'`` with the GPU (or MIG) UUIDs;
- Kubernetes objects named per replica (``vllm-<deployment>-<replica>``), on the node
  (``kubernetes.io/hostname``), requesting ``nvidia.com/gpu`` or, for a MIG slice, the device
  plugin's mixed-strategy resource ``nvidia.com/mig-<profile>`` (``nvidia.com/mig-3g.40gb``);
- or, when the exact GPUs matter, a DRA ``ResourceClaim`` (``resource.k8s.io/v1``, DeviceClass
  ``gpu.nvidia.com`` or ``mig.nvidia.com`` of the NVIDIA DRA driver) selecting exactly those UUIDs.

The exact GPUs matter (``GpuPinning.AUTO`` picks DRA) when the device plugin, which only sees a
count, could hand out a device that would not do: the node has another device of the same kind
(GPU model, or MIG profile) that is not allocated to a pod but could not host this placement (too
little free memory, unhealthy, held by a reservation), or the placement spans several GPUs of a node
that has more of them (NVLink and NUMA grouping are the planner's choice, not the kubelet's).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from planner_service.engine.artifacts.deployment import deployment_from_plan, object_name_for
from planner_service.engine.artifacts.docker import render_docker_run
from planner_service.engine.artifacts.kubernetes import render_kubernetes
from planner_service.engine.artifacts.serve import render_serve_command
from planner_service.engine.models import PlanRequest, PlanResponse
from planner_service.engine.profiles import resolve_profile
from planner_service.fleet.models import FleetGpu, FleetHost, GpuPinning, Placement, PlacementArtifacts, targets

DRA_GPU_CLASS = "gpu.nvidia.com"
DRA_MIG_CLASS = "mig.nvidia.com"
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class Pinning:
    """Where one placement runs and how Kubernetes pins it (the renderer's fleet inputs)."""

    host: str
    uuids: tuple[str, ...]
    name: str  # Kubernetes object name, unique per replica of an answer
    mode: GpuPinning  # NODE or DRA (AUTO is resolved before)
    gpu_resource: str  # device-plugin resource (NODE)
    dra_device_class: str  # DeviceClass (DRA)


def mig_resource_name(profile: str | None) -> str:
    """``3g.40gb`` -> ``nvidia.com/mig-3g.40gb`` (the device plugin's mixed MIG strategy)."""
    return f"nvidia.com/mig-{profile}" if profile else GPU_RESOURCE


def _kind(gpu: FleetGpu) -> tuple[str, str | None]:
    return (gpu.name, gpu.mig_profile if gpu.is_mig_instance else None)


def exact_gpus_matter(host: FleetHost, placement: Placement) -> bool:
    """True when a device plugin choosing by count alone could pick a device that does not do."""
    chosen = set(placement.gpu_uuids)
    by_uuid = {g.uuid: g for g in host.gpus}
    picked = [by_uuid[u] for u in placement.gpu_uuids if u in by_uuid]
    if not picked:
        return False
    kind = _kind(picked[0])
    same_kind = [g for g in targets(host) if _kind(g) == kind and g.allocated_to is None]
    others = [g for g in same_kind if g.uuid not in chosen]
    if not others:
        return False
    if len(picked) > 1:
        return True  # the group (NVLink, NUMA) is the planner's choice among more devices
    need = placement.reserved_bytes
    return any(not g.healthy or g.memory_free_bytes < need for g in others)


def decide(
    host: FleetHost, placement: Placement, label: str, replica: int | None, wanted: GpuPinning | None
) -> Pinning:
    """The pinning of ``placement``: its object name (``-<replica>``, or a short hash for a ranked
    alternative) and NODE or DRA (AUTO resolved with ``exact_gpus_matter``)."""
    if replica is not None:
        suffix = str(replica)
    else:
        suffix = "p" + hashlib.sha256("/".join((host.address, *placement.gpu_uuids)).encode()).hexdigest()[:6]
    mode = wanted or GpuPinning.AUTO
    if mode is GpuPinning.AUTO:
        mode = GpuPinning.DRA if exact_gpus_matter(host, placement) else GpuPinning.NODE
    by_uuid = {g.uuid: g for g in host.gpus}
    first = by_uuid.get(placement.gpu_uuids[0]) if placement.gpu_uuids else None
    mig = first is not None and first.is_mig_instance
    return Pinning(
        host=placement.host,
        uuids=tuple(placement.gpu_uuids),
        name=object_name_for(label, suffix),
        mode=mode,
        gpu_resource=mig_resource_name(first.mig_profile) if mig and first is not None else GPU_RESOURCE,
        dra_device_class=DRA_MIG_CLASS if mig else DRA_GPU_CLASS,
    )


def render(plan: PlanResponse, request: PlanRequest, pinning: Pinning, full: bool = True) -> PlacementArtifacts:
    """Pinned artifacts from the engine's renderers; ``full`` adds the Kubernetes objects (the
    ranked alternatives of a Place answer get the commands only, to keep answers small)."""
    deployment = deployment_from_plan(
        plan, request, gpu_uuids=list(pinning.uuids), hostname=pinning.host,
        serve_flags=resolve_profile(plan.vllm_version).serve_flags, object_name=pinning.name,
        gpu_resource_name=pinning.gpu_resource,
        dra_device_class=pinning.dra_device_class if pinning.mode is GpuPinning.DRA else None,
    )
    return PlacementArtifacts(
        cuda_visible_devices=",".join(pinning.uuids),
        serve_command=render_serve_command(deployment),
        docker_run=render_docker_run(deployment),
        kubernetes_node_selector={"kubernetes.io/hostname": pinning.host},
        kubernetes=render_kubernetes(deployment) if full else "",
        kubernetes_name=pinning.name,
        kubernetes_gpu_pinning=pinning.mode,
    )
