"""Clients of ``vllm_planner.v1.FleetService``: ``FleetClient`` (sync) and ``AsyncFleetClient``.

They return the pydantic models of ``planner_service.fleet.models`` (``FleetHost``, ``PlaceResponse``,
``FleetPlanResponse``), never protobuf, and raise ``clients.sdk.errors`` exceptions. Every unary call
has a deadline; every method is idempotent (registration is a lease renewal), so the channel retries
UNAVAILABLE. ``watch_fleet`` yields ``FleetEvent``s until the caller stops iterating (pass the last
event's ``resume_token`` to a new ``watch_fleet`` to continue where it left off). ``list_hosts``
follows the pages of ``ListHosts`` (``list_hosts_page`` reads one). ``place(..., reserve_seconds=N)``
holds the selected GPUs' memory; ``release_reservation`` ends the hold early.

    with FleetClient("planner.internal:50051") as fleet:
        answer = fleet.place(Deployment(plan=PlanRequest(model=ModelOptions(model="Qwen/Qwen3-8B"))))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator, Iterator

from clients.sdk._base import AsyncClient, SyncClient
from planner_service.fleet import converters as conv
from planner_service.fleet.models import Deployment, FleetHost, FleetPlanResponse, HostFilter, PlaceResponse, Reservation
from vllm_planner.v1 import agent_pb2
from vllm_planner.v1 import fleet_pb2 as pb
from vllm_planner.v1 import fleet_pb2_grpc

SERVICE_FULL_NAME = pb.DESCRIPTOR.services_by_name["FleetService"].full_name

DEFAULT_TIMEOUTS_SECONDS: dict[str, float] = {
    "RegisterAgent": 5.0,
    "ReportInventory": 5.0,
    "ListHosts": 10.0,
    "GetHost": 10.0,
    "Place": 60.0,  # may resolve model metadata first
    "PlanFleet": 600.0,  # deployments given as request_rate + SLOs run a capacity search first
    "ReleaseReservation": 10.0,
    "ListReservations": 10.0,
}


@dataclass(frozen=True)
class FleetEvent:
    """One host of a ``WatchFleet`` message: its new state (``initial`` for the opening snapshot).

    ``resume_token`` continues a later stream after this event; ``snapshot_complete`` marks the last
    event of the opening snapshot (or of the catch-up after a resume), ``reset`` the first event of a
    full snapshot sent instead of a catch-up. ``host`` is None only on a bare marker (an empty fleet).
    """

    host: FleetHost | None
    initial: bool = False
    removed: bool = False
    resume_token: str = ""
    snapshot_complete: bool = False
    reset: bool = False


@dataclass(frozen=True)
class HostPage:
    hosts: list[FleetHost]
    next_page_token: str
    total_size: int


@dataclass(frozen=True)
class Registration:
    heartbeat_interval_seconds: float
    lease_seconds: float
    planner_instance_id: str


@dataclass(frozen=True)
class ReportAnswer:
    """The planner's answer to one ``ReportInventory``."""

    heartbeat_interval_seconds: float
    lease_seconds: float
    planner_instance_id: str
    inventory_wanted: bool


def _report_request(address: str, host: str, agent_instance_id: str, labels: dict[str, str] | None,
                    inventory: agent_pb2.HostInventory | None, heartbeat: agent_pb2.InventoryHeartbeat | None,
                    inventory_generation: int) -> pb.ReportInventoryRequest:
    request = pb.ReportInventoryRequest(address=address, host=host, agent_instance_id=agent_instance_id,
                                        inventory_generation=inventory_generation)
    for key in sorted(labels or {}):
        request.labels.add(key=key, value=labels[key])
    if inventory is not None:
        request.inventory.CopyFrom(inventory)
    elif heartbeat is not None:
        request.heartbeat.CopyFrom(heartbeat)
    return request


def _report_answer(msg: pb.ReportInventoryResponse) -> ReportAnswer:
    return ReportAnswer(msg.heartbeat_interval_seconds, msg.lease_seconds, msg.planner_instance_id, msg.inventory_wanted)


def _place_request(deployment: Deployment, max_results: int, reserve_seconds: float = 0.0) -> pb.PlaceRequest:
    return pb.PlaceRequest(deployment=conv.deployment_to_proto(deployment), max_results=max_results,
                           reserve_seconds=reserve_seconds)


