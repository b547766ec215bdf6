"""The fleet machinery inside the planner process: settings, discovery, watchers, sweeps, servicer hook.

Usage from a server bootstrap (inside the event loop)::

    fleet = FleetRuntime(FleetSettings(agents=["gpu-1:50052"], agents_dns=["gpu-agents.ns.svc:50052"]))
    await fleet.start()
    running = await start_server(options, register=fleet.register, service_full_names=[FLEET_SERVICE_NAME])
    ...
    await fleet.stop()

Why replicas agree: a replica's fleet is a function of (discovery answers, agent streams). Static
lists and DNS are the same for every replica; agents given ``--register-with NAME`` register with
*every* address NAME resolves to (gpu_agent/register.py), so each replica holds the same leases.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import time
import uuid
from pathlib import Path
from typing import Callable

import grpc
from pydantic import BaseModel, ConfigDict, Field, field_validator

from planner_service.fleet.discovery import DnsDiscovery, Registrations, Resolver, StaticDiscovery, read_agent_file, system_resolver
from planner_service.fleet.evaluator import TwinProvider
from planner_service.fleet.registry import FleetRegistry, FleetTimings
from planner_service.fleet.reports import Reports
from planner_service.fleet.reservations import ReservationBook
from planner_service.fleet.sizing import SizingPolicy
from planner_service.fleet.watcher import StreamOpener, WatcherPool
from vllm_planner.bounded import file_label, read_token

log = logging.getLogger(__name__)

FLEET_SERVICE_NAME = "vllm_planner.v1.FleetService"


class FleetSettings(BaseModel):
    """What the planner's ``--agents``, ``--agents-file``, ``--agents-dns`` and timing flags set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agents: list[str] = Field(default_factory=list, description="Static agent addresses HOST:PORT (comma-separated allowed).")
    agents_file: Path | None = Field(default=None, description="File with one agent address per line.")
    agents_dns: list[str] = Field(default_factory=list, description="NAME:PORT resolving to many agents (headless Service).")
    agent_auth_token: str | None = Field(default=None, description="Bearer token for the agents' gRPC endpoints.")
    agent_tls: bool = False
    agent_tls_ca_file: Path | None = None
    agent_tls_cert_file: Path | None = None
    agent_tls_key_file: Path | None = None
    timings: FleetTimings = FleetTimings()
    sizing: SizingPolicy = SizingPolicy()
    max_registrations: int = Field(default=20_000, ge=1, description="Distinct agent addresses RegisterAgent may hold.")


class FleetFlags(BaseModel):
    """Fleet fields to mix into a server's settings class (flags > env > YAML > defaults there)::

        class PlannerServiceSettings(ServerSettings, FleetFlags): ...
        fleet = FleetRuntime(settings.fleet_settings(), provider=TwinProvider(resolve=resolver.resolve))
    """

    agents: list[str] = Field(default_factory=list, description="Static GPU agent addresses HOST:PORT (repeatable, comma-separated allowed).")
    agents_file: Path | None = Field(default=None, description="File with one GPU agent address per line.")
    agents_dns: list[str] = Field(default_factory=list, description="NAME:PORT resolving to many agents, re-resolved periodically (repeatable).")
    agent_auth_token: str | None = Field(default=None, description="Bearer token the agents require (prefer --agent-auth-token-file).")
    agent_auth_token_file: Path | None = Field(default=None, description="Bearer token file for the agents' gRPC endpoints.")
    agent_tls: bool = Field(default=False, description="Call the agents over TLS (implied by any --agent-tls-* file).")
    agent_tls_ca_file: Path | None = Field(default=None, description="CA (PEM) that signed the agents' certificates.")
    agent_tls_cert_file: Path | None = Field(default=None, description="Client certificate (PEM) for agents that require mutual TLS.")
    agent_tls_key_file: Path | None = Field(default=None, description="Client private key (PEM) for agents that require mutual TLS.")
    fleet_heartbeat_seconds: float = Field(default=10.0, gt=0, description="Interval agents re-register at (told to them).")
    fleet_max_reports_per_second: float = Field(default=200.0, gt=0, description="Agent heartbeats per second the planner paces the fleet to (the interval grows past heartbeat x this many agents).")
    fleet_stale_after_seconds: float = Field(default=30.0, gt=0, description="No inventory for this long: host STALE.")
    fleet_gone_after_seconds: float = Field(default=120.0, gt=0, description="STALE for this long: host GONE.")
    fleet_dns_refresh_seconds: float = Field(default=30.0, gt=0, description="How often --agents-dns is re-resolved.")
    fleet_max_registrations: int = Field(default=20_000, ge=1, le=1_000_000, description="Most distinct agent addresses RegisterAgent may hold (RESOURCE_EXHAUSTED beyond).")

    @field_validator("agents", "agents_dns")
    @classmethod
    def _addresses(cls, values: list[str], info) -> list[str]:  # noqa: ANN001
        from vllm_planner.transport.address import parse_address_list

        return parse_address_list(values, info.field_name)

    def fleet_settings(self) -> "FleetSettings":
        path = self.agent_auth_token_file
        token = read_token(path, what=f"--agent-auth-token-file {file_label(path)}") if path else self.agent_auth_token
        timings = FleetTimings(
            heartbeat_interval_seconds=self.fleet_heartbeat_seconds,
            registration_lease_seconds=3 * self.fleet_heartbeat_seconds,
            max_reports_per_second=self.fleet_max_reports_per_second,
            stale_after_seconds=self.fleet_stale_after_seconds,
            gone_after_seconds=self.fleet_gone_after_seconds,
            dns_refresh_seconds=self.fleet_dns_refresh_seconds,
        )
        return FleetSettings(agents=list(self.agents), agents_file=self.agents_file, agents_dns=list(self.agents_dns),
                             agent_auth_token=token or None, timings=timings, max_registrations=self.fleet_max_registrations,
                             agent_tls=self.agent_tls or any((self.agent_tls_ca_file, self.agent_tls_cert_file)),
                             agent_tls_ca_file=self.agent_tls_ca_file, agent_tls_cert_file=self.agent_tls_cert_file,
                             agent_tls_key_file=self.agent_tls_key_file)


