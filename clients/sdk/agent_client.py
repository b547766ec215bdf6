"""Clients of ``vllm_planner.v1.GpuAgentService``: ``AgentClient`` (sync) and ``AsyncAgentClient``.

Both return the agent's pydantic domain objects (``gpu_agent.inventory.HostInventory``, and
``InventoryHeartbeat`` from watch streams), never protobuf, and raise ``clients.sdk.errors``
exceptions (mapped in ``from_rpc_error``). GetInventory has a default deadline and is retried on
UNAVAILABLE (it is a read); WatchInventory is long-lived, so it has no deadline unless given one.

    with AgentClient("gpu-host-1:50061") as agent:
        inventory = agent.get_inventory()
        for event in agent.watch_inventory():   # HostInventory on start and on change, else heartbeats
            ...
"""

from __future__ import annotations

from typing import AsyncIterator, Iterator

from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.sdk._base import AsyncClient, SyncClient
from gpu_agent.convert import inventory_from_proto, watch_event_from_proto
from gpu_agent.inventory import HostInventory, InventoryHeartbeat
from vllm_planner.v1 import agent_pb2, agent_pb2_grpc

SERVICE_FULL_NAME = agent_pb2.DESCRIPTOR.services_by_name["GpuAgentService"].full_name
DEFAULT_TIMEOUT_SECONDS = 10.0

InventoryEvent = HostInventory | InventoryHeartbeat


class _Agent:
    stub_class = agent_pb2_grpc.GpuAgentServiceStub
    service_name = SERVICE_FULL_NAME
    # Only the read is retried; WatchInventory is a long-lived stream the caller restarts.
    retry_methods = (f"{SERVICE_FULL_NAME}/GetInventory",)
    default_timeouts_seconds = {"GetInventory": DEFAULT_TIMEOUT_SECONDS, "Check": DEFAULT_TIMEOUT_SECONDS}
    _timeout_seconds: float | None

    @property
    def timeout_seconds(self) -> float:
        """Deadline of ``get_inventory`` and ``is_ready`` when the call gives none."""
        return self._timeout_seconds or DEFAULT_TIMEOUT_SECONDS

    def _health_request(self) -> tuple[health_pb2_grpc.HealthStub, health_pb2.HealthCheckRequest]:
        return health_pb2_grpc.HealthStub(self._channel), health_pb2.HealthCheckRequest(service=SERVICE_FULL_NAME)


def _serving(response: health_pb2.HealthCheckResponse) -> bool:
    return response.status == health_pb2.HealthCheckResponse.SERVING


class AgentClient(_Agent, SyncClient):
    def get_inventory(self, *, timeout_seconds: float | None = None) -> HostInventory:
        response = self._call("GetInventory", agent_pb2.GetInventoryRequest(), timeout_seconds)
        return inventory_from_proto(response.inventory)

    def watch_inventory(self, *, timeout_seconds: float | None = None) -> Iterator[InventoryEvent]:
        """Yield HostInventory on start and on every change, InventoryHeartbeat in between.
        Cancel by closing the generator (or the client)."""
        return self._stream("WatchInventory", agent_pb2.WatchInventoryRequest(), timeout_seconds, watch_event_from_proto)

    def is_ready(self, *, timeout_seconds: float | None = None) -> bool:
        """True when the agent reports its snapshot fresh (health of the agent service)."""
        stub, request = self._health_request()
        return _serving(self._call("Check", request, timeout_seconds, stub=stub))


class AsyncAgentClient(_Agent, AsyncClient):
    async def get_inventory(self, *, timeout_seconds: float | None = None) -> HostInventory:
        response = await self._call("GetInventory", agent_pb2.GetInventoryRequest(), timeout_seconds)
        return inventory_from_proto(response.inventory)

    def watch_inventory(self, *, timeout_seconds: float | None = None) -> AsyncIterator[InventoryEvent]:
        return self._stream("WatchInventory", agent_pb2.WatchInventoryRequest(), timeout_seconds, watch_event_from_proto)

    async def is_ready(self, *, timeout_seconds: float | None = None) -> bool:
        stub, request = self._health_request()
        return _serving(await self._call("Check", request, timeout_seconds, stub=stub))
