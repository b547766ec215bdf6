"""Agent inventory (agent.proto ``HostInventory``) -> ``FleetHost``, and the stream opener for watchers.

The agent reports physical GPUs with NVML v2 memory; the fleet needs placement targets. So a GPU in
MIG mode becomes a ``mig_enabled`` parent plus one target per MIG instance (addressed by its MIG
UUID, TP=1 only), the CUDA-visible total is ``memory_cuda_total_bytes`` (total - reserved), and NVLink
peers come from the pairwise link matrix (level NVLINK or a non-zero bonded link count). A GPU whose
total or free memory is unknown, whose probe failed, or that the agent's XID/ECC monitor marked
unhealthy is kept but marked unhealthy (with the reason): it is listed, never placed on. A GPU (or MIG
instance) the kubelet allocated to a pod (the agent's PodResources report) carries ``allocated_to``
and is never placed on either, even before that pod uses any memory. Labels here are facts derived
from the inventory with GPU Feature Discovery's names and meanings (``nvidia.com/mig.capable`` = the
GPU supports MIG, whether or not MIG is on); the registry adds the labels an agent registered with.

The agent's stream interleaves inventories (on change) and heartbeats (every interval, nothing
changed, and at once when the agent's freshness changes). Freshness is part of every message: a
stale heartbeat makes the host STALE with the agent's reason, and the next fresh heartbeat makes it
READY again, so a host recovers as soon as its agent does (not when its memory next changes).
The host name an agent reports is used only if it is a valid RFC 1123 name (else the address's
host), so a hostile agent cannot forge log lines or labels.

This runs once per inventory report, for every host of the fleet (10,000 agents at 200 reports/s),
and its output is what the planner keeps in memory, so it is written for both: the records are built
with ``model_construct`` (every value already has its type from the protobuf message and is clamped
here; pydantic's validation of the same values cost ~70 % of the conversion), and the strings many
records repeat (GPU UUIDs, shared by a GPU and its NVLink peers' lists; product names; compute
capabilities) are interned, so one string object serves them all.
"""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, AsyncIterator

from planner_service.fleet.models import FleetGpu, FleetHost, HostState
from vllm_planner.transport.address import AddressError, parse_host_port, validate_host
from vllm_planner.v1 import agent_pb2

if TYPE_CHECKING:
    from planner_service.fleet.runtime import FleetSettings


# model_construct's record of which fields were given, one set shared by every record built here
# (pydantic copies it before changing it: model_copy(update=...)); a set per record cost ~400 B.
_GPU_FIELDS_SET = set(FleetGpu.model_fields)
_HOST_FIELDS_SET = set(FleetHost.model_fields)


def _opt(msg, name: str):  # noqa: ANN001, ANN202
    return getattr(msg, name) if msg.HasField(name) else None


def _product_label(name: str) -> str:
    """``nvidia.com/gpu.product`` as GPU feature discovery writes it (spaces -> '-', odd chars dropped)."""
    return re.sub(r"[^A-Za-z0-9\-_.]", "", name.replace(" ", "-"))


def _peers(inv: agent_pb2.HostInventory) -> dict[str, set[str]]:
    peers: dict[str, set[str]] = {}
    intern = sys.intern
    for link in inv.links:
        if link.level == agent_pb2.LINK_LEVEL_NVLINK or link.nvlink_count > 0:
            a, b = intern(link.gpu_uuid_a), intern(link.gpu_uuid_b)
            peers.setdefault(a, set()).add(b)
            peers.setdefault(b, set()).add(a)
    return peers


def _cuda_total(gpu: agent_pb2.Gpu) -> int | None:
    cuda = _opt(gpu, "memory_cuda_total_bytes")
    if cuda is not None:
        return cuda
    total = _opt(gpu, "memory_total_bytes")
    return None if total is None else total - (_opt(gpu, "memory_reserved_bytes") or 0)


