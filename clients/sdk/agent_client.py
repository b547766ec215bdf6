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

from pathlib import Path
from typing import AsyncIterator, Iterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.sdk.errors import from_rpc_error
from gpu_agent.convert import inventory_from_proto, watch_event_from_proto
from gpu_agent.inventory import HostInventory, InventoryHeartbeat
from vllm_planner.transport.channel import ChannelOptions, create_aio_channel, create_channel
from vllm_planner.v1 import agent_pb2, agent_pb2_grpc

SERVICE_FULL_NAME = agent_pb2.DESCRIPTOR.services_by_name["GpuAgentService"].full_name
DEFAULT_TIMEOUT_SECONDS = 10.0

InventoryEvent = HostInventory | InventoryHeartbeat


def _options(target: str, tls: bool, tls_ca_file, tls_cert_file, tls_key_file, tls_server_name, token) -> ChannelOptions:  # noqa: ANN001
    return ChannelOptions(
        target=target,
        tls=tls,
        tls_ca_file=Path(tls_ca_file) if tls_ca_file else None,
        tls_cert_file=Path(tls_cert_file) if tls_cert_file else None,
        tls_key_file=Path(tls_key_file) if tls_key_file else None,
        tls_server_name=tls_server_name,
        auth_token=token,
        retry_methods=(f"{SERVICE_FULL_NAME}/GetInventory",),
    )


class AgentClient:
    def __init__(
        self,
        target: str,
        *,
        tls: bool = False,
        tls_ca_file: str | Path | None = None,
        tls_cert_file: str | Path | None = None,
        tls_key_file: str | Path | None = None,
        tls_server_name: str | None = None,
        token: str | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.timeout_seconds = timeout_seconds
        self._channel = create_channel(_options(target, tls, tls_ca_file, tls_cert_file, tls_key_file, tls_server_name, token))
        self._stub = agent_pb2_grpc.GpuAgentServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def get_inventory(self, *, timeout_seconds: float | None = None) -> HostInventory:
        try:
            response = self._stub.GetInventory(agent_pb2.GetInventoryRequest(), timeout=timeout_seconds or self.timeout_seconds)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return inventory_from_proto(response.inventory)

    def watch_inventory(self, *, timeout_seconds: float | None = None) -> Iterator[InventoryEvent]:
        """Yield HostInventory on start and on every change, InventoryHeartbeat in between.
        Cancel by closing the generator (or the client)."""
        call = self._stub.WatchInventory(agent_pb2.WatchInventoryRequest(), timeout=timeout_seconds)
        try:
            for message in call:
                yield watch_event_from_proto(message)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    def is_ready(self, *, timeout_seconds: float | None = None) -> bool:
        """True when the agent reports its snapshot fresh (health of the agent service)."""
        try:
            response = self._health.Check(health_pb2.HealthCheckRequest(service=SERVICE_FULL_NAME),
                                          timeout=timeout_seconds or self.timeout_seconds)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return response.status == health_pb2.HealthCheckResponse.SERVING

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "AgentClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncAgentClient:
    def __init__(
        self,
        target: str,
        *,
        tls: bool = False,
        tls_ca_file: str | Path | None = None,
        tls_cert_file: str | Path | None = None,
        tls_key_file: str | Path | None = None,
        tls_server_name: str | None = None,
        token: str | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.timeout_seconds = timeout_seconds
        self._channel = create_aio_channel(_options(target, tls, tls_ca_file, tls_cert_file, tls_key_file, tls_server_name, token))
        self._stub = agent_pb2_grpc.GpuAgentServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def get_inventory(self, *, timeout_seconds: float | None = None) -> HostInventory:
        try:
            response = await self._stub.GetInventory(agent_pb2.GetInventoryRequest(), timeout=timeout_seconds or self.timeout_seconds)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return inventory_from_proto(response.inventory)

    async def watch_inventory(self, *, timeout_seconds: float | None = None) -> AsyncIterator[InventoryEvent]:
        call = self._stub.WatchInventory(agent_pb2.WatchInventoryRequest(), timeout=timeout_seconds)
        try:
            async for message in call:
                yield watch_event_from_proto(message)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    async def is_ready(self, *, timeout_seconds: float | None = None) -> bool:
        try:
            response = await self._health.Check(health_pb2.HealthCheckRequest(service=SERVICE_FULL_NAME),
                                                timeout=timeout_seconds or self.timeout_seconds)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return response.status == health_pb2.HealthCheckResponse.SERVING

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncAgentClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
