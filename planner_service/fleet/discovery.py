"""Where the agents are: a static list, a DNS name re-resolved periodically, and self-registration.

All three feed ``FleetRegistry.add_target/remove_target`` and may be combined; an address named by
several sources is watched once. DNS answers are resolved with ``socket.getaddrinfo`` in the default
executor under a timeout (the stdlib resolver blocks and has no timeout of its own); a failed lookup
keeps the previous answer, so a DNS blip never empties the fleet. Registrations are leases: an agent
that stops heartbeating lapses after ``registration_lease_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Callable, Iterable

from planner_service.engine.errors import InvalidRequestError, ResourceExhaustedError
from planner_service.fleet.models import DiscoverySource
from planner_service.fleet.registry import FleetRegistry
from vllm_planner.transport.address import AddressError, join_host_port, parse_address_list, parse_host_port
from vllm_planner.bounded import MAX_LIST_FILE_BYTES, file_label, read_text

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], list[str]]


def split_host_port(address: str, field: str = "address") -> tuple[str, int]:
    """Validated ``HOST:PORT`` (the shared parser); InvalidRequestError naming ``field`` otherwise."""
    try:
        parsed = parse_host_port(address, field, allow_wildcard=True)
    except AddressError as exc:
        raise InvalidRequestError.for_field(exc.field, exc.reason) from None
    return parsed.host, parsed.port


def parse_agent_list(values: Iterable[str], field: str = "agents") -> list[str]:
    """``["a:1,b:2", "c:3"]`` -> sorted unique addresses (flags may be repeated or comma-joined)."""
    try:
        return parse_address_list(values, field)
    except AddressError as exc:
        raise InvalidRequestError.for_field(exc.field, exc.reason) from None


def read_agent_file(path: Path) -> list[str]:
    """One address per line (or comma-separated); ``#`` starts a comment."""
    text = read_text(path, max_bytes=MAX_LIST_FILE_BYTES, what=f"--agents-file {file_label(path)}")
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    return parse_agent_list(lines, f"agents_file {file_label(path)}")


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({join_host_port(info[4][0], port) for info in infos})


class StaticDiscovery:
    def __init__(self, registry: FleetRegistry, addresses: Iterable[str]) -> None:
        self._registry = registry
        self.addresses = parse_agent_list(addresses)

    def start(self) -> None:
        for address in self.addresses:
            self._registry.add_target(address, DiscoverySource.STATIC)


class DnsDiscovery:
    """Re-resolves ``name:port`` (e.g. a Kubernetes headless Service) into agent addresses."""

    def __init__(self, registry: FleetRegistry, target: str, resolver: Resolver = system_resolver) -> None:
        self._registry = registry
        self.host, self.port = split_host_port(target, "agents_dns")
        self._resolver = resolver
        self.current: set[str] = set()

    async def refresh(self) -> None:
        loop = asyncio.get_running_loop()
        timeout = self._registry.timings.dns_timeout_seconds
        try:  # asyncio.timeout: Python 3.11's wait_for can swallow a cancellation that meets the answer
            async with asyncio.timeout(timeout):
                answer = await loop.run_in_executor(None, self._resolver, self.host, self.port)
        except (OSError, TimeoutError) as exc:
            log.warning("DNS discovery of %s:%d failed (%s); keeping %d address(es)", self.host, self.port, exc, len(self.current))
            return
        new = set(answer)
        for address in sorted(new - self.current):
            self._registry.add_target(address, DiscoverySource.DNS)
        for address in sorted(self.current - new):
            self._registry.remove_target(address, DiscoverySource.DNS)
        self.current = new

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self._registry.timings.dns_refresh_seconds)


class Registrations:
    """Agent self-registration leases, renewed by each RegisterAgent or ReportInventory call; at most
    ``max_registrations`` distinct addresses at once (a renewal is always accepted). A lease names how
    the agent is heard: REGISTERED (the planner dials it) or REPORTED (it pushes its reports)."""

    def __init__(self, registry: FleetRegistry, clock: Callable[[], float], max_registrations: int = 20_000) -> None:
        self._registry = registry
        self._clock = clock
        self._expiry: dict[str, tuple[float, DiscoverySource]] = {}
        self.max_registrations = max_registrations

    def register(self, address: str, labels: dict[str, str] | None = None,
                 source: DiscoverySource = DiscoverySource.REGISTERED) -> str:
        """Renew the lease of ``address`` (normalised and returned) with the labels the agent sent."""
        host, port = split_host_port(address)
        address = join_host_port(host, port)
        held = self._expiry.get(address)
        if held is None:
            if len(self._expiry) >= self.max_registrations:
                # Lapsed leases make room first. Only at the cap: the sweep expires them anyway, and a
                # scan per new agent was quadratic when 10,000 agents registered at once.
                self.expire()
            if len(self._expiry) >= self.max_registrations:
                raise ResourceExhaustedError(
                    f"this planner already holds {self.max_registrations} agent registrations (fleet_max_registrations)")
        elif held[1] is not source:  # the agent switched between pushing and being dialled
            self._registry.remove_target(address, held[1])
        self._expiry[address] = (self._clock() + self.lease_seconds, source)
        self._registry.add_target(address, source)
        self._registry.set_labels(address, dict(labels or {}))
        self._pace()
        return address

    def expire(self) -> None:
        now = self._clock()
        for address in sorted(a for a, (t, _) in self._expiry.items() if t < now):
            _, source = self._expiry.pop(address)
            self._registry.remove_target(address, source)
        self._pace()

    @property
    def heartbeat_interval_seconds(self) -> float:
        """The interval agents are told now: the configured one, or longer when so many agents hold
        leases that their heartbeats together would exceed ``max_reports_per_second``."""
        return self._registry.timings.heartbeat_interval_seconds * self._registry.pacing

    @property
    def lease_seconds(self) -> float:
        """The lease agents are told now (the configured one, stretched like the interval)."""
        return self._registry.timings.registration_lease_seconds * self._registry.pacing

    def _pace(self) -> None:
        t = self._registry.timings
        self._registry.pacing = max(1.0, len(self._expiry) / (t.max_reports_per_second * t.heartbeat_interval_seconds))

    def __len__(self) -> int:
        return len(self._expiry)
