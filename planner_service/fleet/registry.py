"""The planner's live view of the fleet: soft state keyed by agent address, with a clock.

Nothing here is durable on purpose. Every entry is derived from two inputs that every planner replica
sees alike: the discovery targets (static list, DNS answers, unexpired registrations) and the latest
inventory each agent streamed. A restarted or additional replica rebuilds the same view by watching
the same agents, so replicas behind one address give the same answers and there is nothing to back
up or restore. Staleness is judged from the time since the last inventory message:

    READY --(stream broke, or no message for stale_after)--> STALE --(gone_after)--> GONE --(evict_after)--> removed

Single-threaded: called only from the planner's event loop (the async adapters and the servicer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field

from planner_service.fleet.models import DiscoverySource, FleetHost, HostFilter, HostState

log = logging.getLogger(__name__)


class FleetTimings(BaseModel):
    """Every interval of the fleet machinery (tests shrink them to fractions of a second)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    heartbeat_interval_seconds: float = Field(default=10.0, gt=0, description="Agents re-register this often.")
    registration_lease_seconds: float = Field(default=30.0, gt=0, description="A registration lapses after this.")
    stale_after_seconds: float = Field(default=30.0, gt=0, description="No inventory for this long: STALE.")
    gone_after_seconds: float = Field(default=120.0, gt=0, description="STALE for this long: GONE.")
    evict_after_seconds: float = Field(default=600.0, gt=0, description="GONE for this long: forgotten.")
    dns_refresh_seconds: float = Field(default=30.0, gt=0)
    dns_timeout_seconds: float = Field(default=2.0, gt=0)
    backoff_initial_seconds: float = Field(default=0.5, gt=0)
    backoff_max_seconds: float = Field(default=30.0, gt=0)
    sweep_interval_seconds: float = Field(default=1.0, gt=0)


@dataclass
class _Entry:
    address: str
    host: FleetHost
    sources: set[DiscoverySource] = field(default_factory=set)
    labels: dict[str, str] = field(default_factory=dict)  # from the registration, over inventory labels
    view: FleetHost | None = None  # cached placement view; None after any change to this entry
    last_update: float | None = None
    state_since: float = 0.0


@dataclass(frozen=True)
class FleetEvent:
    host: FleetHost
    removed: bool = False


def matches(host: FleetHost, flt: HostFilter) -> bool:
    """ListHosts/WatchFleet filter semantics (all given constraints must hold)."""
    if flt.states and host.state not in flt.states:
        return False
    if flt.hosts and host.host not in flt.hosts and host.address not in flt.hosts:
        return False
    if any(host.labels.get(k) != v for k, v in flt.labels.items()):
        return False
    gpus = host.gpus
    if flt.gpu_types:
        gpus = tuple(g for g in gpus if any(t.lower() in g.name.lower() for t in flt.gpu_types))
    if flt.gpu_uuids:
        gpus = tuple(g for g in gpus if g.uuid in flt.gpu_uuids)
    if (flt.gpu_types or flt.gpu_uuids) and not gpus:
        return False
    if flt.min_free_memory_bytes is not None:
        if not any(g.memory_free_bytes >= flt.min_free_memory_bytes and not g.mig_enabled for g in gpus):
            return False
    return True


