"""Domain models of the fleet: what the planner knows about each host, and what placement answers.

These are the boundary types of ``planner_service.fleet``: the registry holds ``FleetHost`` values,
the pure placement/packing core takes them and returns ``PlaceResponse`` / ``FleetPlanResponse``,
and the gRPC converters map them to and from ``fleet.proto``. Memory is always in bytes, and
``memory_total_bytes`` is the CUDA-visible total (NVML total minus the driver reservation), which is
what vLLM multiplies by ``gpu_memory_utilization``.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from planner_service.engine.bench_models import LoadOptions, SloTarget
from planner_service.engine.models import MAX_MEMORY_BYTES_PER_GPU, PlanRequest, StrictNumbers


class _Model(StrictNumbers):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class HostState(str, Enum):
    CONNECTING = "connecting"  # discovered, no inventory received yet
    READY = "ready"  # a live stream delivered inventory recently
    STALE = "stale"  # stream broken or heartbeat late: not a placement candidate
    GONE = "gone"  # stale for long: kept only so schedulers see the transition


class DiscoverySource(str, Enum):
    STATIC = "static"
    DNS = "dns"
    REGISTERED = "registered"
    REPORTED = "reported"  # the agent pushes (ReportInventory): never dialled


class FleetGpu(_Model):
    """One placement target: a whole GPU, or one MIG instance (``mig_parent_uuid`` set)."""

    uuid: str
    index: int = Field(description="nvidia-smi index; for MIG instances the parent's index.")
    name: str = Field(description="Product name as NVML reports it, e.g. 'NVIDIA H100 80GB HBM3'.")
    memory_total_bytes: int = Field(ge=0, description="CUDA-visible total (NVML total - reserved).")
    memory_free_bytes: int = Field(ge=0, description="Live free memory (other processes subtracted).")
    compute_capability: str | None = None
    numa_node: int | None = None
    healthy: bool = True
    nvlink_peer_uuids: tuple[str, ...] = ()
    mig_enabled: bool = Field(default=False, description="A MIG-enabled parent: its instances are the targets.")
    mig_parent_uuid: str | None = None
    mig_profile: str | None = None
    allocated_to: str | None = Field(default=None, description="namespace/pod/container the kubelet gave it to.")
    health_reason: str | None = None
    memory_held_bytes: int = Field(default=0, ge=0, description="Held by active reservations.")

    @property
    def is_mig_instance(self) -> bool:
        return self.mig_parent_uuid is not None

    @property
    def placeable(self) -> bool:
        """Healthy, not a MIG-enabled parent, and not allocated to a pod."""
        return self.healthy and not self.mig_enabled and self.allocated_to is None


class FleetHost(_Model):
    """A host as the fleet sees it (soft state, rebuilt from discovery + agent streams)."""

    host: str = Field(description="Hostname the agent reports (Kubernetes node name).")
    address: str = Field(description="HOST:PORT of the agent's gRPC endpoint.")
    state: HostState = HostState.READY
    labels: dict[str, str] = {}
    gpus: tuple[FleetGpu, ...] = ()
    sources: tuple[DiscoverySource, ...] = ()
    agent_instance_id: str = ""
    generation: int = 0
    driver_version: str | None = None
    state_reason: str | None = None
    last_update_age_seconds: float | None = None
    revision: int = Field(default=0, description="Fleet revision of this host's last change (WatchFleet resume).")

    @property
    def gpu_types(self) -> tuple[str, ...]:
        return tuple(sorted({g.name for g in self.gpus}))

    @property
    def max_free_bytes(self) -> int:
        return max((g.memory_free_bytes for g in targets(self)), default=0)


class GpuPinning(str, Enum):
    AUTO = "auto"  # DRA when the exact GPUs matter, else NODE
    NODE = "node"  # nodeSelector + device-plugin resource: the kubelet picks the devices
    DRA = "dra"  # a ResourceClaim selecting exactly the chosen UUIDs


def targets(host: FleetHost) -> list[FleetGpu]:
    """Placement targets of a host: whole GPUs without MIG, plus every MIG instance."""
    return [g for g in host.gpus if not g.mig_enabled]


class HostFilter(_Model):
    """Which hosts a query considers. Empty lists/dicts mean 'no constraint'."""

    gpu_types: tuple[str, ...] = Field(default=(), description="Substring match on the GPU name, case-insensitive.")
    hosts: tuple[str, ...] = ()
    labels: dict[str, str] = {}
    min_free_memory_bytes: int | None = Field(default=None, ge=0, le=MAX_MEMORY_BYTES_PER_GPU)
    states: tuple[HostState, ...] = ()
    gpu_uuids: tuple[str, ...] = ()


class MemorySizing(str, Enum):
    MAX_FREE = "max_free"  # give vLLM what is free (capped by the utilization asked for)
    FIT_WORKLOAD = "fit_workload"  # the smallest budget whose KV cache holds the workload


class Deployment(_Model):
    """One model to place: a plan request (model, workload, engine settings) plus fleet constraints."""

    name: str = Field(default="", description="Label of the deployment in fleet plans (defaults to the model).")
    plan: PlanRequest
    replicas: int = Field(default=1, ge=1, le=10_000)
    max_ttft_seconds: float | None = Field(default=None, gt=0)
    max_itl_seconds: float | None = Field(default=None, gt=0)
    filter: HostFilter = HostFilter()
    sizing: MemorySizing | None = Field(default=None, description="None: MAX_FREE for Place, FIT_WORKLOAD for PlanFleet.")
    gpu_pinning: GpuPinning | None = Field(default=None, description="How Kubernetes manifests pin the GPUs (None: AUTO).")
    strict: bool = Field(default=False, description="Refuse placements that change what was asked (fleet/changes.py).")
    # Instead of ``replicas``: the total rate to serve within latency objectives. PlanFleet then runs a
    # capacity plan over the fleet's GPU types (engine/capacity.py) and places that many replicas of its
    # best configuration (fleet/slo_sizing.py).
    request_rate: float | None = Field(default=None, gt=0, le=1e6, description="req/s to serve; sizes the replicas.")
    slos: tuple[SloTarget, ...] = Field(default=(), description="Latency objectives for request_rate.")
    slo_percentile: float = Field(default=99.0, gt=0, lt=100)
    load: LoadOptions | None = Field(default=None, description="Traffic shape for sizing; None = the plan's workload.")

    @model_validator(mode="after")
    def _rate_needs_slos(self) -> "Deployment":
        if self.request_rate is not None and not self.slos:
            raise ValueError("slos: request_rate needs at least one SLO (ttft, tpot or e2el in ms)")
        if self.slos and self.request_rate is None:
            raise ValueError("request_rate: SLOs size replicas for a request rate; give request_rate")
        if len({s.metric for s in self.slos}) != len(self.slos):
            raise ValueError("slos: each metric at most once")
        return self

    @property
    def display_name(self) -> str:
        return self.name or self.plan.model.model


class RejectReason(str, Enum):
    STATE = "state"
    FILTERED = "filtered"
    NO_FP8 = "no_fp8"
    TP_IMPOSSIBLE = "tp_impossible"
    MIG_TOO_SMALL = "mig_too_small"
    INSUFFICIENT_FREE_MEMORY = "insufficient_free_memory"
    DOES_NOT_FIT = "does_not_fit"
    SLO = "slo"
    INVALID = "invalid"
    BUDGET_EXHAUSTED = "budget_exhausted"
    UNHEALTHY = "unhealthy"
    ALLOCATED = "allocated"
    WOULD_CHANGE_REQUEST = "would_change_request"


class Rejection(_Model):
    host: str
    reason: RejectReason
    message: str


class PlacementArtifacts(_Model):
    cuda_visible_devices: str
    serve_command: str
    docker_run: str
    kubernetes_node_selector: dict[str, str]
    kubernetes: str = ""
    kubernetes_name: str = ""
    kubernetes_gpu_pinning: GpuPinning | None = None


class Placement(_Model):
    """One TP group on one host, with the twin's verdict for exactly those GPUs."""

    host: str
    address: str
    gpu_uuids: tuple[str, ...]
    gpu_indices: tuple[int, ...]
    gpu_name: str
    mig: bool = False
    tensor_parallel_size: int
    interconnect: str = Field(description="nvlink | pcie | single")
    numa_node: int | None = None
    gpu_memory_utilization: float
    memory_total_bytes: int
    memory_free_bytes: int = Field(description="Smallest live free memory in the group.")
    requested_memory_bytes: int = Field(description="ceil(total x utilization): what vLLM claims per GPU.")
    reserved_bytes: int = Field(description="What this placement takes out of each GPU's free memory.")
    fits: bool
    kv_cache_tokens: int
    max_concurrency: float
    max_model_len: int
    kv_cache_bytes: int
    weights_bytes: int
    ttft_seconds: float | None = None
    itl_seconds: float | None = None
    decode_tokens_per_second: float | None = None
    warnings: tuple[str, ...] = ()
    artifacts: PlacementArtifacts | None = None
    kv_cache_dtype: str = Field(default="", description="The --kv-cache-dtype this placement runs.")
    adjustments: tuple[str, ...] = Field(default=(), description="Changes to what the deployment asked (one sentence each).")


