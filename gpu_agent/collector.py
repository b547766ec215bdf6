"""The one collector thread: refreshes a cached snapshot every interval; serving never waits on it.

Every backend call is bounded twice: each driver call by the backend's ``CallGuard``
(``call_timeout_seconds``), and the whole collection by an outer guard (``collect_timeout_seconds``),
so a backend that hangs outside the guarded calls cannot hang the agent either. A failed or timed-out
collection keeps the previous snapshot; reads then see it marked stale with the reason.
Freshness: stale when the last collection failed or the snapshot is older than
``stale_after_intervals`` x ``interval_seconds``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from gpu_agent.backends import InventoryBackend
from gpu_agent.inventory import HostInventory
from gpu_agent.sanitize import encodable
from gpu_agent.watchdog import CallGuard

log = logging.getLogger(__name__)


class Collector:
    def __init__(
        self,
        backend: InventoryBackend,
        *,
        interval_seconds: float = 10.0,
        call_timeout_seconds: float = 5.0,
        collect_timeout_seconds: float = 30.0,
        stale_after_intervals: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_seconds <= 0:
            raise ValueError("interval_seconds must be positive")
        self.backend = backend
        self.interval_seconds = interval_seconds
        self.stale_after_seconds = stale_after_intervals * interval_seconds
        self._call_guard = CallGuard(call_timeout_seconds)
        self._collect_guard = CallGuard(collect_timeout_seconds)
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot: HostInventory | None = None
        self._collected_at: float | None = None
        self._last_error: str | None = None
        self._listeners: list[Callable[[HostInventory], None]] = []
        self._first = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.generation = 0

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "Collector":
        self._thread = threading.Thread(target=self._run, name="gpu-agent collector", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_seconds: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            # A thread stuck in a hung driver call is a daemon: it is abandoned, not awaited forever.
            self._thread.join(timeout_seconds)

    def wait_first(self, timeout_seconds: float) -> bool:
        """Wait until the first collection attempt finished (success or failure)."""
        return self._first.wait(timeout_seconds)

    def add_listener(self, callback: Callable[[HostInventory], None]) -> None:
        """``callback(snapshot)`` runs on the collector thread after every change; keep it cheap."""
        self._listeners.append(callback)

    # -- reads ----------------------------------------------------------------------------------
    def is_fresh(self) -> bool:
        with self._lock:
            return self._fresh_locked()

    def _fresh_locked(self) -> bool:
        if self._collected_at is None or self._last_error is not None:
            return False
        return self._clock() - self._collected_at <= self.stale_after_seconds

    def snapshot(self) -> HostInventory | None:
        """The cached inventory with ``stale`` and ``status_reason`` as of now; None before any success."""
        with self._lock:
            if self._snapshot is None:
                return None
            if self._fresh_locked():
                return self._snapshot
            age = self._clock() - (self._collected_at or 0.0)
            reason = f"last collection failed: {self._last_error}" if self._last_error else f"snapshot is {age:.1f}s old"
            return self._snapshot.model_copy(update={"stale": True, "status_reason": reason})

    @property
    def last_error(self) -> str | None:
        with self._lock:
            return self._last_error

    # -- the loop -------------------------------------------------------------------------------
    def collect_once(self) -> None:
        try:
            # Out-of-range readings become unknown here, once, for every backend: never serve what
            # protobuf cannot encode or what cannot be true (gpu_agent/sanitize.py).
            fresh = encodable(self._collect_guard.call(self.backend.collect, self._call_guard))
        except Exception as exc:  # any backend failure: keep serving the last snapshot, marked stale
            # Bounded: the text may come from a hostile capture, and it is served as status_reason.
            message = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
            with self._lock:
                changed = self._last_error != message
                self._last_error = message
            if changed:
                log.warning("inventory collection failed (%s backend): %s", self.backend.name, message)
            return
        with self._lock:
            previous = self._snapshot
            self._snapshot, self._collected_at, self._last_error = fresh, self._clock(), None
            changed = previous is None or previous.change_key() != fresh.change_key()
            if changed:
                self.generation += 1
        if changed:
            for callback in list(self._listeners):
                try:
                    callback(fresh)
                except Exception:  # a listener bug must not stop collection
                    log.exception("inventory listener failed")

    def _run(self) -> None:
        while not self._stop.is_set():
            started = self._clock()
            self.collect_once()
            self._first.set()
            self._stop.wait(max(0.0, self.interval_seconds - (self._clock() - started)))