class FleetRegistry:
    def __init__(self, timings: FleetTimings | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.timings = timings or FleetTimings()
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._subscribers: set[asyncio.Queue[FleetEvent]] = set()
        self._snapshot: tuple[FleetHost, ...] | None = None

    # -- discovery side ---------------------------------------------------------------------------

    def add_target(self, address: str, source: DiscoverySource) -> bool:
        """Note that ``source`` names this agent address; True if the address is new."""
        entry = self._entries.get(address)
        if entry is None:
            placeholder = FleetHost(host=address, address=address, state=HostState.CONNECTING)
            entry = _Entry(address, placeholder, state_since=self._clock())
            self._entries[address] = entry
            entry.sources.add(source)
            self._publish(entry)
            return True
        if source not in entry.sources:
            entry.sources.add(source)
            self._publish(entry)
        return False

    def remove_target(self, address: str, source: DiscoverySource) -> None:
        entry = self._entries.get(address)
        if entry is None or source not in entry.sources:
            return
        entry.sources.discard(source)
        self._publish(entry)

    def set_labels(self, address: str, labels: dict[str, str]) -> None:
        entry = self._entries.get(address)
        if entry is not None and entry.labels != labels:
            entry.labels = dict(labels)
            self._publish(entry)

    def targets(self) -> list[str]:
        """Addresses some discovery source still names (the ones to keep watching)."""
        return sorted(a for a, e in self._entries.items() if e.sources)

    # -- stream side ------------------------------------------------------------------------------

    def update(self, address: str, inventory: FleetHost) -> None:
        """A fresh inventory (or heartbeat) from the agent at ``address``: the host is READY."""
        entry = self._entries.get(address)
        if entry is None:  # a stream outlived its discovery entry (evicted meanwhile): recreate it
            entry = _Entry(address, inventory)
            self._entries[address] = entry
        now = self._clock()
        # The agent itself may say its snapshot is stale (hung driver): alive, but not placeable.
        state = HostState.STALE if inventory.state is HostState.STALE else HostState.READY
        reason = inventory.state_reason if state is HostState.STALE else None
        changed = entry.host.state is not state or _content(entry.host) != _content(inventory)
        entry.last_update = now
        if entry.host.state is not state:
            entry.state_since = now
        entry.host = inventory.model_copy(update={"address": address, "state": state, "state_reason": reason})
        if changed:
            self._publish(entry)

    def mark_broken(self, address: str, reason: str) -> None:
        """The stream to this agent ended or failed: it is no placement candidate until it is back."""
        entry = self._entries.get(address)
        if entry is None or entry.host.state in (HostState.STALE, HostState.GONE):
            return
        self._set_state(entry, HostState.STALE, reason)

    def sweep(self) -> None:
        """Apply the time-based transitions (call every ``sweep_interval_seconds``)."""
        now = self._clock()
        t = self.timings
        for address in sorted(self._entries):
            entry = self._entries[address]
            state = entry.host.state
            age = now - (entry.last_update if entry.last_update is not None else entry.state_since)
            in_state = now - entry.state_since
            if state is HostState.READY and age > t.stale_after_seconds:
                self._set_state(entry, HostState.STALE, f"no inventory for {age:.1f}s")
            elif state is HostState.CONNECTING and in_state > t.stale_after_seconds:
                self._set_state(entry, HostState.STALE, "never connected")
            elif state is HostState.STALE and in_state > t.gone_after_seconds:
                self._set_state(entry, HostState.GONE, entry.host.state_reason)
            elif state is HostState.GONE and in_state > t.evict_after_seconds and not entry.sources:
                del self._entries[address]
                self._publish(entry, removed=True)

    # -- queries ----------------------------------------------------------------------------------

    def hosts(self, flt: HostFilter | None = None) -> list[FleetHost]:
        """Current hosts sorted by hostname then address (deterministic), with update ages."""
        now = self._clock()
        out = [self._view(e, now) for e in self._entries.values()]
        if flt is not None:
            out = [h for h in out if matches(h, flt)]
        return sorted(out, key=lambda h: (h.host, h.address))

    def snapshot(self) -> tuple[FleetHost, ...]:
        """All hosts for placement (no ages), rebuilt only after a change, reusing the unchanged hosts'
        objects: Place on a large fleet would otherwise copy every host record on every call."""
        if self._snapshot is None:
            for entry in self._entries.values():
                if entry.view is None:
                    entry.view = self._view(entry, None)
            views = (e.view for e in self._entries.values())
            self._snapshot = tuple(sorted(views, key=lambda h: (h.host, h.address)))
        return self._snapshot

    def get(self, name: str) -> FleetHost | None:
        now = self._clock()
        for entry in sorted(self._entries.values(), key=lambda e: e.address):
            if name in (entry.host.host, entry.address):
                return self._view(entry, now)
        return None

    def subscribe(self) -> asyncio.Queue[FleetEvent]:
        queue: asyncio.Queue[FleetEvent] = asyncio.Queue(maxsize=10_000)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[FleetEvent]) -> None:
        self._subscribers.discard(queue)

    def __len__(self) -> int:
        return len(self._entries)

    # -- internals --------------------------------------------------------------------------------

    def _view(self, entry: _Entry, now: float | None) -> FleetHost:
        age = None if entry.last_update is None or now is None else round(now - entry.last_update, 3)
        update: dict = {"sources": tuple(sorted(entry.sources, key=lambda s: s.value)), "last_update_age_seconds": age}
        if entry.labels:
            update["labels"] = {**entry.host.labels, **entry.labels}
        return entry.host.model_copy(update=update)

    def _set_state(self, entry: _Entry, state: HostState, reason: str | None) -> None:
        log.info("host %s (%s): %s -> %s (%s)", entry.host.host, entry.address, entry.host.state.value, state.value, reason)
        entry.host = entry.host.model_copy(update={"state": state, "state_reason": reason})
        entry.state_since = self._clock()
        self._publish(entry)

    def _publish(self, entry: _Entry, removed: bool = False) -> None:
        # Every change is published: the placement snapshot is rebuilt lazily, and only this entry's
        # view is new, so placement memos keyed on the other hosts' views stay valid.
        entry.view = None
        self._snapshot = None
        if not self._subscribers:
            return
        event = FleetEvent(self._view(entry, self._clock()), removed)
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:  # a stuck watcher loses events rather than stalling the fleet
                log.warning("dropping fleet event for a slow WatchFleet subscriber")


def _content(host: FleetHost) -> tuple:
    return (host.host, host.gpus, tuple(sorted(host.labels.items())), host.agent_instance_id, host.driver_version)