def _plan_request(deployments: list[Deployment], reserve_seconds: float) -> pb.PlanFleetRequest:
    return pb.PlanFleetRequest(deployments=[conv.deployment_to_proto(d) for d in deployments], reserve_seconds=reserve_seconds)


def _hosts_request(flt: HostFilter | None, page_size: int, page_token: str) -> pb.ListHostsRequest:
    return pb.ListHostsRequest(filter=conv.filter_to_proto(flt or HostFilter()), page_size=page_size, page_token=page_token)


def _page(msg: pb.ListHostsResponse) -> HostPage:
    return HostPage([conv.host_from_proto(h) for h in msg.hosts], msg.next_page_token, msg.total_size)


def _watch_request(flt: HostFilter | None, page_size: int, resume_token: str) -> pb.WatchFleetRequest:
    return pb.WatchFleetRequest(filter=conv.filter_to_proto(flt or HostFilter()), page_size=page_size, resume_token=resume_token)


def _register_request(address: str, host: str, agent_instance_id: str, labels: dict[str, str] | None) -> pb.RegisterAgentRequest:
    request = pb.RegisterAgentRequest(address=address, host=host, agent_instance_id=agent_instance_id)
    for key in sorted(labels or {}):
        request.labels.add(key=key, value=labels[key])
    return request


def _events(msg: pb.WatchFleetResponse) -> list[FleetEvent]:
    """A message -> one event per host (a page holds several; a bare marker none)."""
    hosts = list(msg.hosts) or ([msg.host] if msg.HasField("host") else [])
    common = dict(initial=msg.initial, removed=msg.removed, resume_token=msg.resume_token)
    if not hosts:
        return [FleetEvent(None, snapshot_complete=msg.snapshot_complete, reset=msg.reset, **common)]
    return [
        FleetEvent(conv.host_from_proto(h), snapshot_complete=msg.snapshot_complete and i == len(hosts) - 1,
                   reset=msg.reset and i == 0, **common)
        for i, h in enumerate(hosts)
    ]


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

    def report_inventory(self, address: str, host: str = "", agent_instance_id: str = "", labels: dict[str, str] | None = None,
                         *, inventory: agent_pb2.HostInventory | None = None, heartbeat: agent_pb2.InventoryHeartbeat | None = None,
                         inventory_generation: int = 0, timeout_seconds: float | None = None) -> ReportAnswer:
        """Push one inventory or heartbeat (what ``gpu-agent --register-with`` does)."""
        request = _report_request(address, host, agent_instance_id, labels, inventory, heartbeat, inventory_generation)
        return _report_answer(self._call("ReportInventory", request, timeout_seconds))

    def list_hosts(self, flt: HostFilter | None = None, *, page_size: int = 0, timeout_seconds: float | None = None) -> list[FleetHost]:
        """Every matching host, following the pages."""
        hosts: list[FleetHost] = []
        token = ""
        while True:
            page = self.list_hosts_page(flt, page_size=page_size, page_token=token, timeout_seconds=timeout_seconds)
            hosts += page.hosts
            token = page.next_page_token
            if not token:
                return hosts

    def list_hosts_page(self, flt: HostFilter | None = None, *, page_size: int = 0, page_token: str = "",
                        timeout_seconds: float | None = None) -> HostPage:
        return _page(self._call("ListHosts", _hosts_request(flt, page_size, page_token), timeout_seconds))

    def get_host(self, host: str, *, timeout_seconds: float | None = None) -> FleetHost:
        return conv.host_from_proto(self._call("GetHost", pb.GetHostRequest(host=host), timeout_seconds).host)

    def place(self, deployment: Deployment, *, max_results: int = 10, reserve_seconds: float = 0.0,
              timeout_seconds: float | None = None) -> PlaceResponse:
        request = _place_request(deployment, max_results, reserve_seconds)
        return conv.place_response_from_proto(self._call("Place", request, timeout_seconds))

    def plan_fleet(self, deployments: list[Deployment], *, reserve_seconds: float = 0.0,
                   timeout_seconds: float | None = None) -> FleetPlanResponse:
        return conv.fleet_plan_from_proto(self._call("PlanFleet", _plan_request(deployments, reserve_seconds), timeout_seconds))

    def release_reservation(self, reservation_id: str, *, timeout_seconds: float | None = None) -> Reservation:
        msg = self._call("ReleaseReservation", pb.ReleaseReservationRequest(reservation_id=reservation_id), timeout_seconds)
        return conv.reservation_from_proto(msg.reservation)

    def list_reservations(self, *, timeout_seconds: float | None = None) -> list[Reservation]:
        out: list[Reservation] = []
        token = ""
        while True:
            msg = self._call("ListReservations", pb.ListReservationsRequest(page_token=token), timeout_seconds)
            out += [conv.reservation_from_proto(r) for r in msg.reservations]
            token = msg.next_page_token
            if not token:
                return out

    def watch_fleet(self, flt: HostFilter | None = None, *, page_size: int = 0, resume_token: str = "",
                    timeout_seconds: float | None = None) -> Iterator[FleetEvent]:
        """Initial snapshot (or the changes since ``resume_token``), then changes; ``timeout_seconds``
        bounds the whole stream (None = open-ended)."""
        messages = self._stream("WatchFleet", _watch_request(flt, page_size, resume_token), timeout_seconds, _events)
        return (event for batch in messages for event in batch)


