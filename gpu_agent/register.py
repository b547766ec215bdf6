"""``gpu-agent --register-with PLANNER``: report to the planner(s), or announce this agent to be dialled.

Each round resolves PLANNER (``HOST:PORT``) to every address it names and reports to each one, so
when several planner replicas sit behind one DNS name (a Kubernetes headless Service) every replica
holds this agent's lease and state (no replica-only state). The planner answers with the heartbeat
interval it wants; a failed call is retried next round with jittered backoff. Two modes:

- ``push`` (the default, ``report_loop``): ``ReportInventory`` carries the registration and the
  inventory (first, after each change, and when the planner asks) or a heartbeat (every interval, and
  at once when the snapshot's freshness changes) over one long-lived connection per planner. The
  planner dials nothing and holds no call open (planner_service/fleet/reports.py says why). A planner
  without ReportInventory (UNIMPLEMENTED) is registered with instead, as in dial mode.
- ``dial`` (``heartbeat_loop``): ``RegisterAgent`` only; the planner then opens the agent's
  ``WatchInventory`` stream itself (as it does for --agents and --agents-dns discovery).

Calls to the planner carry the bearer token and, with ``--register-tls`` (or any
``--register-tls-*`` file), go over TLS (``PlannerTls``): the planner's certificate is checked
against the name given in ``--register-with`` even though each replica is dialled by its resolved IP,
and a client certificate is presented to a planner that requires mutual TLS.

Hook in ``gpu_agent/main.py`` (after the server is listening)::

    if settings.register_with:
        task = start_registration(settings.register_with, advertise_address=..., host=socket.gethostname(),
                                  agent_instance_id=..., token=..., mode=settings.register_mode,
                                  collector=agent.collector, changes=agent.changes)
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from clients.sdk.errors import SdkError, Unimplemented
from clients.sdk.fleet_client import AsyncFleetClient

if TYPE_CHECKING:
    from gpu_agent.collector import Collector
    from gpu_agent.servicer import ChangeSignal

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], list[str]]
MAX_BACKOFF_SECONDS = 60.0
FIRST_INTERVAL_SECONDS = 10.0  # until a planner says which interval it wants
# Each agent keeps its own connection to each planner (no subchannel shared with other channels of
# the process: one process serving many agents, as benchmarks/fleet.py does, then behaves as many hosts).
REPORT_CHANNEL_OPTIONS: tuple[tuple[str, object], ...] = (("grpc.use_local_subchannel_pool", 1), ("grpc.enable_channelz", 0))


@dataclass(frozen=True)
class PlannerTls:
    """How the agent's calls to the planner are secured: TLS (``enabled``), the CA that signed the
    planner's certificate (None: the system roots), a client certificate and key for mutual TLS, and
    the name the planner's certificate must carry."""

    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None

    @classmethod
    def for_target(cls, target: str, *, enabled: bool = False, ca_file: Path | None = None, cert_file: Path | None = None,
                   key_file: Path | None = None, server_name: str | None = None) -> "PlannerTls":
        """TLS settings for ``--register-with target``: on when asked or when any file is given; the
        certificate is checked against the target's host name (replicas are dialled by IP)."""
        on = enabled or any((ca_file, cert_file, key_file))
        if on and server_name is None:
            from planner_service.fleet.discovery import split_host_port

            host = split_host_port(target)[0]
            try:
                ipaddress.ip_address(host)
            except ValueError:
                server_name = host  # a DNS name: what the certificate names, not the IP dialled
        return cls(on, ca_file, cert_file, key_file, server_name if on else None)

    def client_kwargs(self) -> dict[str, object]:
        return dict(tls=self.enabled, tls_ca_file=self.ca_file, tls_cert_file=self.cert_file, tls_key_file=self.key_file,
                    tls_server_name=self.server_name)


NO_TLS = PlannerTls()


def resolve_planners(target: str, resolver: Resolver | None = None) -> list[str]:
    """Every ``IP:PORT`` behind ``target``; the target itself if it cannot be resolved (the caller
    bounds the lookup with a timeout: it runs in an executor)."""
    from planner_service.fleet.discovery import split_host_port, system_resolver

    host, port = split_host_port(target)
    try:
        answer = (resolver or system_resolver)(host, port)
    except OSError as exc:
        log.warning("cannot resolve planner %s (%s); using the name as is", target, exc)
        return [target]
    return answer or [target]


