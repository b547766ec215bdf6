"""The planner's live view of the fleet: soft state keyed by agent address, with a clock.

Nothing here is durable on purpose. Every entry is derived from two inputs that every planner replica
sees alike: the discovery targets (static list, DNS answers, unexpired registrations) and the latest
inventory each agent streamed. A restarted or additional replica rebuilds the same view by watching
the same agents, so replicas behind one address give the same answers and there is nothing to back
up or restore. Staleness is judged from the time since the last inventory message:

    READY --(stream broke, or no message for stale_after)--> STALE --(gone_after)--> GONE --(evict_after)--> removed
    STALE --(a message saying the agent's snapshot is fresh)--> READY

Every change bumps the fleet ``revision`` and stamps it on the host, and a removed host leaves a
tombstone (the last ``max_tombstones``), so a WatchFleet client can resume from the revision it saw
last (``changes_since``) instead of re-reading the whole fleet. ``vllm_planner_fleet_hosts{state}``
follows every state change.

Single-threaded: called only from the planner's event loop (the async adapters and the servicer).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

from pydantic import BaseModel, ConfigDict, Field

from planner_service.fleet.models import DiscoverySource, FleetHost, HostFilter, HostState
from vllm_planner.transport import metrics

log = logging.getLogger(__name__)
SUBSCRIBER_QUEUE = 10_000


class FleetTimings(BaseModel):
    """Every interval of the fleet machinery (tests shrink them to fractions of a second)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    heartbeat_interval_seconds: float = Field(default=10.0, gt=0, description="Agents re-register this often.")
    max_reports_per_second: float = Field(
        default=200.0, gt=0,
        description="Heartbeats the planner paces its agents to, all together: past heartbeat_interval_seconds times "
                    "this many agents, the interval, lease and staleness grow in proportion (Nomad's "
                    "max_heartbeats_per_second). A report costs the planner ~1.3 ms of CPU (benchmarks/README.md).")
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
    revision: int = 0
    last_input: FleetHost | None = None  # the stream's last object (heartbeats repeat it)


@dataclass(frozen=True)
class FleetEvent:
    host: FleetHost
    removed: bool = False