class AsyncFleetClient(_Fleet, AsyncClient):
    """asyncio client (``grpc.aio``); create it inside the running loop, ``await close()``."""

    async def register_agent(self, address: str, host: str = "", agent_instance_id: str = "", labels: dict[str, str] | None = None,
                             *, timeout_seconds: float | None = None) -> Registration:
        msg = await self._call("RegisterAgent", _register_request(address, host, agent_instance_id, labels), timeout_seconds)
        return Registration(msg.heartbeat_interval_seconds, msg.lease_seconds, msg.planner_instance_id)

    async def report_inventory(self, address: str, host: str = "", agent_instance_id: str = "", labels: dict[str, str] | None = None,
                               *, inventory: agent_pb2.HostInventory | None = None, heartbeat: agent_pb2.InventoryHeartbeat | None = None,
                               inventory_generation: int = 0, timeout_seconds: float | None = None) -> ReportAnswer:
        """Push one inventory or heartbeat (what ``gpu-agent --register-with`` does)."""
        request = _report_request(address, host, agent_instance_id, labels, inventory, heartbeat, inventory_generation)
        return _report_answer(await self._call("ReportInventory", request, timeout_seconds))

    async def list_hosts(self, flt: HostFilter | None = None, *, page_size: int = 0, timeout_seconds: float | None = None) -> list[FleetHost]:
        """Every matching host, following the pages."""
        hosts: list[FleetHost] = []
        token = ""
        while True:
            page = _page(await self._call("ListHosts", _hosts_request(flt, page_size, token), timeout_seconds))
            hosts += page.hosts
            token = page.next_page_token
            if not token:
                return hosts

    async def get_host(self, host: str, *, timeout_seconds: float | None = None) -> FleetHost:
        return conv.host_from_proto((await self._call("GetHost", pb.GetHostRequest(host=host), timeout_seconds)).host)

    async def place(self, deployment: Deployment, *, max_results: int = 10, reserve_seconds: float = 0.0,
                    timeout_seconds: float | None = None) -> PlaceResponse:
        request = _place_request(deployment, max_results, reserve_seconds)
        return conv.place_response_from_proto(await self._call("Place", request, timeout_seconds))

    async def plan_fleet(self, deployments: list[Deployment], *, reserve_seconds: float = 0.0,
                         timeout_seconds: float | None = None) -> FleetPlanResponse:
        return conv.fleet_plan_from_proto(await self._call("PlanFleet", _plan_request(deployments, reserve_seconds), timeout_seconds))

    async def release_reservation(self, reservation_id: str, *, timeout_seconds: float | None = None) -> Reservation:
        msg = await self._call("ReleaseReservation", pb.ReleaseReservationRequest(reservation_id=reservation_id), timeout_seconds)
        return conv.reservation_from_proto(msg.reservation)

    async def watch_fleet(self, flt: HostFilter | None = None, *, page_size: int = 0, resume_token: str = "",
                          timeout_seconds: float | None = None) -> AsyncIterator[FleetEvent]:
        async for batch in self._stream("WatchFleet", _watch_request(flt, page_size, resume_token), timeout_seconds, _events):
            for event in batch:
                yield event
