"""One ``WatchInventory`` stream per agent, reconnecting with exponential backoff and full jitter.

The stream itself is opened by an injected ``StreamOpener`` (``inventory_adapter.agent_stream`` in
production: the agent SDK plus the inventory -> ``FleetHost`` conversion), so this module only knows
the lifecycle: every message refreshes the registry (READY); an error or the end of the stream marks
the host STALE and schedules a reconnect after ``uniform(0, min(max, initial x 2^attempt))`` seconds
(full jitter keeps a restarted planner from reconnecting to thousands of agents in lockstep).
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import AsyncIterator, Callable, Iterable

from planner_service.fleet.models import FleetHost
from planner_service.fleet.registry import FleetRegistry, FleetTimings

log = logging.getLogger(__name__)

StreamOpener = Callable[[str], AsyncIterator[FleetHost]]


def backoff_seconds(attempt: int, timings: FleetTimings, rng: random.Random) -> float:
    ceiling = min(timings.backoff_max_seconds, timings.backoff_initial_seconds * (2 ** min(attempt, 30)))
    return rng.uniform(0, ceiling)


async def watch_agent(
    address: str, registry: FleetRegistry, open_stream: StreamOpener, rng: random.Random | None = None
) -> None:
    """Keep a stream to ``address`` open until cancelled, feeding every inventory into the registry."""
    rng = rng or random.Random()
    attempt = 0
    while True:
        try:
            async for inventory in open_stream(address):
                registry.update(address, inventory)
                attempt = 0
            reason = "inventory stream ended"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any stream failure means "agent unknown", never "no GPUs"
            reason = f"stream failed: {type(exc).__name__}: {_short(exc)}"
        registry.mark_broken(address, reason)
        delay = backoff_seconds(attempt, registry.timings, rng)
        log.debug("agent %s: %s; reconnecting in %.2fs", address, reason, delay)
        attempt += 1
        await asyncio.sleep(delay)


def _short(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    text = details() if callable(details) else str(exc)
    return " ".join(str(text).split())[:200]


class WatcherPool:
    """The set of running watch tasks, reconciled against the registry's discovery targets."""

    def __init__(self, registry: FleetRegistry, open_stream: StreamOpener, seed: int | None = None) -> None:
        self._registry = registry
        self._open = open_stream
        self._rng = random.Random(seed)
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def reconcile(self, addresses: Iterable[str]) -> None:
        wanted = set(addresses)
        for address in sorted(set(self._tasks) - wanted):
            self._tasks.pop(address).cancel()
            self._registry.mark_broken(address, "no longer discovered")
        for address in sorted(wanted - set(self._tasks)):
            rng = random.Random(self._rng.random())
            self._tasks[address] = asyncio.create_task(
                watch_agent(address, self._registry, self._open, rng), name=f"watch-agent {address}"
            )

    @property
    def addresses(self) -> list[str]:
        return sorted(self._tasks)

    async def close(self, timeout_seconds: float = 5.0) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        if tasks:  # bounded: a stream stuck in the transport must not hold up shutdown
            _, pending = await asyncio.wait(tasks, timeout=timeout_seconds)
            if pending:
                log.warning("%d agent stream(s) did not stop within %.1fs", len(pending), timeout_seconds)
