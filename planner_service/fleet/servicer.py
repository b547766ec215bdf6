"""``FleetService`` over gRPC: a thin adapter from protos to the registry and the pure core.

Unary errors are raised as domain errors / pydantic ``ValidationError`` and turned into statuses by
the planner's ``ErrorMappingInterceptor``. Placement runs in a worker thread on a snapshot of the
registry taken on the event loop, so a long plan never stalls the agent streams.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import TYPE_CHECKING, AsyncIterator

import grpc

from planner_service.fleet import converters as conv
from planner_service.fleet.discovery import join_host_port, split_host_port
from planner_service.fleet.models import Deployment, FleetPlanRequest
from planner_service.fleet.packing import plan_fleet
from planner_service.fleet.placement import place
from planner_service.fleet.registry import matches
from planner_service.engine.errors import InvalidRequestError
from vllm_planner.bounded import shown
from vllm_planner.v1 import fleet_pb2 as pb
from vllm_planner.v1 import fleet_pb2_grpc

if TYPE_CHECKING:
    from planner_service.fleet.runtime import FleetRuntime

log = logging.getLogger(__name__)

MAX_PLACE_RESULTS = 1000
_WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}


def _peer_ip(context: grpc.aio.ServicerContext) -> str | None:
    """``ipv4:10.0.0.5:41234`` / ``ipv6:[::1]:5000`` -> the IP, else None."""
    peer = context.peer() or ""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    host = rest.rpartition(":")[0].strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


class FleetServicer(fleet_pb2_grpc.FleetServiceServicer):
    def __init__(self, runtime: "FleetRuntime") -> None:
        self._rt = runtime

    async def RegisterAgent(self, request: pb.RegisterAgentRequest, context: grpc.aio.ServicerContext) -> pb.RegisterAgentResponse:
        host, port = split_host_port(request.address)
        if host in _WILDCARD_HOSTS:  # an agent listening on 0.0.0.0 is reachable at the caller's IP
            host = _peer_ip(context) or host
        labels = {item.key: item.value for item in request.labels}
        self._rt.registrations.register(join_host_port(host, port), labels)
        self._rt.reconcile()
        t = self._rt.timings
        return pb.RegisterAgentResponse(
            heartbeat_interval_seconds=t.heartbeat_interval_seconds,
            lease_seconds=t.registration_lease_seconds,
            planner_instance_id=self._rt.instance_id,
        )

    async def ListHosts(self, request: pb.ListHostsRequest, context: grpc.aio.ServicerContext) -> pb.ListHostsResponse:
        hosts = self._rt.registry.hosts(conv.filter_from_proto(request.filter))
        return pb.ListHostsResponse(hosts=[conv.host_to_proto(h) for h in hosts])

    async def GetHost(self, request: pb.GetHostRequest, context: grpc.aio.ServicerContext) -> pb.GetHostResponse:
        host = self._rt.registry.get(request.host)
        if host is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no host {shown(request.host)} in the fleet")
        return pb.GetHostResponse(host=conv.host_to_proto(host))

    async def WatchFleet(self, request: pb.WatchFleetRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.WatchFleetResponse]:
        flt = conv.filter_from_proto(request.filter)
        queue = self._rt.registry.subscribe()
        try:
            for host in self._rt.registry.hosts(flt):
                yield pb.WatchFleetResponse(host=conv.host_to_proto(host), initial=True)
            while True:
                event = await queue.get()
                # State filters must still see the transition away from the state, so test the
                # other constraints only; removals always pass.
                if event.removed or matches(event.host, flt.model_copy(update={"states": ()})):
                    yield pb.WatchFleetResponse(host=conv.host_to_proto(event.host), removed=event.removed)
        finally:
            self._rt.registry.unsubscribe(queue)

    async def Place(self, request: pb.PlaceRequest, context: grpc.aio.ServicerContext) -> pb.PlaceResponse:
        # 0 is "not set" on the wire (proto3 scalar): the default of 10.
        max_results = int(request.max_results) or 10
        if not 1 <= max_results <= MAX_PLACE_RESULTS:
            raise InvalidRequestError.for_field("max_results", f"must be between 1 and {MAX_PLACE_RESULTS}")
        deployment = conv.deployment_from_proto(request.deployment)
        hosts = self._rt.registry.snapshot()
        result = await asyncio.to_thread(self._place, deployment, hosts, max_results)
        return conv.place_response_to_proto(result)

    def _place(self, deployment: Deployment, hosts, max_results: int):  # noqa: ANN001, ANN202
        cache, fp8 = self._rt.provider.prepare(deployment)
        return place(deployment, hosts, cache, self._rt.settings.sizing, fp8=fp8, max_results=max_results)

    async def PlanFleet(self, request: pb.PlanFleetRequest, context: grpc.aio.ServicerContext) -> pb.PlanFleetResponse:
        plan_request = FleetPlanRequest(deployments=tuple(conv.deployment_from_proto(d) for d in request.deployments))
        hosts = self._rt.registry.snapshot()
        result = await asyncio.to_thread(plan_fleet, plan_request, hosts, self._rt.provider.prepare, self._rt.settings.sizing)
        return conv.fleet_plan_to_proto(result)