def _health_reason(gpu: agent_pb2.Gpu, total: int | None, free: int | None) -> str | None:
    if gpu.health == agent_pb2.GPU_HEALTH_UNHEALTHY:
        return gpu.health_reason or "unhealthy (driver error event)"
    if gpu.HasField("error"):
        return f"probe failed: {gpu.error}"
    if total is None or free is None:
        return "memory unknown"
    return None


def _allocations(inv: agent_pb2.HostInventory) -> dict[str, str]:
    """GPU/MIG UUID -> "namespace/pod/container" from the agent's PodResources report."""
    out: dict[str, str] = {}
    if inv.HasField("pod_resources"):
        for a in inv.pod_resources.allocations:
            if a.gpu_uuid:
                out.setdefault(a.gpu_uuid, f"{a.namespace}/{a.pod}/{a.container}")
    return out


def _gpu_targets(gpu: agent_pb2.Gpu, peers: dict[str, set[str]], allocated: dict[str, str]) -> list[FleetGpu]:
    total = _cuda_total(gpu)
    free = _opt(gpu, "memory_free_bytes")
    cc = _opt(gpu, "compute_capability")
    cc = None if cc is None else sys.intern(cc)
    numa = _opt(gpu, "numa_node")
    reason = _health_reason(gpu, total, free)
    healthy = reason is None
    mig = gpu.mig_mode == agent_pb2.MIG_MODE_ENABLED
    uuid, name = sys.intern(gpu.uuid), sys.intern(gpu.name)
    parent_holder = allocated.get(uuid)
    # model_construct: every value is typed by the message and clamped to the model's bounds here.
    out = [
        FleetGpu.model_construct(
            _GPU_FIELDS_SET,
            uuid=uuid, index=gpu.index, name=name, memory_total_bytes=max(total or 0, 0),
            memory_free_bytes=max(min(free or 0, total or 0), 0), compute_capability=cc, numa_node=numa,
            healthy=healthy, nvlink_peer_uuids=tuple(sorted(peers.get(uuid, ()))), mig_enabled=mig,
            mig_parent_uuid=None, mig_profile=None, allocated_to=parent_holder, health_reason=reason,
            memory_held_bytes=0,
        )
    ]
    for dev in sorted(gpu.mig_devices, key=lambda d: (d.index, d.uuid)) if mig else ():
        mtotal = _opt(dev, "memory_total_bytes")
        mfree = _opt(dev, "memory_free_bytes")
        if mfree is None and mtotal is not None:
            mfree = mtotal - (_opt(dev, "memory_used_bytes") or 0)
        out.append(
            FleetGpu.model_construct(
                _GPU_FIELDS_SET, uuid=sys.intern(dev.uuid), index=gpu.index, name=name, memory_total_bytes=max(mtotal or 0, 0),
                memory_free_bytes=max(min(mfree or 0, mtotal or 0), 0), compute_capability=cc, numa_node=numa,
                healthy=healthy and mtotal is not None, nvlink_peer_uuids=(), mig_enabled=False,
                mig_parent_uuid=uuid, mig_profile=sys.intern(dev.profile) if dev.profile else None,
                allocated_to=allocated.get(dev.uuid) or parent_holder,
                health_reason=reason if reason else (None if mtotal is not None else "memory unknown"),
                memory_held_bytes=0,
            )
        )
    return out


