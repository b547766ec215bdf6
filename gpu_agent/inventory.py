"""The inventory domain: what one host's GPUs look like at one collection. Pure pydantic, no I/O.

Unknown is ``None``, never 0 or -1: a probe that answers "Not Supported" leaves its field unset.
Memory follows NVML's v2 API: ``memory_total_bytes`` includes the driver's reservation, and
``memory_cuda_total_bytes`` (total - reserved) is what ``cudaMemGetInfo`` and vLLM see.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field

MIB = 1 << 20


class CollectionSource(str, Enum):
    NVML = "nvml"
    NVIDIA_SMI = "nvidia-smi"
    NONE = "none"
    REPLAY_NVML = "replay-nvml"
    REPLAY_NVIDIA_SMI = "replay-nvidia-smi"
    STATIC = "static"


class MigMode(str, Enum):
    DISABLED = "disabled"
    ENABLED = "enabled"


class ComputeMode(str, Enum):
    DEFAULT = "default"
    EXCLUSIVE_PROCESS = "exclusive-process"
    PROHIBITED = "prohibited"


class GpuHealth(str, Enum):
    """From the driver's error events (NVML XID / ECC); None = not monitored."""

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class LinkLevel(str, Enum):
    """``nvidia-smi topo -m`` legend, closest first."""

    NVLINK = "NV"
    PIX = "PIX"
    PXB = "PXB"
    PHB = "PHB"
    NODE = "NODE"
    SYS = "SYS"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HostInfo(_Model):
    hostname: str
    agent_version: str
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    nvml_version: str | None = None
    # Random per agent start; the collector stamps it on every snapshot.
    agent_instance_id: str = ""


class MigDevice(_Model):
    uuid: str
    parent_uuid: str
    index: int
    profile: str
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None
    memory_total_bytes: int | None = None
    memory_used_bytes: int | None = None
    memory_free_bytes: int | None = None
    multiprocessor_count: int | None = None


class Gpu(_Model):
    index: int
    uuid: str
    name: str
    pci_bus_id: str | None = None
    memory_total_bytes: int | None = None
    memory_reserved_bytes: int | None = None
    memory_used_bytes: int | None = None
    memory_free_bytes: int | None = None
    memory_cuda_total_bytes: int | None = None
    compute_capability: str | None = None
    pcie_generation: int | None = None
    pcie_width: int | None = None
    pcie_max_generation: int | None = None
    pcie_max_width: int | None = None
    mig_mode: MigMode | None = None
    mig_mode_pending: MigMode | None = None
    mig_devices: tuple[MigDevice, ...] = ()
    ecc_enabled: bool | None = None
    power_limit_milliwatts: int | None = None
    temperature_celsius: int | None = None
    utilization_gpu_percent: int | None = None
    utilization_memory_percent: int | None = None
    compute_mode: ComputeMode | None = None
    numa_node: int | None = None
    cpu_affinity: str | None = None
    persistence_mode_enabled: bool | None = None
    # Set when a probe of this GPU failed; the other fields hold what could be read.
    error: str | None = None
    power_usage_milliwatts: int | None = None
    ecc_errors_corrected_count: int | None = None
    ecc_errors_uncorrected_count: int | None = None
    xid_events_count: int | None = None
    last_xid: int | None = None
    health: GpuHealth | None = None
    health_reason: str = ""


class GpuProcess(_Model):
    pid: int
    gpu_uuid: str
    name: str | None = None
    used_memory_bytes: int | None = None
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None


class GpuLink(_Model):
    """One unordered pair of physical GPUs (a < b by index)."""

    gpu_uuid_a: str
    gpu_uuid_b: str
    gpu_index_a: int
    gpu_index_b: int
    level: LinkLevel | None = None
    nvlink_count: int = 0


class CollectionError(_Model):
    probe: str
    message: str
    gpu_index: int | None = None
    gpu_uuid: str | None = None


class DeviceAllocation(_Model):
    """One device the kubelet allocated to one container (PodResources List)."""

    resource_name: str
    device_id: str
    gpu_uuid: str = ""
    namespace: str = ""
    pod: str = ""
    container: str = ""
    claim_name: str = ""

    @property
    def holder(self) -> str:
        return f"{self.namespace}/{self.pod}/{self.container}"


class AllocatableDevices(_Model):
    resource_name: str
    device_ids: tuple[str, ...] = ()


class PodResourcesReport(_Model):
    """The kubelet PodResources API's answer about this node's devices."""

    socket_path: str
    error: str = ""
    allocations: tuple[DeviceAllocation, ...] = ()
    allocatable: tuple[AllocatableDevices, ...] = ()


class HostInventory(_Model):
    host: HostInfo
    gpus: tuple[Gpu, ...] = ()
    processes: tuple[GpuProcess, ...] = ()
    links: tuple[GpuLink, ...] = ()
    collect_time: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    source: CollectionSource
    stale: bool = False
    status_reason: str | None = None
    errors: tuple[CollectionError, ...] = ()
    pod_resources: PodResourcesReport | None = None

    def change_key(self) -> dict:
        """What counts as a change for WatchInventory: everything but time, staleness and telemetry
        that moves every second (temperature, utilization)."""
        return self.model_dump(
            exclude={
                "collect_time": True,
                "stale": True,
                "gpus": {"__all__": {"temperature_celsius", "utilization_gpu_percent", "utilization_memory_percent",
                                     "power_usage_milliwatts"}},
            }
        )


def cuda_total(total_bytes: int | None, reserved_bytes: int | None) -> int | None:
    if total_bytes is None:
        return None
    return total_bytes - (reserved_bytes or 0)


def pair_links(gpus: tuple[Gpu, ...] | list[Gpu], levels: dict[tuple[int, int], tuple[LinkLevel | None, int]]) -> tuple[GpuLink, ...]:
    """Build one GpuLink per pair from ``{(index_a, index_b): (level, nvlink_count)}`` (a < b)."""
    by_index = {g.index: g for g in gpus}
    out = []
    for (a, b), (level, count) in sorted(levels.items()):
        if a in by_index and b in by_index:
            out.append(GpuLink(gpu_uuid_a=by_index[a].uuid, gpu_uuid_b=by_index[b].uuid, gpu_index_a=a,
                               gpu_index_b=b, level=level, nvlink_count=count))
    return tuple(out)


class InventoryHeartbeat(_Model):
    """A WatchInventory heartbeat: the agent and stream are alive, nothing changed."""

    send_time: datetime
    collect_time: datetime | None = None
    stale: bool = False
    status_reason: str | None = None