def next_delay(interval: float | None, failures: int, rng: random.Random) -> tuple[float, int]:
    """Seconds until the next round and the failure count: a little before the planner's interval
    (jittered: the lease never lapses), or jittered exponential backoff when no planner answered."""
    if interval is None:
        failures += 1
        return rng.uniform(0, min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** min(failures, 10))), failures
    return interval * rng.uniform(0.8, 1.0), 0


async def register_once(
    planners: list[str], clients: dict[str, AsyncFleetClient], address: str, host: str, agent_instance_id: str,
    token: str | None, timeout_seconds: float, labels: dict[str, str] | None = None, tls: PlannerTls = NO_TLS,
) -> float | None:
    """Register with each planner; the smallest interval any of them asked for (None if all failed)."""
    intervals: list[float] = []
    for planner in planners:
        client = clients.get(planner)
        if client is None:
            client = clients[planner] = AsyncFleetClient(planner, token=token, **tls.client_kwargs())
        try:
            reply = await client.register_agent(address, host, agent_instance_id, labels, timeout_seconds=timeout_seconds)
            intervals.append(reply.heartbeat_interval_seconds)
        except SdkError as exc:
            log.warning("registration with planner %s failed: %s", planner, exc)
    for gone in sorted(set(clients) - set(planners)):
        await clients.pop(gone).close()
    return min(intervals) if intervals else None


async def heartbeat_loop(
    planner: str,
    *,
    advertise_address: str,
    host: str,
    agent_instance_id: str = "",
    token: str | None = None,
    labels: dict[str, str] | None = None,
    resolver: Resolver | None = None,
    timeout_seconds: float = 5.0,
    rng: random.Random | None = None,
    tls: PlannerTls = NO_TLS,
) -> None:
    """Register every heartbeat interval until cancelled."""
    rng = rng or random.Random()
    clients: dict[str, AsyncFleetClient] = {}
    failures = 0
    try:
        while True:
            planners = await _resolve(planner, resolver, timeout_seconds)
            interval = await register_once(planners, clients, advertise_address, host, agent_instance_id, token, timeout_seconds,
                                           labels, tls)
            delay, failures = next_delay(interval, failures, rng)
            await asyncio.sleep(delay)
    finally:
        for client in clients.values():
            await client.close()


async def _resolve(planner: str, resolver: Resolver | None, timeout_seconds: float) -> list[str]:
    loop = asyncio.get_running_loop()
    # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that arrives as the
    # lookup finishes, and the loop then kept reporting after it was cancelled (seen in a test run).
    try:
        async with asyncio.timeout(timeout_seconds):
            return await loop.run_in_executor(None, resolve_planners, planner, resolver)
    except TimeoutError:
        return [planner]


