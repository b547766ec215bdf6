"""Holds on GPU memory: what a ``Place`` or ``PlanFleet`` answer chose stays out of later answers.

Without a hold, two schedulers calling ``Place`` at once are both told the same free memory. With
``reserve_seconds``, the placements an answer selects are recorded as holds (one per placement and
GPU, of that placement's ``reserved_bytes``); every later answer sees each GPU's free memory minus
its active holds. A hold ends when:

- it expires (``reserve_seconds`` after the answer),
- ``ReleaseReservation`` releases its reservation, or
- it is *consumed*: the agent reports the memory in use, or the GPU allocated to a pod. Holds on one
  GPU are consumed oldest first, by how far the GPU's free memory fell below what it was when the
  oldest of them was made (a hold is consumed by a fall of at least its vLLM claim, the reserved
  bytes less the CUDA-context margin), so a second hold on the same GPU is not mistaken for started.
  From then on the live free memory already accounts for it.

Concurrency: placement runs in worker threads. ``ReservationBook.lock`` serialises "apply the holds
to the fleet view, choose, record the holds" for every call that reserves, so two concurrent callers
can never be given overlapping memory on one GPU; calls that only read apply the holds under the
lock too and never wait for a long computation. The book is in-process state of one planner: the
deployment runs one planner replica, which owns the reservations (a restart drops them; they are
seconds to minutes long by design).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable, Sequence

from planner_service.engine.errors import InvalidRequestError, ReservationNotFoundError, ResourceExhaustedError
from planner_service.fleet.models import FleetHost, Hold, Placement, Reservation, ReservationState

MAX_RESERVE_SECONDS = 3600.0
MAX_RESERVATIONS = 10_000


@dataclass
class _Hold:
    host: str
    address: str
    gpu_uuid: str
    held_bytes: int
    claim_bytes: int  # the fall in free memory that shows this placement's vLLM started
    free_at_hold: int  # the GPU's live free memory when the hold was made
    made_at: float
    order: int
    consumed: bool = False


@dataclass
class _Reservation:
    reservation_id: str
    deployment: str
    expires_at: float  # monotonic
    expires_wall: datetime
    holds: list[_Hold] = field(default_factory=list)
    state: ReservationState = ReservationState.ACTIVE


def validate_reserve_seconds(value: float, field_name: str = "reserve_seconds") -> float:
    if value != value or value < 0 or value > MAX_RESERVE_SECONDS:  # NaN fails the first test
        raise InvalidRequestError.for_field(field_name, f"must be between 0 and {MAX_RESERVE_SECONDS:g} seconds")
    return float(value)


class ReservationBook:
    def __init__(self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 startup_overhead_bytes: int = 1 << 30, max_reservations: int = MAX_RESERVATIONS) -> None:
        self.lock = threading.RLock()
        self._clock = clock
        self._wall = wall
        self._overhead = startup_overhead_bytes
        self._max = max_reservations
        self._reservations: dict[str, _Reservation] = {}
        self._by_address: dict[str, list[_Hold]] = {}
        self._order = 0
        # address -> (the view it was computed from, the holds' version, the adjusted view)
        self._adjusted: dict[str, tuple[FleetHost, int, FleetHost]] = {}
        self._versions: dict[str, int] = {}

    # -- the view placement sees -----------------------------------------------------------------
    def apply(self, hosts: Sequence[FleetHost]) -> tuple[FleetHost, ...]:
        """``hosts`` with each GPU's active holds taken out of its free memory (call under ``lock``).

        Expires lapsed reservations and marks consumed holds first. Hosts without holds are returned
        as they are (same objects, so placement memos keyed on them stay valid); adjusted copies are
        cached until the host or its holds change."""
        with self.lock:
            self._expire()
            if not self._by_address:  # the same object: placement's whole-ranking memo stays valid
                return hosts if isinstance(hosts, tuple) else tuple(hosts)
            out = []
            for host in hosts:
                holds = self._by_address.get(host.address)
                out.append(self._adjust(host, holds) if holds else host)
            return tuple(out)

    def held_bytes(self, address: str) -> dict[str, int]:
        """GPU UUID -> bytes held now on the host at ``address``."""
        with self.lock:
            held: dict[str, int] = {}
            for hold in self._by_address.get(address, ()):
                if not hold.consumed:
                    held[hold.gpu_uuid] = held.get(hold.gpu_uuid, 0) + hold.held_bytes
            return held

    def _adjust(self, host: FleetHost, holds: list[_Hold]) -> FleetHost:
        self._consume(host, holds)
        version = self._versions.get(host.address, 0)
        cached = self._adjusted.get(host.address)
        if cached is not None and cached[0] is host and cached[1] == version:
            return cached[2]
        held = self.held_bytes(host.address)
        if not held:
            return host
        gpus = tuple(
            g.model_copy(update={"memory_free_bytes": max(0, g.memory_free_bytes - held[g.uuid]), "memory_held_bytes": held[g.uuid]})
            if g.uuid in held else g
            for g in host.gpus
        )
        adjusted = host.model_copy(update={"gpus": gpus})
        self._adjusted[host.address] = (host, version, adjusted)
        return adjusted

    def _consume(self, host: FleetHost, holds: list[_Hold]) -> None:
        """Mark holds whose memory the agent now reports in use (or whose GPU a pod now has)."""
        by_uuid = {g.uuid: g for g in host.gpus}
        per_gpu: dict[str, list[_Hold]] = {}
        for hold in holds:
            if not hold.consumed:
                per_gpu.setdefault(hold.gpu_uuid, []).append(hold)
        changed = False
        for gpu_uuid, pending in per_gpu.items():
            gpu = by_uuid.get(gpu_uuid)
            if gpu is None:
                continue
            pending.sort(key=lambda h: h.order)
            if gpu.allocated_to is not None:
                for hold in pending:
                    hold.consumed = changed = True
                continue
            base = pending[0].free_at_hold
            fallen = base - gpu.memory_free_bytes
            used = 0
            for hold in pending:
                if fallen < hold.claim_bytes:
                    break
                fallen -= hold.claim_bytes
                used += hold.claim_bytes
                hold.consumed = changed = True
            for hold in pending:  # the rest measure from what is left after the started ones
                if not hold.consumed:
                    hold.free_at_hold = base - used
        if changed:
            self._bump(host.address)
            for reservation in self._reservations.values():
                if reservation.state is ReservationState.ACTIVE and reservation.holds and all(h.consumed for h in reservation.holds):
                    reservation.state = ReservationState.CONSUMED
            self._drop_finished()

    # -- making and ending holds -----------------------------------------------------------------
    def reserve(self, deployment: str, placements: Iterable[Placement], hosts: Sequence[FleetHost],
                seconds: float) -> Reservation | None:
        """Hold every placement's memory for ``seconds`` (call under ``lock``, with the same ``hosts``
        view the placements were chosen from, before any other call changes the holds)."""
        placements = list(placements)
        if seconds <= 0 or not placements:
            return None
        with self.lock:
            self._expire()
            if len(self._reservations) >= self._max:
                raise ResourceExhaustedError(f"this planner already holds {self._max} reservations; release some or wait for them to expire")
            live = {h.address: h for h in hosts}
            now = self._clock()
            reservation = _Reservation(
                reservation_id=uuid.uuid4().hex, deployment=deployment, expires_at=now + seconds,
                expires_wall=datetime.fromtimestamp(self._wall() + seconds, tz=timezone.utc),
            )
            for placement in placements:
                host = live.get(placement.address)
                by_uuid = {g.uuid: g for g in host.gpus} if host is not None else {}
                for gpu_uuid in placement.gpu_uuids:
                    gpu = by_uuid.get(gpu_uuid)
                    # The live free memory (the view's free plus what is already held on that GPU),
                    # unless older holds on this GPU are pending: they share the oldest baseline.
                    live_free = (gpu.memory_free_bytes + gpu.memory_held_bytes) if gpu is not None else 0
                    pending = [h for h in self._by_address.get(placement.address, ()) if h.gpu_uuid == gpu_uuid and not h.consumed]
                    self._order += 1
                    hold = _Hold(host=placement.host, address=placement.address, gpu_uuid=gpu_uuid,
                                 held_bytes=placement.reserved_bytes,
                                 claim_bytes=max(placement.reserved_bytes - self._overhead, 1),
                                 free_at_hold=pending[0].free_at_hold if pending else live_free, made_at=now, order=self._order)
                    reservation.holds.append(hold)
                    self._by_address.setdefault(placement.address, []).append(hold)
                self._bump(placement.address)
            self._reservations[reservation.reservation_id] = reservation
            return self._public(reservation)

    def release(self, reservation_id: str) -> Reservation:
        with self.lock:
            self._expire()
            reservation = self._reservations.get(reservation_id)
            if reservation is None or reservation.state is not ReservationState.ACTIVE:
                raise ReservationNotFoundError(f"no active reservation {reservation_id[:64]!r}")
            reservation.state = ReservationState.RELEASED
            for hold in reservation.holds:
                self._bump(hold.address)
            out = self._public(reservation)
            self._drop_finished()
            return out

    def active(self) -> list[Reservation]:
        """Active reservations, soonest expiring first."""
        with self.lock:
            self._expire()
            ordered = sorted(self._reservations.values(), key=lambda r: (r.expires_at, r.reservation_id))
            return [self._public(r) for r in ordered]

    def __len__(self) -> int:
        with self.lock:
            return len(self._reservations)

    # -- internals -------------------------------------------------------------------------------
    def _expire(self) -> None:
        now = self._clock()
        lapsed = [r for r in self._reservations.values() if r.state is ReservationState.ACTIVE and r.expires_at <= now]
        for reservation in lapsed:
            reservation.state = ReservationState.EXPIRED
            for hold in reservation.holds:
                self._bump(hold.address)
        if lapsed:
            self._drop_finished()

    def _drop_finished(self) -> None:
        finished = [rid for rid, r in self._reservations.items() if r.state is not ReservationState.ACTIVE]
        for rid in finished:
            del self._reservations[rid]
        active_holds = {id(h) for r in self._reservations.values() for h in r.holds}
        for address in list(self._by_address):
            kept = [h for h in self._by_address[address] if id(h) in active_holds and not h.consumed]
            if kept:
                self._by_address[address] = kept
            else:
                del self._by_address[address]
                self._adjusted.pop(address, None)

    def _bump(self, address: str) -> None:
        self._versions[address] = self._versions.get(address, 0) + 1

    def _public(self, r: _Reservation) -> Reservation:
        return Reservation(
            reservation_id=r.reservation_id, deployment=r.deployment, expire_time=r.expires_wall,
            expires_in_seconds=round(max(0.0, r.expires_at - self._clock()), 3), state=r.state,
            holds=tuple(Hold(host=h.host, address=h.address, gpu_uuid=h.gpu_uuid, memory_held_bytes=h.held_bytes,
                             consumed=h.consumed) for h in r.holds),
        )
