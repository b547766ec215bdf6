"""An NVML-shaped replay of an ``nvml.json`` capture (see shared/fixtures/nvidia/README.md).

``RecordedNvml`` answers the ``pynvml`` functions the agent calls from the recorded values, raising
the real ``pynvml`` exception for strings recorded as ``"ERR:NVMLError_<Name>:..."`` and
FUNCTION_NOT_FOUND for anything the capture did not record, so the replay goes through exactly the
NVML-to-domain conversion of the live backend (``nvml_backend.collect_nvml``).

Variant ``busy`` applies ``busy_snapshot``: its ``used_bytes`` is the NVML v1 "used" (it includes
the driver reservation: 14099546112 B = 12967 MiB used + 480 MiB reserved, matching the busy
nvidia-smi capture), so v2 used = used_bytes - reserved and free = total - used_bytes.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml

from vllm_planner.bounded import MAX_CAPTURE_FILE_BYTES, InputError, read_text

NVML_FILE = "nvml.json"


def _raise_if_error(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("ERR:"):
        _, name, _message = (value.split(":", 2) + ["", ""])[:3]
        cls = getattr(pynvml, name, None)
        if isinstance(cls, type) and issubclass(cls, pynvml.NVMLError):
            raise cls()
        # Recorded binding misuse (e.g. a TypeError) means the probe is unusable here.
        raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
    return value


def _missing() -> pynvml.NVMLError:
    return pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)


class RecordedNvml:
    def __init__(self, data: dict[str, Any], variant: str = "idle") -> None:
        if variant not in ("idle", "busy"):
            raise ValueError(f"unknown replay variant {variant!r} (idle or busy)")
        self.data = data
        self.busy = data.get("busy_snapshot") if variant == "busy" else None
        if variant == "busy" and self.busy is None:
            raise ValueError("this nvml.json has no busy_snapshot")

    @classmethod
    def from_dir(cls, directory: Path, variant: str = "idle") -> "RecordedNvml":
        """Read ``nvml.json`` bounded; a file that is not a capture's shape is a ``ValueError``."""
        text = read_text(Path(directory) / NVML_FILE, max_bytes=MAX_CAPTURE_FILE_BYTES, what=f"capture file {NVML_FILE}")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            raise InputError(f"capture file {NVML_FILE}: not valid JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("devices"), list) \
                or not all(isinstance(d, dict) for d in data["devices"]):
            raise InputError(f"capture file {NVML_FILE}: expected an object with a 'devices' list of objects")
        return cls(data, variant)

    def _device(self, handle: Any) -> dict[str, Any]:
        return self.data["devices"][handle.index]

    def _field(self, handle: Any, key: str) -> Any:
        device = self._device(handle)
        if key not in device:
            raise _missing()
        return _raise_if_error(device[key])

    # -- system -------------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        return None

    def nvmlShutdown(self) -> None:
        return None

    def nvmlSystemGetDriverVersion(self) -> str:
        return _raise_if_error(self.data["driver"])

    def nvmlSystemGetNVMLVersion(self) -> str:
        return _raise_if_error(self.data["nvml_version"])

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return _raise_if_error(self.data["cuda_driver_version"])

    def nvmlDeviceGetCount(self) -> int:
        return len(self.data["devices"])

    def nvmlDeviceGetHandleByIndex(self, index: int) -> SimpleNamespace:
        if not 0 <= index < len(self.data["devices"]):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return SimpleNamespace(index=index)

    # -- per device ---------------------------------------------------------------------------
    def nvmlDeviceGetName(self, h: Any) -> str:
        return self._field(h, "name")

    def nvmlDeviceGetUUID(self, h: Any) -> str:
        return self._field(h, "uuid")

    def nvmlDeviceGetMemoryInfo(self, h: Any, version: int | None = None) -> SimpleNamespace:
        v2 = dict(self._field(h, "memory_v2"))
        if self.busy is not None:
            v1_used = self.busy["used_bytes"]
            v2["used"] = v1_used - v2["reserved"]
            v2["free"] = v2["total"] - v1_used
        if version == pynvml.nvmlMemory_v2:
            return SimpleNamespace(**v2)
        # v1 "used" includes the reservation.
        return SimpleNamespace(total=v2["total"], used=v2["used"] + v2["reserved"], free=v2["free"])

    def nvmlDeviceGetCudaComputeCapability(self, h: Any) -> tuple[int, int]:
        return tuple(self._field(h, "cc"))

    def nvmlDeviceGetPciInfo(self, h: Any) -> SimpleNamespace:
        return SimpleNamespace(**self._field(h, "pci"))

    def nvmlDeviceGetCurrPcieLinkGeneration(self, h: Any) -> int:
        return self._field(h, "pcie_gen_cur")

    def nvmlDeviceGetCurrPcieLinkWidth(self, h: Any) -> int:
        return self._field(h, "pcie_width_cur")

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h: Any) -> int:
        return self._field(h, "pcie_gen_max")

    def nvmlDeviceGetMaxPcieLinkWidth(self, h: Any) -> int:
        return self._field(h, "pcie_width_max")

    def nvmlDeviceGetMigMode(self, h: Any) -> list[int]:
        return list(self._field(h, "mig_mode"))

    def nvmlDeviceGetEccMode(self, h: Any) -> list[int]:
        return list(self._field(h, "ecc_mode"))

    def nvmlDeviceGetEnforcedPowerLimit(self, h: Any) -> int:
        return self._field(h, "power_limit_mw")

    def nvmlDeviceGetTemperature(self, h: Any, sensor: int) -> int:
        return self._field(h, "temp_c")

    def nvmlDeviceGetUtilizationRates(self, h: Any) -> SimpleNamespace:
        return SimpleNamespace(**self._field(h, "util"))

    def nvmlDeviceGetComputeMode(self, h: Any) -> int:
        return self._field(h, "compute_mode")

    def nvmlDeviceGetPersistenceMode(self, h: Any) -> int:
        return self._field(h, "persistence")

    def nvmlDeviceGetNumaNodeId(self, h: Any) -> int:
        return self._field(h, "numa_node")

    def nvmlDeviceGetNvLinkState(self, h: Any, link: int) -> int:
        states = self._field(h, "nvlink_states")
        if link >= len(states):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return _raise_if_error(states[link])

    def nvmlDeviceGetPowerUsage(self, h: Any) -> int:
        return self._field(h, "power_usage_mw")

    def nvmlDeviceGetTotalEccErrors(self, h: Any, error_type: int, counter_type: int) -> int:
        counts = self._field(h, "ecc_errors_volatile")
        key = "uncorrected" if error_type == pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED else "corrected"
        return int(counts[key])

    # -- driver events: a capture may list "events" to replay (see ``nvmlEventSetWait_v2``) ----
    def nvmlDeviceGetSupportedEventTypes(self, h: Any) -> int:
        if "events" not in self.data:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return pynvml.nvmlEventTypeXidCriticalError | pynvml.nvmlEventTypeDoubleBitEccError | pynvml.nvmlEventTypeSingleBitEccError

    def nvmlEventSetCreate(self) -> SimpleNamespace:
        if "events" not in self.data:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return SimpleNamespace(created=time.monotonic(), pending=sorted(self.data["events"], key=lambda e: e["after_seconds"]),
                               registered=set(), lock=threading.Lock())

    def nvmlDeviceRegisterEvents(self, h: Any, mask: int, event_set: Any) -> None:
        event_set.registered.add(h.index)

    def nvmlEventSetWait_v2(self, event_set: Any, timeout_ms: int) -> SimpleNamespace:
        """The next recorded event once ``after_seconds`` (since the set was created) has passed:
        ``{"after_seconds": 2.0, "gpu_index": 0, "type": "xid" | "dbe" | "sbe", "data": 79}``."""
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            with event_set.lock:
                due = next((e for e in event_set.pending if e["gpu_index"] in event_set.registered), None)
                now = time.monotonic()
                if due is not None and now - event_set.created >= due["after_seconds"]:
                    event_set.pending.remove(due)
                    kind = {"xid": pynvml.nvmlEventTypeXidCriticalError, "dbe": pynvml.nvmlEventTypeDoubleBitEccError,
                            "sbe": pynvml.nvmlEventTypeSingleBitEccError}[due["type"]]
                    return SimpleNamespace(device=SimpleNamespace(index=due["gpu_index"]), eventType=kind,
                                           eventData=int(due.get("data", 0)), gpuInstanceId=0xFFFFFFFF,
                                           computeInstanceId=0xFFFFFFFF)
            wake = deadline if due is None else min(deadline, event_set.created + due["after_seconds"])
            if now >= deadline:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT)
            time.sleep(max(0.0, min(wake - now, 0.05)))

    def nvmlDeviceGetComputeRunningProcesses(self, h: Any) -> list[SimpleNamespace]:
        procs = self.busy["compute_procs"] if self.busy is not None else self._field(h, "compute_procs")
        return [SimpleNamespace(pid=p["pid"], usedGpuMemory=p["used"]) for p in procs]