class ReservationState(str, Enum):
    ACTIVE = "active"
    RELEASED = "released"
    EXPIRED = "expired"
    CONSUMED = "consumed"


class Hold(_Model):
    """GPU memory one placement holds on one GPU."""

    host: str
    address: str
    gpu_uuid: str
    memory_held_bytes: int
    consumed: bool = False


class Reservation(_Model):
    reservation_id: str
    deployment: str
    expire_time: datetime
    expires_in_seconds: float
    state: ReservationState
    holds: tuple[Hold, ...] = ()


class PlaceResponse(_Model):
    deployment: str
    placements: tuple[Placement, ...] = Field(description="Ranked, best first; at most max_results.")
    selected: tuple[Placement, ...] = Field(description="The `replicas` placements chosen together, budget-checked.")
    rejections: tuple[Rejection, ...] = Field(default=(), description="The rejected hosts that came closest, closest first.")
    unplaced_replicas: int = 0
    hosts_considered: int = 0
    rejection_counts: dict[RejectReason, int] = Field(default={}, description="Rejected hosts per reason.")
    reservation: Reservation | None = None


class FleetPlanRequest(_Model):
    deployments: tuple[Deployment, ...]
    max_results: int = Field(default=10, ge=1, le=1000)


class Assignment(_Model):
    deployment: str
    replica: int
    placement: Placement


class Unplaced(_Model):
    deployment: str
    replica: int
    reason: str


class GpuBudget(_Model):
    host: str
    uuid: str
    memory_free_bytes: int
    reserved_bytes: int
    remaining_bytes: int


class DeploymentSizing(_Model):
    """How PlanFleet sized a deployment given as request_rate + SLOs (the capacity plan's best option)."""

    deployment: str
    request_rate: float
    replicas: int
    gpu: str
    tensor_parallel_size: int
    quantization: str | None = None
    kv_cache_dtype: str
    max_num_seqs: int
    max_rate_per_replica: float
    predicted: dict[str, float] = {}
    reason: str = Field(default="", description="Why no configuration was found (replicas 0), else empty.")


class FleetPlanResponse(_Model):
    assignments: tuple[Assignment, ...]
    unplaced: tuple[Unplaced, ...] = ()
    budgets: tuple[GpuBudget, ...] = ()
    sizings: tuple[DeploymentSizing, ...] = ()
    reservation: Reservation | None = None