class _Reporter:
    """What one agent tells its planners: the inventory each one holds (by generation), and which
    planners only know RegisterAgent."""

    def __init__(self, collector: "Collector", address: str, host: str, agent_instance_id: str, token: str | None,
                 labels: dict[str, str] | None, timeout_seconds: float, tls: PlannerTls = NO_TLS) -> None:
        self.collector = collector
        self.tls = tls
        self.address, self.host, self.instance, self.token = address, host, agent_instance_id, token
        self.labels = labels
        self.timeout_seconds = timeout_seconds
        self.clients: dict[str, AsyncFleetClient] = {}
        self.acknowledged: dict[str, int] = {}  # planner -> inventory generation it holds
        self.dial_only: set[str] = set()
        self._encoded: tuple[int, object] | None = None  # (generation, HostInventory proto), shared by planners

    def _inventory(self, snapshot, generation: int):  # noqa: ANN001, ANN202
        from gpu_agent.convert import inventory_to_proto

        if self._encoded is None or self._encoded[0] != generation:
            self._encoded = (generation, inventory_to_proto(snapshot))
        return self._encoded[1]

    async def report(self, planner: str) -> float:
        """One report to ``planner`` (two when it asks for the inventory); its heartbeat interval."""
        client = self.clients.get(planner)
        if client is None:
            client = self.clients[planner] = AsyncFleetClient(planner, token=self.token, channel_options=REPORT_CHANNEL_OPTIONS,
                                                              **self.tls.client_kwargs())
        if planner in self.dial_only:
            reply = await client.register_agent(self.address, self.host, self.instance, self.labels, timeout_seconds=self.timeout_seconds)
            return reply.heartbeat_interval_seconds
        common = dict(address=self.address, host=self.host, agent_instance_id=self.instance, labels=self.labels,
                      timeout_seconds=self.timeout_seconds)
        generation = self.collector.generation  # read before the snapshot: a newer snapshot is sent again later
        snapshot = self.collector.snapshot()
        try:
            if snapshot is not None and self.acknowledged.get(planner) != generation:
                answer = await client.report_inventory(inventory=self._inventory(snapshot, generation), inventory_generation=generation, **common)
                self.acknowledged[planner] = generation
                return answer.heartbeat_interval_seconds
            from gpu_agent.convert import heartbeat_to_proto

            reason = None if snapshot is not None else (self.collector.last_error or "first collection still running")
            beat = heartbeat_to_proto(datetime.now(timezone.utc), snapshot, reason)
            answer = await client.report_inventory(heartbeat=beat, inventory_generation=generation, **common)
            if answer.inventory_wanted and snapshot is not None:
                answer = await client.report_inventory(inventory=self._inventory(snapshot, generation), inventory_generation=generation, **common)
                self.acknowledged[planner] = generation
            return answer.heartbeat_interval_seconds
        except Unimplemented:
            log.warning("planner %s has no ReportInventory: registering to be dialled instead", planner)
            self.dial_only.add(planner)
            return await self.report(planner)

    async def close(self, keep: set[str] | None = None) -> None:
        for gone in sorted(set(self.clients) - (keep or set())):
            self.acknowledged.pop(gone, None)
            await self.clients.pop(gone).close()


async def report_loop(
    planner: str,
    *,
    collector: "Collector",
    changes: "ChangeSignal",
    advertise_address: str,
    host: str,
    agent_instance_id: str = "",
    token: str | None = None,
    labels: dict[str, str] | None = None,
    resolver: Resolver | None = None,
    timeout_seconds: float = 5.0,
    rng: random.Random | None = None,
    tls: PlannerTls = NO_TLS,
) -> None:
    """Push mode: report to every planner at each change of the snapshot (content or freshness) and at
    least every heartbeat interval the planners ask for, until cancelled."""
    rng = rng or random.Random()
    reporter = _Reporter(collector, advertise_address, host, agent_instance_id, token, labels, timeout_seconds, tls)
    failures = 0
    try:
        while True:
            changed = changes.current()  # taken before reading the snapshot, so no change is missed
            planners = await _resolve(planner, resolver, timeout_seconds)
            intervals: list[float] = []
            for target in planners:
                try:
                    intervals.append(await reporter.report(target))
                except SdkError as exc:
                    reporter.acknowledged.pop(target, None)  # unknown what it holds: send the inventory again
                    log.warning("report to planner %s failed: %s", target, exc)
            await reporter.close(keep=set(planners))
            delay, failures = next_delay(min(intervals) if intervals else None, failures, rng)
            try:  # a change (new content, stale, recovered) is reported at once
                async with asyncio.timeout(delay):  # (not wait_for: see _resolve)
                    await changed.wait()
            except TimeoutError:
                pass
    finally:
        await reporter.close()


def start_registration(
    planner: str, *, advertise_address: str, host: str | None = None, agent_instance_id: str = "", token: str | None = None,
    labels: dict[str, str] | None = None, mode: str = "push", collector: "Collector | None" = None,
    changes: "ChangeSignal | None" = None, tls: PlannerTls = NO_TLS,
) -> asyncio.Task[None]:
    """Start reporting (``push``, needs the collector and its change signal) or registering (``dial``)
    as a task of the running loop (cancel it on shutdown)."""
    host = host or socket.gethostname()
    if mode == "push":
        if collector is None or changes is None:
            raise ValueError("push mode reports the collector's snapshots: pass collector and changes")
        loop = report_loop(planner, collector=collector, changes=changes, advertise_address=advertise_address, host=host,
                           agent_instance_id=agent_instance_id, token=token, labels=labels, tls=tls)
    else:
        loop = heartbeat_loop(planner, advertise_address=advertise_address, host=host,
                              agent_instance_id=agent_instance_id, token=token, labels=labels, tls=tls)
    return asyncio.create_task(loop, name="register-with-planner")
