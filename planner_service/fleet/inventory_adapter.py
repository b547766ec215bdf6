"""Agent inventory (agent.proto ``HostInventory``) -> ``FleetHost``, and the stream opener for watchers.

The agent reports physical GPUs with NVML v2 memory; the fleet needs placement targets. So a GPU in
MIG mode becomes a ``mig_enabled`` parent plus one target per MIG instance (addressed by its MIG
UUID, TP=1 only), the CUDA-visible total is ``memory_cuda_total_bytes`` (total - reserved), and NVLink
peers come from the pairwise link matrix (level NVLINK or a non-zero bonded link count). A GPU whose
total or free memory is unknown, or whose probe failed, is kept but marked unhealthy: it is listed,
never placed on. Labels here are GFD-style facts derived from the inventory; the registry adds the
labels an agent sent with its registration.

The agent's stream interleaves inventories (on change) and heartbeats (every interval, nothing
changed); a heartbeat re-yields the last inventory so the registry sees the host as alive, and an
agent that says its own snapshot is stale (hung driver) is reported STALE with that reason.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, AsyncIterator

from planner_service.fleet.models import FleetGpu, FleetHost, HostState
from vllm_planner.v1 import agent_pb2

if TYPE_CHECKING:
    from planner_service.fleet.runtime import FleetSettings


def _opt(msg, name: str):  # noqa: ANN001, ANN202
    return getattr(msg, name) if msg.HasField(name) else None


def _product_label(name: str) -> str:
    """``nvidia.com/gpu.product`` as GPU feature discovery writes it (spaces -> '-', odd chars dropped)."""
    return re.sub(r"[^A-Za-z0-9\-_.]", "", name.replace(" ", "-"))


def _peers(inv: agent_pb2.HostInventory) -> dict[str, set[str]]:
    peers: dict[str, set[str]] = {}
    for link in inv.links:
        if link.level == agent_pb2.LINK_LEVEL_NVLINK or link.nvlink_count > 0:
            peers.setdefault(link.gpu_uuid_a, set()).add(link.gpu_uuid_b)
            peers.setdefault(link.gpu_uuid_b, set()).add(link.gpu_uuid_a)
    return peers


def _cuda_total(gpu: agent_pb2.Gpu) -> int | None:
    cuda = _opt(gpu, "memory_cuda_total_bytes")
    if cuda is not None:
        return cuda
    total = _opt(gpu, "memory_total_bytes")
    return None if total is None else total - (_opt(gpu, "memory_reserved_bytes") or 0)


def _gpu_targets(gpu: agent_pb2.Gpu, peers: dict[str, set[str]]) -> list[FleetGpu]:
    total = _cuda_total(gpu)
    free = _opt(gpu, "memory_free_bytes")
    cc = _opt(gpu, "compute_capability")
    numa = _opt(gpu, "numa_node")
    healthy = not gpu.HasField("error") and total is not None and free is not None
    mig = gpu.mig_mode == agent_pb2.MIG_MODE_ENABLED
    out = [
        FleetGpu(
            uuid=gpu.uuid, index=gpu.index, name=gpu.name, memory_total_bytes=max(total or 0, 0),
            memory_free_bytes=max(min(free or 0, total or 0), 0), compute_capability=cc, numa_node=numa,
            healthy=healthy, nvlink_peer_uuids=tuple(sorted(peers.get(gpu.uuid, ()))), mig_enabled=mig,
        )
    ]
    for dev in sorted(gpu.mig_devices, key=lambda d: (d.index, d.uuid)) if mig else ():
        mtotal = _opt(dev, "memory_total_bytes")
        mfree = _opt(dev, "memory_free_bytes")
        if mfree is None and mtotal is not None:
            mfree = mtotal - (_opt(dev, "memory_used_bytes") or 0)
        out.append(
            FleetGpu(
                uuid=dev.uuid, index=gpu.index, name=gpu.name, memory_total_bytes=max(mtotal or 0, 0),
                memory_free_bytes=max(min(mfree or 0, mtotal or 0), 0), compute_capability=cc, numa_node=numa,
                healthy=healthy and mtotal is not None, mig_parent_uuid=gpu.uuid, mig_profile=dev.profile or None,
            )
        )
    return out


def host_from_inventory(inv: agent_pb2.HostInventory, address: str, generation: int = 0) -> FleetHost:
    peers = _peers(inv)
    gpus = [t for gpu in sorted(inv.gpus, key=lambda g: (g.index, g.uuid)) for t in _gpu_targets(gpu, peers)]
    labels: dict[str, str] = {}
    physical = [g for g in inv.gpus]
    if physical:
        labels["nvidia.com/gpu.product"] = _product_label(physical[0].name)
        labels["nvidia.com/gpu.count"] = str(len(physical))
        labels["nvidia.com/mig.capable"] = str(any(g.mig_mode == agent_pb2.MIG_MODE_ENABLED for g in physical)).lower()
    stale = inv.stale
    return FleetHost(
        host=inv.host.hostname or address,
        address=address,
        state=HostState.STALE if stale else HostState.READY,
        state_reason=(inv.status_reason or "agent snapshot is stale") if stale else None,
        labels=labels,
        gpus=tuple(gpus),
        agent_instance_id=inv.host.agent_version,
        generation=generation,
        driver_version=_opt(inv.host, "driver_version"),
    )


class AgentStreams:
    """Opens ``WatchInventory`` on an agent (shared transport: limits, keepalive, TLS, token)."""

    def __init__(self, settings: "FleetSettings") -> None:
        self._settings = settings

    async def open(self, address: str) -> AsyncIterator[FleetHost]:
        from vllm_planner.transport.channel import ChannelOptions, create_aio_channel
        from vllm_planner.v1 import agent_pb2_grpc

        fleet = self._settings
        options = ChannelOptions(target=address, tls=fleet.agent_tls, tls_ca_file=fleet.agent_tls_ca_file,
                                 tls_cert_file=fleet.agent_tls_cert_file, tls_key_file=fleet.agent_tls_key_file,
                                 auth_token=fleet.agent_auth_token)
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
                        hb = message.heartbeat
                        if hb.stale and last.state is not HostState.STALE:
                            last = last.model_copy(update={"state": HostState.STALE, "state_reason": "agent snapshot is stale"})
                        yield last
            finally:
                call.cancel()