class Subscription:
    """A WatchFleet subscriber's queue; ``lagged`` when it fell ``SUBSCRIBER_QUEUE`` events behind
    (events were dropped: the stream must start over with a full snapshot)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[FleetEvent] = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE)
        self.lagged = False

    def put(self, event: FleetEvent) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            if not self.lagged:
                log.warning("a WatchFleet subscriber fell %d events behind: it will be re-sent the fleet", SUBSCRIBER_QUEUE)
            self.lagged = True

    async def get(self) -> FleetEvent:
        return await self.queue.get()

    def reset(self) -> None:
        """Drop what is queued (a full snapshot follows) and clear the lag."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.lagged = False


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
    def __init__(self, timings: FleetTimings | None = None, clock: Callable[[], float] = time.monotonic,
                 max_tombstones: int = 10_000) -> None:
        self.timings = timings or FleetTimings()
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._subscribers: set[Subscription] = set()
        self._snapshot: tuple[FleetHost, ...] | None = None
        self._keys: list[tuple[str, str]] | None = None
        self.revision = 0
        # Removed hosts as (revision, last view), oldest first; resuming from before the oldest one
        # dropped (``_tombstone_floor``) is impossible.
        self._tombstones: deque[tuple[int, FleetHost]] = deque()
        self._max_tombstones = max_tombstones
        self._tombstone_floor = 0
        self._state_counts: dict[HostState, int] = {state: 0 for state in HostState}
        self._publish_counts()
        # >= 1: how much longer than configured the heartbeat interval, leases and staleness are now, so
        # that the agents' heartbeats together stay under ``max_reports_per_second`` (set by Registrations).
        self.pacing = 1.0

    # -- discovery side ---------------------------------------------------------------------------

    def add_target(self, address: str, source: DiscoverySource) -> bool:
        """Note that ``source`` names this agent address; True if the address is new."""
        entry = self._entries.get(address)
        if entry is None:
            placeholder = FleetHost(host=address, address=address, state=HostState.CONNECTING)
            entry = _Entry(address, placeholder, state_since=self._clock())
            self._entries[address] = entry
            self._count(None, HostState.CONNECTING)
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
        """Addresses some discovery source still names, except agents that push their reports: the
        ones to keep watching."""
        return sorted(a for a, e in self._entries.items() if e.sources and DiscoverySource.REPORTED not in e.sources)

    def last_input(self, address: str) -> FleetHost | None:
        """The last inventory-built host the agent at ``address`` delivered (None before the first)."""
        entry = self._entries.get(address)
        return None if entry is None else entry.last_input

    # -- stream side ------------------------------------------------------------------------------

    def update(self, address: str, inventory: FleetHost) -> None:
        """An inventory (or heartbeat) from the agent at ``address``: READY, or STALE when the agent
        says its own snapshot is stale (hung driver: alive, but not placeable); a fresh message after
        stale ones makes the host READY again at once."""
        entry = self._entries.get(address)
        if entry is None:  # a stream outlived its discovery entry (evicted meanwhile): recreate it
            entry = _Entry(address, FleetHost(host=address, address=address, state=HostState.CONNECTING))
            self._entries[address] = entry
            self._count(None, HostState.CONNECTING)
        now = self._clock()
        entry.last_update = now
        state = HostState.STALE if inventory.state is HostState.STALE else HostState.READY
        reason = inventory.state_reason if state is HostState.STALE else None
        if inventory is entry.last_input and entry.host.state is state and entry.host.state_reason == reason:
            return  # a heartbeat repeating what we have: only the age changes
        entry.last_input = inventory
        changed = entry.host.state is not state or entry.host.state_reason != reason or _content(entry.host) != _content(inventory)
        if entry.host.state is not state:
            entry.state_since = now
            self._count(entry.host.state, state)
            log.info("host %s (%s): %s -> %s%s", inventory.host, address, entry.host.state.value, state.value,
                     f" ({reason})" if reason else "")
        if inventory.address == address and inventory.state is state and inventory.state_reason == reason:
            entry.host = inventory  # the stream already built it as we keep it: no copy per host
        else:
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
        stale_after = t.stale_after_seconds * self.pacing
        for address in sorted(self._entries):
            entry = self._entries[address]
            state = entry.host.state
            age = now - (entry.last_update if entry.last_update is not None else entry.state_since)
            in_state = now - entry.state_since
            if state is HostState.READY and age > stale_after:
                self._set_state(entry, HostState.STALE, f"no inventory for {age:.1f}s")
            elif state is HostState.CONNECTING and in_state > stale_after:
                self._set_state(entry, HostState.STALE, "never connected")
            elif state is HostState.STALE and in_state > t.gone_after_seconds:
                self._set_state(entry, HostState.GONE, entry.host.state_reason)
            elif state is HostState.GONE and in_state > t.evict_after_seconds and not entry.sources:
                del self._entries[address]
                self._count(HostState.GONE, None)
                self._publish(entry, removed=True)

    # -- queries ----------------------------------------------------------------------------------

    def hosts(self, flt: HostFilter | None = None) -> list[FleetHost]:
        """Current hosts sorted by hostname then address (deterministic), with update ages."""
        return self.with_ages(h for h in self.snapshot() if flt is None or matches(h, flt))

    def page(self, flt: HostFilter | None, after: tuple[str, str] | None, size: int) -> tuple[list[FleetHost], tuple[str, str] | None, int]:
        """One page of ``hosts(flt)``: up to ``size`` hosts sorted after the key ``after`` (host,
        address), the key to continue from (None on the last page) and how many match in all."""
        snapshot = self.snapshot()
        keys = self._keys or []
        start = 0 if after is None else bisect.bisect_right(keys, after)
        matched = snapshot if flt is None else [h for h in snapshot if matches(h, flt)]
        total = len(matched)
        if flt is None:
            window = list(snapshot[start : start + size + 1])
        else:
            window = [h for h in matched if after is None or (h.host, h.address) > after][: size + 1]
        more = len(window) > size
        window = window[:size]
        next_key = (window[-1].host, window[-1].address) if more and window else None
        return self.with_ages(window), next_key, total

    def with_ages(self, views: Iterable[FleetHost]) -> list[FleetHost]:
        """Placement views with their entry's current update age (for listing)."""
        now = self._clock()
        out = []
        for view in views:
            entry = self._entries.get(view.address)
            age = None if entry is None or entry.last_update is None else round(now - entry.last_update, 3)
            out.append(view.model_copy(update={"last_update_age_seconds": age}) if age is not None else view)
        return out

    def changes_since(self, revision: int) -> list[FleetEvent] | None:
        """Every host changed after ``revision`` (current views) and every host removed since
        (tombstones), in revision order; None when the history no longer reaches back that far."""
        if revision < self._tombstone_floor or revision > self.revision:
            return None
        changed = [(v.revision, FleetEvent(v)) for v in self.snapshot() if v.revision > revision]
        removed = [(rev, FleetEvent(view, removed=True)) for rev, view in self._tombstones
                   if rev > revision and view.address not in self._entries]
        return [event for _, event in sorted(changed + removed, key=lambda item: item[0])]

    def snapshot(self) -> tuple[FleetHost, ...]:
        """All hosts for placement (no ages), rebuilt only after a change, reusing the unchanged hosts'
        objects: Place on a large fleet would otherwise copy every host record on every call."""
        if self._snapshot is None:
            for entry in self._entries.values():
                if entry.view is None:
                    entry.view = self._view(entry, None)
            views = (e.view for e in self._entries.values())
            self._snapshot = tuple(sorted(views, key=lambda h: (h.host, h.address)))
            self._keys = [(h.host, h.address) for h in self._snapshot]
        return self._snapshot

    def get(self, name: str) -> FleetHost | None:
        now = self._clock()
        for entry in sorted(self._entries.values(), key=lambda e: e.address):
            if name in (entry.host.host, entry.address):
                return self._view(entry, now)
        return None

    def subscribe(self) -> Subscription:
        subscription = Subscription()
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    def state_counts(self) -> dict[HostState, int]:
        return dict(self._state_counts)

    def __len__(self) -> int:
        return len(self._entries)

    # -- internals --------------------------------------------------------------------------------

    def _view(self, entry: _Entry, now: float | None) -> FleetHost:
        age = None if entry.last_update is None or now is None else round(now - entry.last_update, 3)
        update: dict = {"sources": tuple(sorted(entry.sources, key=lambda s: s.value)), "last_update_age_seconds": age,
                        "revision": entry.revision}
        if entry.labels:  # what the agent registered with; facts from the inventory win a conflict
            update["labels"] = {**entry.labels, **entry.host.labels}
        return entry.host.model_copy(update=update)

    def _set_state(self, entry: _Entry, state: HostState, reason: str | None) -> None:
        log.info("host %s (%s): %s -> %s (%s)", entry.host.host, entry.address, entry.host.state.value, state.value, reason)
        self._count(entry.host.state, state)
        entry.host = entry.host.model_copy(update={"state": state, "state_reason": reason})
        entry.state_since = self._clock()
        self._publish(entry)

    def _count(self, old: HostState | None, new: HostState | None) -> None:
        for state, delta in ((old, -1), (new, 1)):
            if state is not None:
                self._state_counts[state] += delta
                metrics.FLEET_HOSTS.labels(state=state.value).set(self._state_counts[state])

    def _publish_counts(self) -> None:
        for state, count in self._state_counts.items():
            metrics.FLEET_HOSTS.labels(state=state.value).set(count)

    def _publish(self, entry: _Entry, removed: bool = False) -> None:
        # Every change is published: the placement snapshot is rebuilt lazily, and only this entry's
        # view is new, so placement memos keyed on the other hosts' views stay valid.
        self.revision += 1
        entry.revision = self.revision
        entry.view = None
        self._snapshot = None
        self._keys = None
        view = self._view(entry, self._clock()) if removed or self._subscribers else None
        if removed and view is not None:
            self._tombstones.append((self.revision, view))
            while len(self._tombstones) > self._max_tombstones:
                self._tombstone_floor = self._tombstones.popleft()[0]
        if not self._subscribers or view is None:
            return
        event = FleetEvent(view, removed)
        for subscription in list(self._subscribers):
            subscription.put(event)  # a stuck watcher is marked lagged rather than stalling the fleet


def _content(host: FleetHost) -> tuple:
    return (host.host, host.gpus, tuple(sorted(host.labels.items())), host.agent_instance_id, host.driver_version)
