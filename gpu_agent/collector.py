"""The one collector thread: refreshes a cached snapshot every interval; serving never waits on it.

Every backend call is bounded twice: each driver call by the backend's ``CallGuard``
(``call_timeout_seconds``), and the whole collection by an outer guard (``collect_timeout_seconds``),
so a backend that hangs outside the guarded calls cannot hang the agent either. A failed or timed-out
collection keeps the previous snapshot; reads then see it marked stale with the reason.
Freshness: stale when the last collection failed or the snapshot is older than
``stale_after_intervals`` x ``interval_seconds``. Listeners hear of every content change *and* of
every change of freshness (a failed collection, a recovery), so a host that recovers is reported as
fresh at once, without waiting for its GPU memory to change.

On Kubernetes (``pod_resources`` given and its socket present), every collection also reads the
kubelet's PodResources allocations; a failed read fails the collection (stale: without allocation
truth, free memory may lie). Each collection is timed into ``vllm_planner_agent_collection_seconds``
and each failure counted in ``vllm_planner_agent_collection_errors_total`` by reason.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import grpc
import pynvml

from gpu_agent.backends import InventoryBackend
from gpu_agent.inventory import HostInventory
from gpu_agent.pod_resources import PodResourcesClient
from gpu_agent.sanitize import encodable
from gpu_agent.watchdog import CallGuard, CallTimeout
from vllm_planner.transport import metrics

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
        instance_id: str = "",
        pod_resources: PodResourcesClient | None = None,
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
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._notified_fresh: bool | None = None
        self._notify_lock = threading.Lock()
        self.generation = 0
        self.instance_id = instance_id
        self.pod_resources = pod_resources
        if hasattr(backend, "set_wake"):  # driver events (XID/ECC) ask for a collection at once
            backend.set_wake(self.request_collection)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "Collector":
        self._thread = threading.Thread(target=self._run, name="gpu-agent collector", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_seconds: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        close = getattr(self.backend, "close", None)
        if callable(close):
            close()
        if self.pod_resources is not None:
            self.pod_resources.close()
        if self._thread is not None:
            # A thread stuck in a hung driver call is a daemon: it is abandoned, not awaited forever.
            self._thread.join(timeout_seconds)

    def wait_first(self, timeout_seconds: float) -> bool:
        """Wait until the first collection attempt finished (success or failure)."""
        return self._first.wait(timeout_seconds)

    def add_listener(self, callback: Callable[[HostInventory | None], None]) -> None:
        """``callback(snapshot)`` runs on the collector thread after every change of content or of
        freshness (``snapshot()`` as of then); keep it cheap."""
        self._listeners.append(callback)

    def request_collection(self) -> None:
        """Collect now instead of at the next interval (thread-safe)."""
        self._wake.set()

    def age_seconds(self) -> float:
        """Seconds since the last successful collection (0 before the first one)."""
        with self._lock:
            return 0.0 if self._collected_at is None else max(0.0, self._clock() - self._collected_at)

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
    def _collect(self, guard: CallGuard) -> HostInventory:
        inventory = self.backend.collect(guard)
        updates: dict = {}
        if self.instance_id:
            updates["host"] = inventory.host.model_copy(update={"agent_instance_id": self.instance_id})
        client = self.pod_resources
        if client is not None and client.available():
            try:
                updates["pod_resources"] = guard.call(client.read, inventory.gpus)
            except grpc.RpcError as exc:
                raise PodResourcesError(f"kubelet PodResources {client.socket_path}: {exc.code().name}: {exc.details()}") from None
        return inventory.model_copy(update=updates) if updates else inventory

    def collect_once(self) -> None:
        source = self.backend.name
        started = time.perf_counter()
        try:
            # Out-of-range readings become unknown here, once, for every backend: never serve what
            # protobuf cannot encode or what cannot be true (gpu_agent/sanitize.py).
            fresh = encodable(self._collect_guard.call(self._collect, self._call_guard))
        except Exception as exc:  # any backend failure: keep serving the last snapshot, marked stale
            metrics.AGENT_COLLECTION_ERRORS_TOTAL.labels(source=source, reason=_failure_reason(exc)).inc()
            # Bounded: the text may come from a hostile capture, and it is served as status_reason.
            message = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
            with self._lock:
                changed = self._last_error != message
                self._last_error = message
            if changed:
                log.warning("inventory collection failed (%s backend): %s", source, message)
            self._notify(content_changed=False)
            return
        metrics.AGENT_COLLECTION_SECONDS.labels(source=source).observe(time.perf_counter() - started)
        with self._lock:
            previous = self._snapshot
            self._snapshot, self._collected_at, self._last_error = fresh, self._clock(), None
            changed = previous is None or previous.change_key() != fresh.change_key()
            if changed:
                self.generation += 1
        if previous is not None and previous.host.agent_instance_id != fresh.host.agent_instance_id:
            log.info("agent instance %s", fresh.host.agent_instance_id)
        self._notify(content_changed=changed)

    def _notify(self, content_changed: bool) -> None:
        """Tell listeners about a content change or a change of freshness (either direction)."""
        with self._notify_lock:
            fresh = self.is_fresh()
            if not content_changed and fresh == self._notified_fresh:
                return
            if fresh != self._notified_fresh and self._notified_fresh is not None:
                log.info("inventory snapshot is %s", "fresh again" if fresh else f"stale: {self.last_error or 'too old'}")
            self._notified_fresh = fresh
        snapshot = self.snapshot()
        for callback in list(self._listeners):
            try:
                callback(snapshot)
            except Exception:  # a listener bug must not stop collection
                log.exception("inventory listener failed")

    def check_freshness(self) -> bool:
        """Notify listeners if the snapshot aged into staleness since the last notice; the freshness now."""
        self._notify(content_changed=False)
        return self.is_fresh()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = self._clock()
            self._wake.clear()
            self.collect_once()
            self._first.set()
            self._wake.wait(max(0.0, self.interval_seconds - (self._clock() - started)))


class PodResourcesError(Exception):
    """The kubelet's PodResources API did not answer (the snapshot is then stale)."""


def _failure_reason(exc: BaseException) -> str:
    """A small, fixed set of label values for the error counter."""
    if isinstance(exc, CallTimeout):
        return "timeout"
    if isinstance(exc, PodResourcesError):
        return "pod_resources"
    if isinstance(exc, pynvml.NVMLError):
        return "device_lost" if exc.value == pynvml.NVML_ERROR_GPU_IS_LOST else "driver"
    if isinstance(exc, (OSError, ValueError)):
        return "driver"
    return "error"
