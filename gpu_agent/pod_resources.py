"""Allocation truth from the kubelet: which GPUs (and MIG instances) belong to which pod.

NVML's free memory says nothing about a GPU the device plugin just gave to a pod whose container has
not started yet. The kubelet knows: its PodResources API (``v1.PodResourcesLister``, the vendored
``protos/vllm_planner/third_party/kubelet/podresources/v1/api.proto``) lists, per container, the
device IDs of every extended resource (``nvidia.com/gpu``, ``nvidia.com/mig-3g.40gb``) and DRA
claims. The agent reads it over the kubelet's unix socket (mounted read-only from
``/var/lib/kubelet/pod-resources``) when that socket exists, on every collection, and reports each
allocation with the GPU UUID it resolves to; the planner then treats those GPUs as taken.

Device IDs resolve as the NVIDIA device plugin writes them: a GPU or MIG UUID (the default
``DEVICE_ID_STRATEGY=uuid``), a GPU index (``index``), ``GPU:MIG`` indices for MIG with the index
strategy, with time-slicing's ``::N`` replica suffix removed. DRA devices of the NVIDIA driver are
named ``gpu-<index>``; other DRA devices are reported unresolved (``gpu_uuid`` empty).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import grpc

from gpu_agent.inventory import AllocatableDevices, DeviceAllocation, Gpu, PodResourcesReport

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
# The kubelet's own client uses 16 MiB: a node with hundreds of pods and CPU/memory lists is large.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
NVIDIA_PREFIX = "nvidia.com/"
_DRA_GPU = re.compile(r"^gpu-(\d+)$")


def _stubs():  # noqa: ANN202 - generated modules, imported lazily (only agents on Kubernetes need them)
    from vllm_planner.third_party.kubelet.podresources.v1 import api_pb2, api_pb2_grpc

    return api_pb2, api_pb2_grpc


class PodResourcesClient:
    """A client of the kubelet's PodResources API on a unix socket; every call has a deadline."""

    def __init__(self, socket_path: str | Path = DEFAULT_SOCKET, timeout_seconds: float = 5.0) -> None:
        self.socket_path = str(socket_path)
        self.timeout_seconds = timeout_seconds
        self._channel: grpc.Channel | None = None
        self._stub = None
        self._seen = False

    def available(self) -> bool:
        """The socket exists (the agent runs on a Kubernetes node with the directory mounted), or
        existed before: a kubelet restarting removes it for a moment, and that must read as "no
        allocation truth now" (stale), never as "not on Kubernetes" (no allocations)."""
        exists = Path(self.socket_path).exists()
        self._seen = self._seen or exists
        return self._seen

    def _lister(self):  # noqa: ANN202
        if self._stub is None:
            _, api_grpc = _stubs()
            self._channel = grpc.insecure_channel(
                f"unix://{self.socket_path}",
                options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)],
            )
            self._stub = api_grpc.PodResourcesListerStub(self._channel)
        return self._stub

    def read(self, gpus: Iterable[Gpu]) -> PodResourcesReport:
        """``List`` + ``GetAllocatableResources``, resolved against this host's GPUs.

        Raises ``grpc.RpcError`` when the kubelet does not answer in time (the collector then keeps
        the previous snapshot, marked stale: without allocation truth, free memory may lie).
        """
        api, _ = _stubs()
        lister = self._lister()
        listed = lister.List(api.ListPodResourcesRequest(), timeout=self.timeout_seconds)
        try:
            allocatable = lister.GetAllocatableResources(api.AllocatableResourcesRequest(), timeout=self.timeout_seconds)
            devices = allocatable.devices
        except grpc.RpcError as exc:  # older kubelets / feature gate off: List alone still tells the truth
            if exc.code() not in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAVAILABLE):
                raise
            devices = ()
        return report_from(self.socket_path, listed, devices, list(gpus))

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel, self._stub = None, None


def _device_index(gpus: list[Gpu]) -> dict[str, str]:
    """Every device ID spelling the device plugin may use -> the GPU or MIG UUID."""
    index: dict[str, str] = {}
    for gpu in gpus:
        if gpu.uuid:
            index[gpu.uuid] = gpu.uuid
            index[str(gpu.index)] = gpu.uuid
        for mig in gpu.mig_devices:
            if mig.uuid:
                index[mig.uuid] = mig.uuid
                index[f"{gpu.index}:{mig.index}"] = mig.uuid
    return index


def resolve_device(device_id: str, index: dict[str, str]) -> str:
    base = device_id.split("::", 1)[0]  # time-slicing replicas: "GPU-...::3"
    return index.get(base, "")


def report_from(socket_path: str, listed, allocatable_devices, gpus: list[Gpu]) -> PodResourcesReport:  # noqa: ANN001
    """The agent's report from a ``ListPodResourcesResponse`` and ``AllocatableResourcesResponse.devices``."""
    index = _device_index(gpus)
    by_gpu_index = {str(g.index): g.uuid for g in gpus}
    allocations: list[DeviceAllocation] = []
    for pod in listed.pod_resources:
        for container in pod.containers:
            for devices in container.devices:
                if not devices.resource_name.startswith(NVIDIA_PREFIX):
                    continue
                for device_id in devices.device_ids:
                    allocations.append(DeviceAllocation(
                        resource_name=devices.resource_name, device_id=device_id,
                        gpu_uuid=resolve_device(device_id, index), namespace=pod.namespace, pod=pod.name,
                        container=container.name,
                    ))
            for claim in container.dynamic_resources:
                for resource in claim.claim_resources:
                    if not resource.driver_name.endswith("nvidia.com"):
                        continue
                    match = _DRA_GPU.match(resource.device_name)
                    allocations.append(DeviceAllocation(
                        resource_name=resource.driver_name, device_id=resource.device_name,
                        gpu_uuid=by_gpu_index.get(match.group(1), "") if match else "",
                        namespace=claim.claim_namespace or pod.namespace, pod=pod.name, container=container.name,
                        claim_name=claim.claim_name,
                    ))
    # The kubelet answers one entry per resource and NUMA node: merge them per resource.
    allocatable: dict[str, set[str]] = {}
    for devices in allocatable_devices:
        if devices.resource_name.startswith(NVIDIA_PREFIX):
            allocatable.setdefault(devices.resource_name, set()).update(devices.device_ids)
    allocations.sort(key=lambda a: (a.resource_name, a.device_id, a.namespace, a.pod, a.container))
    return PodResourcesReport(
        socket_path=socket_path, allocations=tuple(allocations),
        allocatable=tuple(AllocatableDevices(resource_name=name, device_ids=tuple(sorted(ids)))
                          for name, ids in sorted(allocatable.items())),
    )