class MemoryHygiene:
    """Keeps a planner with thousands of long-lived host records from pausing for seconds.

    Python's full (generation 2) garbage collection walks every tracked object; with 10,000 hosts
    that is over a million objects and hundreds of milliseconds with the GIL held, so a ``Place``
    running meanwhile waits. Every ``freeze_interval_seconds`` the young generations are collected and
    everything that survived is frozen (``gc.freeze``): frozen objects are still freed by reference
    counting when a host record is replaced, they are only left out of the cyclic collector's walks.
    Once every ``full_interval_seconds`` everything is unfrozen and collected in full (one pause per
    hour, for cyclic garbage that reached the old generation). ``malloc_trim`` then hands freed C
    heap (gRPC's connection storms, protobuf parsing) back to the operating system.
    """

    def __init__(self, freeze_interval_seconds: float = 10.0, full_interval_seconds: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.freeze_interval_seconds = freeze_interval_seconds
        self.full_interval_seconds = full_interval_seconds
        self._clock = clock
        self._last_freeze = clock()
        self._last_full = clock()
        libc = ctypes.util.find_library("c")
        self._trim = getattr(ctypes.CDLL(libc), "malloc_trim", None) if libc else None

    def tick(self) -> None:
        now = self._clock()
        if now - self._last_full >= self.full_interval_seconds:
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self._last_full = self._last_freeze = now
            self._release()
        elif now - self._last_freeze >= self.freeze_interval_seconds:
            gc.collect(1)
            gc.freeze()
            self._last_freeze = now
            self._release()

    def _release(self) -> None:
        if self._trim is not None:
            self._trim(0)


class FleetRuntime:
    def __init__(
        self,
        settings: FleetSettings | None = None,
        *,
        open_stream: StreamOpener | None = None,
        provider: TwinProvider | None = None,
        resolver: Resolver = system_resolver,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or FleetSettings()
        self.instance_id = uuid.uuid4().hex[:12]
        self.registry = FleetRegistry(self.settings.timings, clock)
        self.registrations = Registrations(self.registry, clock, self.settings.max_registrations)
        self.reports = Reports(self.registry, self.registrations)
        self.reservations = ReservationBook(clock, startup_overhead_bytes=self.settings.sizing.startup_overhead_bytes)
        self.provider = provider or TwinProvider()
        if open_stream is None:
            from planner_service.fleet.inventory_adapter import AgentStreams

            open_stream = AgentStreams(self.settings).open
        self.pool = WatcherPool(self.registry, open_stream)
        addresses = list(self.settings.agents)
        if self.settings.agents_file is not None:
            addresses += read_agent_file(self.settings.agents_file)
        self._static = StaticDiscovery(self.registry, addresses)
        self._dns = [DnsDiscovery(self.registry, name, resolver) for name in self.settings.agents_dns]
        self._tasks: list[asyncio.Task[None]] = []
        self.memory = MemoryHygiene()

    @property
    def timings(self) -> FleetTimings:
        return self.settings.timings

    async def start(self) -> None:
        self._static.start()
        for dns in self._dns:
            await dns.refresh()  # the first answer before serving: a restarted planner is whole at once
            self._tasks.append(asyncio.create_task(self._repeat_dns(dns), name=f"dns {dns.host}"))
        self.reconcile()
        self._tasks.append(asyncio.create_task(self._sweep_loop(), name="fleet sweep"))

    def reconcile(self) -> None:
        self.registrations.expire()
        self.pool.reconcile(self.registry.targets())

    async def _repeat_dns(self, dns: DnsDiscovery) -> None:
        while True:
            await asyncio.sleep(self.timings.dns_refresh_seconds)
            await dns.refresh()
            self.reconcile()

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.timings.sweep_interval_seconds)
            self.reconcile()
            self.registry.sweep()
            self.memory.tick()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.pool.close()

    def register(self, server: grpc.aio.Server) -> None:
        """The ``register`` callback for ``start_server`` / the planner bootstrap."""
        from planner_service.fleet.servicer import FleetServicer
        from vllm_planner.v1 import fleet_pb2_grpc

        fleet_pb2_grpc.add_FleetServiceServicer_to_server(FleetServicer(self), server)