def gfd_labels(physical: list[agent_pb2.Gpu]) -> dict[str, str]:
    """The GPU Feature Discovery labels that follow from the inventory, with GFD's meanings:
    ``mig.capable`` = the GPU supports MIG (NVML reports a MIG mode, enabled or not; a GPU without
    MIG support answers NOT_SUPPORTED), ``gpu.memory`` = total memory in MiB, ``gpu.count``."""
    if not physical:
        return {}
    first = physical[0]
    labels = {
        "nvidia.com/gpu.product": _product_label(first.name),
        "nvidia.com/gpu.count": str(len(physical)),
        "nvidia.com/mig.capable": str(any(g.mig_mode != agent_pb2.MIG_MODE_UNSPECIFIED for g in physical)).lower(),
    }
    total = _opt(first, "memory_total_bytes")
    if total is not None:
        labels["nvidia.com/gpu.memory"] = str(total // (1 << 20))
    return {key: sys.intern(value) for key, value in labels.items()}  # the same few values on every host


def safe_hostname(reported: str, address: str) -> str:
    """The agent's host name if it is a valid RFC 1123 name or IP, else the host part of its address."""
    try:
        return validate_host(reported, "hostname") if reported else parse_host_port(address).host
    except AddressError:
        try:
            return parse_host_port(address).host
        except AddressError:
            return "invalid-hostname"


def host_from_inventory(inv: agent_pb2.HostInventory, address: str, generation: int = 0) -> FleetHost:
    peers = _peers(inv)
    allocated = _allocations(inv)
    gpus = [t for gpu in sorted(inv.gpus, key=lambda g: (g.index, g.uuid)) for t in _gpu_targets(gpu, peers, allocated)]
    stale = inv.stale
    driver = _opt(inv.host, "driver_version")
    return FleetHost.model_construct(  # values typed by the message; the host name checked by safe_hostname
        _HOST_FIELDS_SET,
        host=safe_hostname(inv.host.hostname, address),
        address=address,
        state=HostState.STALE if stale else HostState.READY,
        state_reason=(inv.status_reason or "agent snapshot is stale") if stale else None,
        labels=gfd_labels(list(inv.gpus)),
        gpus=tuple(gpus),
        sources=(),
        agent_instance_id=inv.host.agent_instance_id,
        generation=generation,
        driver_version=None if driver is None else sys.intern(driver),
        last_update_age_seconds=None,
        revision=0,
    )


def with_freshness(host: FleetHost, heartbeat: agent_pb2.InventoryHeartbeat) -> FleetHost:
    """The last inventory's host in the state a heartbeat reports: STALE with the agent's reason, or
    READY again once the agent's snapshot is fresh."""
    if heartbeat.stale:
        reason = heartbeat.status_reason or "agent snapshot is stale"
        if host.state is HostState.STALE and host.state_reason == reason:
            return host
        return host.model_copy(update={"state": HostState.STALE, "state_reason": reason})
    if host.state is HostState.READY:
        return host
    return host.model_copy(update={"state": HostState.READY, "state_reason": None})


class AgentStreams:
    """Opens ``WatchInventory`` on an agent (shared transport: limits, keepalive, TLS, token)."""

    def __init__(self, settings: "FleetSettings") -> None:
        self._settings = settings

    async def open(self, address: str) -> AsyncIterator[FleetHost]:
        from vllm_planner.transport.channel import LEAN_STREAM_OPTIONS, ChannelOptions, create_aio_channel
        from vllm_planner.v1 import agent_pb2_grpc

        fleet = self._settings
        options = ChannelOptions(target=address, tls=fleet.agent_tls, tls_ca_file=fleet.agent_tls_ca_file,
                                 tls_cert_file=fleet.agent_tls_cert_file, tls_key_file=fleet.agent_tls_key_file,
                                 auth_token=fleet.agent_auth_token, extra_options=LEAN_STREAM_OPTIONS)
        async with create_aio_channel(options) as channel:
            stub = agent_pb2_grpc.GpuAgentServiceStub(channel)
            # No deadline on the stream itself: liveness is judged by heartbeats (stale_after_seconds),
            # a dead peer by the channel's keepalive; a refused connection fails at once (no wait_for_ready).
            call = stub.WatchInventory(agent_pb2.WatchInventoryRequest(), metadata=options.auth_metadata() or None,
                                       wait_for_ready=False)
            last: FleetHost | None = None
            generation = 0
            try:
                async for message in call:
                    if message.HasField("inventory"):
                        generation += 1
                        last = host_from_inventory(message.inventory, address, generation)
                        yield last
                    elif last is not None:
                        last = with_freshness(last, message.heartbeat)
                        yield last
            finally:
                call.cancel()

