"""``FleetService`` over gRPC: a thin adapter from protos to the registry and the pure core.

Unary errors are raised as domain errors / pydantic ``ValidationError`` and turned into statuses by
the planner's ``ErrorMappingInterceptor``. Placement runs in a worker thread on a snapshot of the
registry taken on the event loop, so a long plan never stalls the agent streams; the reservation
book's lock makes "apply holds, choose, hold" atomic for calls that reserve.

Bounds: a ``Place`` answer stays under ``MAX_PLACE_ANSWER_BYTES`` (64 KiB) whatever the fleet's size:
rejected hosts are counted per reason plus the closest few, ``max_results`` <= 100, ``replicas`` <= 64
(PlanFleet packs more), and if the selected placements' Kubernetes manifests would still push it
over, the manifests of the last ones are left out (with a warning on each). ``ListHosts`` and
``ListReservations`` are paged (AIP-158); ``WatchFleet`` pages its initial snapshot and can resume.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import TYPE_CHECKING, AsyncIterator, Iterator

import grpc

from planner_service.engine.errors import InvalidRequestError
from planner_service.fleet import converters as conv
from planner_service.fleet import paging
from planner_service.fleet.models import Deployment, FleetHost, FleetPlanRequest, FleetPlanResponse, HostFilter, PlaceResponse
from planner_service.fleet.packing import plan_fleet
from planner_service.fleet.placement import place
from planner_service.fleet.registration import validate_registration
from planner_service.fleet.registry import FleetEvent, matches
from planner_service.fleet.reservations import validate_reserve_seconds
from planner_service.fleet.slo_sizing import size_deployments
from vllm_planner.bounded import shown
from vllm_planner.v1 import fleet_pb2 as pb
from vllm_planner.v1 import fleet_pb2_grpc

if TYPE_CHECKING:
    from planner_service.fleet.runtime import FleetRuntime

log = logging.getLogger(__name__)

MAX_PLACE_RESULTS = 100
MAX_PLACE_REPLICAS = 64
MAX_PLACE_ANSWER_BYTES = 64 * 1024
OMITTED_NOTE = "artifacts omitted to keep the answer under 64 KiB: use PlanFleet for this many replicas"


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


def fit_place_answer(msg: pb.PlaceResponse, limit: int = MAX_PLACE_ANSWER_BYTES) -> pb.PlaceResponse:
    """Drop artifacts, last placements first (ranked alternatives before selected ones), until the
    answer fits ``limit``; each trimmed placement says so in its warnings."""
    for group in (msg.placements, msg.selected):
        for placement in reversed(group):
            if msg.ByteSize() <= limit:
                return msg
            if placement.HasField("artifacts"):
                placement.ClearField("artifacts")
                placement.warnings.append(OMITTED_NOTE)
    return msg


class FleetServicer(fleet_pb2_grpc.FleetServiceServicer):
    def __init__(self, runtime: "FleetRuntime") -> None:
        self._rt = runtime

    # -- registration -----------------------------------------------------------------------------
    async def RegisterAgent(self, request: pb.RegisterAgentRequest, context: grpc.aio.ServicerContext) -> pb.RegisterAgentResponse:
        registration = validate_registration(
            request.address, request.host, request.agent_instance_id,
            [(item.key, item.value) for item in request.labels], _peer_ip(context),
        )
        self._rt.registrations.register(str(registration.address), registration.labels)
        self._rt.reconcile()
        leases = self._rt.registrations
        return pb.RegisterAgentResponse(
            heartbeat_interval_seconds=leases.heartbeat_interval_seconds,
            lease_seconds=leases.lease_seconds,
            planner_instance_id=self._rt.instance_id,
        )

    async def ReportInventory(self, request: pb.ReportInventoryRequest, context: grpc.aio.ServicerContext) -> pb.ReportInventoryResponse:
        registration = validate_registration(
            request.address, request.host, request.agent_instance_id,
            [(item.key, item.value) for item in request.labels], _peer_ip(context),
        )
        wanted = self._rt.reports.report(registration, request)
        leases = self._rt.registrations
        return pb.ReportInventoryResponse(
            heartbeat_interval_seconds=leases.heartbeat_interval_seconds,
            lease_seconds=leases.lease_seconds,
            planner_instance_id=self._rt.instance_id,
            inventory_wanted=wanted,
        )

    # -- hosts ------------------------------------------------------------------------------------
    def _with_holds(self, host: FleetHost) -> pb.FleetHost:
        msg = conv.host_to_proto(host)
        held = self._rt.reservations.held_bytes(host.address)
        for gpu in msg.gpus:
            gpu.memory_held_bytes = held.get(gpu.uuid, 0)
        return msg

    async def ListHosts(self, request: pb.ListHostsRequest, context: grpc.aio.ServicerContext) -> pb.ListHostsResponse:
        size = paging.page_size(request.page_size)
        fp = paging.fingerprint(request.filter)
        after = paging.decode_page(request.page_token, fp)
        if after is not None and len(after) != 2:
            raise InvalidRequestError.for_field("page_token", "not a token this service returned")
        hosts, next_key, total = self._rt.registry.page(conv.filter_from_proto(request.filter), after, size)  # type: ignore[arg-type]
        return pb.ListHostsResponse(
            hosts=[self._with_holds(h) for h in hosts],
            next_page_token=paging.encode_page(next_key, fp) if next_key else "",
            total_size=total,
        )

    async def GetHost(self, request: pb.GetHostRequest, context: grpc.aio.ServicerContext) -> pb.GetHostResponse:
        host = self._rt.registry.get(request.host)
        if host is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no host {shown(request.host)} in the fleet")
        return pb.GetHostResponse(host=self._with_holds(host))

    async def WatchFleet(self, request: pb.WatchFleetRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.WatchFleetResponse]:
        try:
            flt = conv.filter_from_proto(request.filter)
            size = paging.page_size(request.page_size) if request.page_size else 0
            resume = paging.decode_resume(request.resume_token) if request.resume_token else None
        except Exception as exc:  # streams are not wrapped by the error interceptor: answer here
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, " ".join(str(exc).split()))
        registry = self._rt.registry
        marker = bool(size or request.resume_token)  # clients that know the new fields get markers
        # State filters must still see the transition away from the state, so live changes test the
        # other constraints only; removals always pass.
        live_filter = flt.model_copy(update={"states": ()})
        subscription = registry.subscribe()
        try:
            resumed = None
            if resume is not None and resume[0] == self._rt.instance_id:
                resumed = registry.changes_since(resume[1])
            if resumed is not None:
                events = [e for e in resumed if e.removed or matches(e.host, live_filter)]
                for i, event in enumerate(events):
                    yield self._change(event, snapshot_complete=i == len(events) - 1)
                if not events:
                    yield pb.WatchFleetResponse(resume_token=self._token(registry.revision), snapshot_complete=True)
            else:
                for message in self._snapshot(flt, size, reset=resume is not None, marker=marker):
                    yield message
            while True:
                event = await subscription.get()
                if subscription.lagged:  # events were dropped: start over with the whole fleet
                    subscription.reset()
                    for message in self._snapshot(flt, size, reset=True, marker=True):
                        yield message
                    continue
                if event.removed or matches(event.host, live_filter):
                    yield self._change(event)
        finally:
            registry.unsubscribe(subscription)

    def _token(self, revision: int) -> str:
        return paging.encode_resume(self._rt.instance_id, revision)

    def _change(self, event: FleetEvent, snapshot_complete: bool = False) -> pb.WatchFleetResponse:
        return pb.WatchFleetResponse(host=self._with_holds(event.host), removed=event.removed,
                                     resume_token=self._token(event.host.revision), snapshot_complete=snapshot_complete)

    def _snapshot(self, flt: HostFilter, size: int, reset: bool, marker: bool) -> Iterator[pb.WatchFleetResponse]:
        """The initial snapshot as messages: one host each (size 0) or pages of ``size`` hosts.

        The hosts are taken at one revision (the records are immutable), but converted a message at a
        time as the stream sends them: at 10,000 hosts converting them all at once held the event loop
        for ~0.7 s, and every RPC of the planner (agents' reports, ``Place``) waited behind it.
        """
        registry = self._rt.registry
        token = self._token(registry.revision)
        hosts = [h for h in registry.snapshot() if matches(h, flt)]
        if not hosts:
            if marker:
                yield pb.WatchFleetResponse(initial=True, resume_token=token, snapshot_complete=True, reset=reset)
            return
        step = size or 1
        for i in range(0, len(hosts), step):
            page = [self._with_holds(h) for h in registry.with_ages(hosts[i : i + step])]
            message = (pb.WatchFleetResponse(hosts=page, initial=True, resume_token=token) if size
                       else pb.WatchFleetResponse(host=page[0], initial=True, resume_token=token))
            message.snapshot_complete = i + step >= len(hosts)
            message.reset = reset and i == 0
            yield message

    # -- placement --------------------------------------------------------------------------------
    async def Place(self, request: pb.PlaceRequest, context: grpc.aio.ServicerContext) -> pb.PlaceResponse:
        # 0 is "not set" on the wire (proto3 scalar): the default of 10.
        max_results = int(request.max_results) or 10
        if not 1 <= max_results <= MAX_PLACE_RESULTS:
            raise InvalidRequestError.for_field("max_results", f"must be between 1 and {MAX_PLACE_RESULTS}")
        reserve = validate_reserve_seconds(request.reserve_seconds)
        deployment = conv.deployment_from_proto(request.deployment)
        if deployment.replicas > MAX_PLACE_REPLICAS:
            raise InvalidRequestError.for_field(
                "deployment.replicas", f"Place chooses at most {MAX_PLACE_REPLICAS} replicas; PlanFleet packs more")
        if deployment.request_rate is not None:
            raise InvalidRequestError.for_field(
                "deployment.request_rate", "sizing replicas for a rate is PlanFleet's; Place takes replicas")
        hosts = self._rt.registry.snapshot()
        result = await asyncio.to_thread(self._place, deployment, hosts, max_results, reserve)
        return fit_place_answer(conv.place_response_to_proto(result))

    def _place(self, deployment: Deployment, hosts: tuple[FleetHost, ...], max_results: int, reserve: float) -> PlaceResponse:
        cache, fp8 = self._rt.provider.prepare(deployment)  # may resolve metadata: outside the lock
        book = self._rt.reservations
        sizing = self._rt.settings.sizing
        if reserve <= 0:
            with book.lock:
                view = book.apply(hosts)
            return place(deployment, view, cache, sizing, fp8=fp8, max_results=max_results)
        with book.lock:  # apply, choose and hold atomically: concurrent callers never overlap
            view = book.apply(hosts)
            result = place(deployment, view, cache, sizing, fp8=fp8, max_results=max_results)
            reservation = book.reserve(deployment.display_name, result.selected, view, reserve)
        return result.model_copy(update={"reservation": reservation})

    async def PlanFleet(self, request: pb.PlanFleetRequest, context: grpc.aio.ServicerContext) -> pb.PlanFleetResponse:
        reserve = validate_reserve_seconds(request.reserve_seconds)
        plan_request = FleetPlanRequest(deployments=tuple(conv.deployment_from_proto(d) for d in request.deployments))
        hosts = self._rt.registry.snapshot()
        result = await asyncio.to_thread(self._plan_fleet, plan_request, hosts, reserve)
        return conv.fleet_plan_to_proto(result)

    def _plan_fleet(self, request: FleetPlanRequest, hosts: tuple[FleetHost, ...], reserve: float) -> FleetPlanResponse:
        # Rate-given deployments are sized first (capacity searches take seconds: outside the lock).
        request, sizings, not_sized = size_deployments(request, hosts, self._rt.provider.source)
        for deployment in request.deployments:  # resolve metadata outside the lock
            self._rt.provider.prepare(deployment)
        book = self._rt.reservations
        with book.lock:
            view = book.apply(hosts)
            result = plan_fleet(request, view, self._rt.provider.prepare, self._rt.settings.sizing)
            result = result.model_copy(update={"sizings": sizings, "unplaced": result.unplaced + not_sized})
            if reserve <= 0:
                return result
            names = ", ".join(dict.fromkeys(a.deployment for a in result.assignments))
            reservation = book.reserve(names, [a.placement for a in result.assignments], view, reserve)
        return result.model_copy(update={"reservation": reservation})

    # -- reservations -----------------------------------------------------------------------------
    async def ReleaseReservation(self, request: pb.ReleaseReservationRequest, context: grpc.aio.ServicerContext) -> pb.ReleaseReservationResponse:
        if not request.reservation_id:
            raise InvalidRequestError.for_field("reservation_id", "required")
        released = self._rt.reservations.release(request.reservation_id)
        return pb.ReleaseReservationResponse(reservation=conv.reservation_to_proto(released))

    async def ListReservations(self, request: pb.ListReservationsRequest, context: grpc.aio.ServicerContext) -> pb.ListReservationsResponse:
        size = paging.page_size(request.page_size)
        after = paging.decode_page(request.page_token, paging.fingerprint(None))
        active = self._rt.reservations.active()
        keyed = [((r.expire_time.isoformat(), r.reservation_id), r) for r in active]
        window = [r for key, r in keyed if after is None or key > after][: size + 1]
        more = len(window) > size
        window = window[:size]
        token = paging.encode_page((window[-1].expire_time.isoformat(), window[-1].reservation_id), paging.fingerprint(None)) if more else ""
        return pb.ListReservationsResponse(reservations=[conv.reservation_to_proto(r) for r in window], next_page_token=token)
