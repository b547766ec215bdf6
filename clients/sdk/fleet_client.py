"""Clients of ``vllm_planner.v1.FleetService``: ``FleetClient`` (sync) and ``AsyncFleetClient``.

They return the pydantic models of ``planner_service.fleet.models`` (``FleetHost``, ``PlaceResponse``,
``FleetPlanResponse``), never protobuf, and raise ``clients.sdk.errors`` exceptions. Every unary call
has a deadline; every method is idempotent (registration is a lease renewal), so the channel retries
UNAVAILABLE. ``watch_fleet`` yields ``FleetEvent``s until the caller stops iterating.

    with FleetClient("planner.internal:50051") as fleet:
        answer = fleet.place(Deployment(plan=PlanRequest(model=ModelOptions(model="Qwen/Qwen3-8B"))))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator, Iterator

from clients.sdk._base import AsyncClient, SyncClient
from planner_service.fleet import converters as conv
from planner_service.fleet.models import Deployment, FleetHost, FleetPlanResponse, HostFilter, PlaceResponse
from vllm_planner.v1 import fleet_pb2 as pb
from vllm_planner.v1 import fleet_pb2_grpc

SERVICE_FULL_NAME = pb.DESCRIPTOR.services_by_name["FleetService"].full_name

DEFAULT_TIMEOUTS_SECONDS: dict[str, float] = {
    "RegisterAgent": 5.0,
    "ListHosts": 10.0,
    "GetHost": 10.0,
    "Place": 60.0,  # may resolve model metadata first
    "PlanFleet": 120.0,
}


@dataclass(frozen=True)
class FleetEvent:
    """One ``WatchFleet`` message: a host's new state (``initial`` for the opening snapshot)."""

    host: FleetHost
    initial: bool = False
    removed: bool = False


@dataclass(frozen=True)
class Registration:
    heartbeat_interval_seconds: float
    lease_seconds: float
    planner_instance_id: str


def _place_request(deployment: Deployment, max_results: int) -> pb.PlaceRequest:
    return pb.PlaceRequest(deployment=conv.deployment_to_proto(deployment), max_results=max_results)


def _register_request(address: str, host: str, agent_instance_id: str, labels: dict[str, str] | None) -> pb.RegisterAgentRequest:
    request = pb.RegisterAgentRequest(address=address, host=host, agent_instance_id=agent_instance_id)
    for key in sorted(labels or {}):
        request.labels.add(key=key, value=labels[key])
    return request


def _event(msg: pb.WatchFleetResponse) -> FleetEvent:
    return FleetEvent(conv.host_from_proto(msg.host), initial=msg.initial, removed=msg.removed)


class _Fleet:
    stub_class = fleet_pb2_grpc.FleetServiceStub
    service_name = SERVICE_FULL_NAME
    retry_methods = (SERVICE_FULL_NAME,)
    default_timeouts_seconds = DEFAULT_TIMEOUTS_SECONDS


class FleetClient(_Fleet, SyncClient):
    """Synchronous client; thread-safe. Close it (or use ``with``)."""

    def register_agent(self, address: str, host: str = "", agent_instance_id: str = "", labels: dict[str, str] | None = None,
                       *, timeout_seconds: float | None = None) -> Registration:
        msg = self._call("RegisterAgent", _register_request(address, host, agent_instance_id, labels), timeout_seconds)
        return Registration(msg.heartbeat_interval_seconds, msg.lease_seconds, msg.planner_instance_id)

    def list_hosts(self, flt: HostFilter | None = None, *, timeout_seconds: float | None = None) -> list[FleetHost]:
        request = pb.ListHostsRequest(filter=conv.filter_to_proto(flt or HostFilter()))
        return [conv.host_from_proto(h) for h in self._call("ListHosts", request, timeout_seconds).hosts]

    def get_host(self, host: str, *, timeout_seconds: float | None = None) -> FleetHost:
        return conv.host_from_proto(self._call("GetHost", pb.GetHostRequest(host=host), timeout_seconds).host)

    def place(self, deployment: Deployment, *, max_results: int = 10, timeout_seconds: float | None = None) -> PlaceResponse:
        return conv.place_response_from_proto(self._call("Place", _place_request(deployment, max_results), timeout_seconds))

    def plan_fleet(self, deployments: list[Deployment], *, timeout_seconds: float | None = None) -> FleetPlanResponse:
        request = pb.PlanFleetRequest(deployments=[conv.deployment_to_proto(d) for d in deployments])
        return conv.fleet_plan_from_proto(self._call("PlanFleet", request, timeout_seconds))

    def watch_fleet(self, flt: HostFilter | None = None, *, timeout_seconds: float | None = None) -> Iterator[FleetEvent]:
        """Initial snapshot, then changes; ``timeout_seconds`` bounds the whole stream (None = open-ended)."""
        request = pb.WatchFleetRequest(filter=conv.filter_to_proto(flt or HostFilter()))
        return self._stream("WatchFleet", request, timeout_seconds, _event)


class AsyncFleetClient(_Fleet, AsyncClient):
    """asyncio client (``grpc.aio``); create it inside the running loop, ``await close()``."""

    async def register_agent(self, address: str, host: str = "", agent_instance_id: str = "", labels: dict[str, str] | None = None,
                             *, timeout_seconds: float | None = None) -> Registration:
        msg = await self._call("RegisterAgent", _register_request(address, host, agent_instance_id, labels), timeout_seconds)
        return Registration(msg.heartbeat_interval_seconds, msg.lease_seconds, msg.planner_instance_id)

    async def list_hosts(self, flt: HostFilter | None = None, *, timeout_seconds: float | None = None) -> list[FleetHost]:
        request = pb.ListHostsRequest(filter=conv.filter_to_proto(flt or HostFilter()))
        return [conv.host_from_proto(h) for h in (await self._call("ListHosts", request, timeout_seconds)).hosts]

    async def get_host(self, host: str, *, timeout_seconds: float | None = None) -> FleetHost:
        return conv.host_from_proto((await self._call("GetHost", pb.GetHostRequest(host=host), timeout_seconds)).host)

    async def place(self, deployment: Deployment, *, max_results: int = 10, timeout_seconds: float | None = None) -> PlaceResponse:
        return conv.place_response_from_proto(await self._call("Place", _place_request(deployment, max_results), timeout_seconds))

    async def plan_fleet(self, deployments: list[Deployment], *, timeout_seconds: float | None = None) -> FleetPlanResponse:
        request = pb.PlanFleetRequest(deployments=[conv.deployment_to_proto(d) for d in deployments])
        return conv.fleet_plan_from_proto(await self._call("PlanFleet", request, timeout_seconds))

    def watch_fleet(self, flt: HostFilter | None = None, *, timeout_seconds: float | None = None) -> AsyncIterator[FleetEvent]:
        request = pb.WatchFleetRequest(filter=conv.filter_to_proto(flt or HostFilter()))
        return self._stream("WatchFleet", request, timeout_seconds, _event)
