"""GPU health from the driver's error events: NVML XID and ECC events, watched in one daemon thread.

As the NVIDIA Kubernetes device plugin does (``internal/rm/health.go``): every GPU is registered for
``nvmlEventTypeXidCriticalError`` and the ECC events it supports, and ``nvmlEventSetWait`` is polled
with a timeout. A critical XID marks the GPU unhealthy, except the XIDs that an application causes
(``SKIPPED_XIDS``: 13, 31, 43, 45, 68, 109, the device plugin's defaults); a double-bit (uncorrected)
ECC error marks it unhealthy; single-bit errors are only counted. Unhealthy is sticky until the agent
restarts (a GPU that fell off the bus does not come back by itself); the planner skips such a GPU. A
wait that fails with anything but a timeout marks every watched GPU unhealthy, as the device plugin
does: the driver can no longer tell.

The monitor only reads ``pynvml``-shaped functions, so the NVML replay (``nvml_replay``) drives it
with recorded events through the same code.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pynvml

log = logging.getLogger(__name__)

SKIPPED_XIDS = frozenset({13, 31, 43, 45, 68, 109})
WATCHED_EVENTS = (
    pynvml.nvmlEventTypeXidCriticalError | pynvml.nvmlEventTypeDoubleBitEccError | pynvml.nvmlEventTypeSingleBitEccError
)
_NO_INSTANCE = 0xFFFFFFFF


@dataclass
class GpuEvents:
    """What the monitor saw for one GPU since the agent started."""

    xid_events: int = 0
    last_xid: int | None = None
    single_bit_ecc_events: int = 0
    double_bit_ecc_events: int = 0
    unhealthy_reason: str = ""
    seen: list[str] = field(default_factory=list)


class NvmlEventMonitor:
    def __init__(self, nvml: Any, *, wait_timeout_ms: int = 1000, clock: Callable[[], float] = time.time) -> None:
        self.nvml = nvml
        self.wait_timeout_ms = wait_timeout_ms
        self._clock = clock
        self._lock = threading.Lock()
        self._events: dict[str, GpuEvents] = {}
        self._set: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_event: Callable[[], None] | None = None

    def start(self, guard_call: Callable[..., Any]) -> bool:
        """Register every GPU (calls go through ``guard_call``, the collector's watchdog); False when
        this driver (or replay) has no event support, which leaves health unmonitored."""
        nvml = self.nvml
        if not hasattr(nvml, "nvmlEventSetCreate"):
            return False
        try:
            self._set = guard_call(nvml.nvmlEventSetCreate)
            count = guard_call(nvml.nvmlDeviceGetCount)
        except pynvml.NVMLError as exc:
            log.info("NVML events unavailable (%s): GPU health is not monitored", exc)
            return False
        for index in range(count):
            try:
                handle = guard_call(nvml.nvmlDeviceGetHandleByIndex, index)
                uuid = _text(guard_call(nvml.nvmlDeviceGetUUID, handle))
                supported = guard_call(nvml.nvmlDeviceGetSupportedEventTypes, handle)
                mask = supported & WATCHED_EVENTS
                if not mask & pynvml.nvmlEventTypeXidCriticalError:
                    continue
                guard_call(nvml.nvmlDeviceRegisterEvents, handle, mask, self._set)
            except pynvml.NVMLError as exc:  # this GPU cannot be watched; the others still are
                log.info("GPU %d: NVML events not registered (%s)", index, exc)
                continue
            with self._lock:
                self._events[uuid] = GpuEvents()
        if not self._events:
            return False
        self._thread = threading.Thread(target=self._run, name="gpu-agent nvml events", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        self._stop.set()

    def health(self, uuid: str) -> GpuEvents | None:
        """A copy of what was seen for ``uuid``; None when the GPU is not monitored."""
        with self._lock:
            seen = self._events.get(uuid)
            return None if seen is None else GpuEvents(**{**seen.__dict__, "seen": list(seen.seen)})

    # -- the thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.nvml.nvmlEventSetWait_v2(self._set, self.wait_timeout_ms)
            except pynvml.NVMLError as exc:
                if exc.value == pynvml.NVML_ERROR_TIMEOUT:
                    continue
                self._all_unhealthy(f"NVML event wait failed: {exc}")
                self._stop.wait(1.0)
                continue
            except Exception as exc:  # a binding bug must not kill the thread silently
                log.exception("NVML event wait raised")
                self._all_unhealthy(f"NVML event wait raised {type(exc).__name__}")
                self._stop.wait(1.0)
                continue
            self._record(data)

    def _record(self, data: Any) -> None:
        try:
            uuid = _text(self.nvml.nvmlDeviceGetUUID(data.device))
        except pynvml.NVMLError:
            uuid = ""
        kind, value = int(data.eventType), int(data.eventData)
        where = ""
        instance = getattr(data, "gpuInstanceId", _NO_INSTANCE)
        if instance is not None and instance != _NO_INSTANCE:
            where = f" (MIG GPU instance {instance})"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._clock()))
        with self._lock:
            seen = self._events.get(uuid)
            if seen is None:
                return
            if kind & pynvml.nvmlEventTypeXidCriticalError:
                seen.xid_events += 1
                seen.last_xid = value
                if value not in SKIPPED_XIDS and not seen.unhealthy_reason:
                    seen.unhealthy_reason = f"XID {value}{where} at {stamp}"
                note = f"XID {value}{where}"
            elif kind & pynvml.nvmlEventTypeDoubleBitEccError:
                seen.double_bit_ecc_events += 1
                if not seen.unhealthy_reason:
                    seen.unhealthy_reason = f"uncorrected (double-bit) ECC error{where} at {stamp}"
                note = "double-bit ECC error"
            else:
                seen.single_bit_ecc_events += 1
                note = "single-bit ECC error"
            seen.seen = (seen.seen + [note])[-8:]
        log.warning("GPU %s: %s", uuid, note)
        if self.on_event is not None:
            self.on_event()

    def _all_unhealthy(self, reason: str) -> None:
        with self._lock:
            for seen in self._events.values():
                if not seen.unhealthy_reason:
                    seen.unhealthy_reason = reason
        log.error("%s: every watched GPU marked unhealthy", reason)
        if self.on_event is not None:
            self.on_event()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
