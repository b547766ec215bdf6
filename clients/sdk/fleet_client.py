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
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import grpc

from clients.sdk.errors import from_rpc_error
from planner_service.fleet import converters as conv
from planner_service.fleet.models import Deployment, FleetHost, FleetPlanResponse, HostFilter, PlaceResponse
from vllm_planner.transport.channel import ChannelOptions, create_aio_channel, create_channel
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


def _options(target: str, tls: bool, tls_ca_file: str | Path | None, token: str | None) -> ChannelOptions:
    return ChannelOptions(
        target=target,
        tls=tls,
        tls_ca_file=Path(tls_ca_file) if tls_ca_file else None,
        auth_token=token,
        retry_methods=(SERVICE_FULL_NAME,),
    )


def _place_request(deployment: Deployment, max_results: int) -> pb.PlaceRequest:
    return pb.PlaceRequest(deployment=conv.deployment_to_proto(deployment), max_results=max_results)


def _register_request(address: str, host: str, agent_instance_id: str, labels: dict[str, str] | None) -> pb.RegisterAgentRequest:
    request = pb.RegisterAgentRequest(address=address, host=host, agent_instance_id=agent_instance_id)
    for key in sorted(labels or {}):
        request.labels.add(key=key, value=labels[key])
    return request


def _event(msg: pb.WatchFleetResponse) -> FleetEvent:
    return FleetEvent(conv.host_from_proto(msg.host), initial=msg.initial, removed=msg.removed)


class _Base:
    def __init__(
        self,
        target: str,
        *,
        tls: bool = False,
        tls_ca_file: str | Path | None = None,
        token: str | None = None,
        timeout_seconds: float | None = None,
    ) -> None:
        """Args:
        target: ``HOST:PORT`` of the planner service (which serves FleetService).
        tls / tls_ca_file: TLS, with the system roots when no CA file is given.
        token: bearer token the service was started with.
        timeout_seconds: deadline of every unary call; None = the per-method defaults.
        """
        self._options = _options(target, tls, tls_ca_file, token)
        self._timeout_seconds = timeout_seconds

    def _kwargs(self, method: str, timeout_seconds: float | None) -> dict[str, Any]:
        timeout = timeout_seconds or self._timeout_seconds or DEFAULT_TIMEOUTS_SECONDS.get(method)
        return {"timeout": timeout, "metadata": self._options.auth_metadata() or None}


class FleetClient(_Base):
    """Synchronous client; thread-safe. Close it (or use ``with``)."""

    def __init__(self, target: str, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        self._channel = create_channel(self._options)
        self._stub = fleet_pb2_grpc.FleetServiceStub(self._channel)

    def _call(self, method: str, request: Any, timeout_seconds: float | None) -> Any:
        try:
            return getattr(self._stub, method)(request, **self._kwargs(method, timeout_seconds))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

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
        call = self._stub.WatchFleet(request, timeout=timeout_seconds, metadata=self._options.auth_metadata() or None)
        try:
            for msg in call:
                yield _event(msg)
        except grpc.RpcError as exc:
            if exc.code() is not grpc.StatusCode.CANCELLED:
                raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "FleetClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncFleetClient(_Base):
    """asyncio client (``grpc.aio``); create it inside the running loop, ``await close()``."""

    def __init__(self, target: str, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        self._channel = create_aio_channel(self._options)
        self._stub = fleet_pb2_grpc.FleetServiceStub(self._channel)

    async def _call(self, method: str, request: Any, timeout_seconds: float | None) -> Any:
        try:
            return await getattr(self._stub, method)(request, **self._kwargs(method, timeout_seconds))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

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

    async def watch_fleet(self, flt: HostFilter | None = None, *, timeout_seconds: float | None = None) -> AsyncIterator[FleetEvent]:
        request = pb.WatchFleetRequest(filter=conv.filter_to_proto(flt or HostFilter()))
        call = self._stub.WatchFleet(request, timeout=timeout_seconds, metadata=self._options.auth_metadata() or None)
        try:
            async for msg in call:
                yield _event(msg)
        except grpc.RpcError as exc:
            if exc.code() is not grpc.StatusCode.CANCELLED:
                raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncFleetClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
