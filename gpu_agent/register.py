"""``gpu-agent --register-with PLANNER``: announce this agent to the planner(s), as a heartbeat.

Each round resolves PLANNER (``HOST:PORT``) to every address it names and calls ``RegisterAgent``
on each one, so when several planner replicas sit behind one DNS name (a Kubernetes headless
Service) every replica holds this agent's lease and they all watch it (no replica-only state). The
planner answers with the heartbeat interval it wants; a failed call is retried next round with
jittered backoff. The planner then opens the agent's ``WatchInventory`` stream itself.

Hook in ``gpu_agent/main.py`` (after the server is listening)::

    if settings.register_with:
        task = start_registration(settings.register_with, advertise_address=..., host=socket.gethostname(),
                                  agent_instance_id=..., token=...)
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from typing import Callable

from clients.sdk.errors import SdkError
from clients.sdk.fleet_client import AsyncFleetClient

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], list[str]]
MAX_BACKOFF_SECONDS = 60.0


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


async def register_once(
    planners: list[str], clients: dict[str, AsyncFleetClient], address: str, host: str, agent_instance_id: str,
    token: str | None, timeout_seconds: float, labels: dict[str, str] | None = None,
) -> float | None:
    """Register with each planner; the smallest interval any of them asked for (None if all failed)."""
    intervals: list[float] = []
    for planner in planners:
        client = clients.get(planner)
        if client is None:
            client = clients[planner] = AsyncFleetClient(planner, token=token)
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
) -> None:
    """Register every heartbeat interval until cancelled."""
    rng = rng or random.Random()
    clients: dict[str, AsyncFleetClient] = {}
    failures = 0
    try:
        while True:
            loop = asyncio.get_running_loop()
            try:
                planners = await asyncio.wait_for(loop.run_in_executor(None, resolve_planners, planner, resolver), timeout_seconds)
            except asyncio.TimeoutError:
                planners = [planner]
            interval = await register_once(planners, clients, advertise_address, host, agent_instance_id, token, timeout_seconds, labels)
            if interval is None:
                failures += 1
                delay = rng.uniform(0, min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** min(failures, 10)))
            else:
                failures = 0
                delay = interval * rng.uniform(0.8, 1.0)  # a little early, jittered: the lease never lapses
            await asyncio.sleep(delay)
    finally:
        for client in clients.values():
            await client.close()


def start_registration(
    planner: str, *, advertise_address: str, host: str | None = None, agent_instance_id: str = "", token: str | None = None,
    labels: dict[str, str] | None = None,
) -> asyncio.Task[None]:
    """Start the heartbeat as a task of the running loop (cancel it on shutdown)."""
    return asyncio.create_task(
        heartbeat_loop(planner, advertise_address=advertise_address, host=host or socket.gethostname(),
                       agent_instance_id=agent_instance_id, token=token, labels=labels),
        name="register-with-planner",
    )
