"""NVML -> inventory: the default backend, and the same conversion the NVML replay goes through.

``collect_nvml(nvml, guard)`` takes anything shaped like the ``pynvml`` module (the real module, or
``nvml_replay.RecordedNvml`` over an ``nvml.json`` capture) and calls every function through the
guard, so a hung driver call times out instead of hanging the agent. NVML errors are sorted as in
Datadog's safenvml: NOT_SUPPORTED / FUNCTION_NOT_FOUND mean "absent"; any other error of a per-GPU
probe marks that GPU (``Gpu.error``) and the other GPUs still report. A timeout aborts the whole
collection (the collector then keeps the last snapshot, marked stale).
"""

from __future__ import annotations

from typing import Any, Callable

import pynvml

from gpu_agent.backends import BackendUnavailable, host_info
from gpu_agent.inventory import (
    CollectionError,
    CollectionSource,
    ComputeMode,
    Gpu,
    GpuHealth,
    GpuProcess,
    HostInventory,
    LinkLevel,
    MigDevice,
    MigMode,
    cuda_total,
    pair_links,
)
from gpu_agent.nvml_events import NvmlEventMonitor
from gpu_agent.watchdog import CallGuard

_UNSUPPORTED = {pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND}
_NO_DRIVER = {pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, pynvml.NVML_ERROR_DRIVER_NOT_LOADED}
_COMPUTE_MODES = {
    pynvml.NVML_COMPUTEMODE_DEFAULT: ComputeMode.DEFAULT,
    pynvml.NVML_COMPUTEMODE_EXCLUSIVE_PROCESS: ComputeMode.EXCLUSIVE_PROCESS,
    pynvml.NVML_COMPUTEMODE_PROHIBITED: ComputeMode.PROHIBITED,
}
_TOPOLOGY_LEVELS = {
    pynvml.NVML_TOPOLOGY_INTERNAL: LinkLevel.PIX,
    pynvml.NVML_TOPOLOGY_SINGLE: LinkLevel.PIX,
    pynvml.NVML_TOPOLOGY_MULTIPLE: LinkLevel.PXB,
    pynvml.NVML_TOPOLOGY_HOSTBRIDGE: LinkLevel.PHB,
    pynvml.NVML_TOPOLOGY_NODE: LinkLevel.NODE,
    pynvml.NVML_TOPOLOGY_SYSTEM: LinkLevel.SYS,
}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _mig(value: int | None) -> MigMode | None:
    if value is None:
        return None
    return MigMode.ENABLED if value == pynvml.NVML_DEVICE_MIG_ENABLE else MigMode.DISABLED


class _Probe:
    """Calls NVML through the guard and records failures of one collection."""

    def __init__(self, nvml: Any, guard: CallGuard) -> None:
        self.nvml, self.guard = nvml, guard
        self.errors: list[CollectionError] = []

    def __call__(self, fn_name: str, *args: Any, gpu: tuple[int, str | None] | None = None, **kwargs: Any) -> Any:
        """The value, or None when unsupported or failed (failures are recorded against ``gpu``)."""
        fn: Callable[..., Any] | None = getattr(self.nvml, fn_name, None)
        if fn is None:  # older bindings: same as FUNCTION_NOT_FOUND
            return None
        try:
            return self.guard.call(fn, *args, **kwargs)
        except pynvml.NVMLError as exc:
            if exc.value in _UNSUPPORTED:
                return None
            index, uuid = gpu if gpu else (None, None)
            self.errors.append(CollectionError(probe=fn_name, message=str(exc), gpu_index=index, gpu_uuid=uuid))
            return None


def nvml_init(nvml: Any, guard: CallGuard) -> None:
    """Initialise NVML; a missing library or driver becomes BackendUnavailable."""
    try:
        guard.call(nvml.nvmlInit)
    except pynvml.NVMLError as exc:
        if exc.value in _NO_DRIVER:
            raise BackendUnavailable(f"NVML unavailable: {exc}") from exc
        raise


def _cuda_version(raw: int | None) -> str | None:
    if raw is None:
        return None
    return f"{raw // 1000}.{(raw % 1000) // 10}"


def _health(monitor: NvmlEventMonitor | None, uuid: str) -> dict[str, Any]:
    """Health fields from the event monitor (unset when this GPU is not monitored)."""
    seen = monitor.health(uuid) if monitor is not None and uuid else None
    if seen is None:
        return {}
    return dict(
        xid_events_count=seen.xid_events,
        last_xid=seen.last_xid,
        health=GpuHealth.UNHEALTHY if seen.unhealthy_reason else GpuHealth.HEALTHY,
        health_reason=seen.unhealthy_reason,
    )


def _gpu(probe: _Probe, index: int, monitor: NvmlEventMonitor | None = None) -> tuple[Gpu, Any, list[GpuProcess]]:
    handle = probe("nvmlDeviceGetHandleByIndex", index, gpu=(index, None))
    if handle is None:
        return Gpu(index=index, uuid="", name="", error="nvmlDeviceGetHandleByIndex failed"), None, []
    uuid = _text(probe("nvmlDeviceGetUUID", handle, gpu=(index, None)) or "")
    where = (index, uuid or None)
    before = len(probe.errors)

    def get(fn_name: str, *args: Any, **kwargs: Any) -> Any:
        return probe(fn_name, handle, *args, gpu=where, **kwargs)

    memory = get("nvmlDeviceGetMemoryInfo", version=pynvml.nvmlMemory_v2)
    total = getattr(memory, "total", None)
    reserved = getattr(memory, "reserved", None)
    cc = get("nvmlDeviceGetCudaComputeCapability")
    pci = get("nvmlDeviceGetPciInfo")
    mig = get("nvmlDeviceGetMigMode") or (None, None)
    ecc = get("nvmlDeviceGetEccMode") or (None, None)
    util = get("nvmlDeviceGetUtilizationRates")
    mode = get("nvmlDeviceGetComputeMode")
    persistence = get("nvmlDeviceGetPersistenceMode")
    ecc_on = ecc[0] is not None and bool(ecc[0])
    corrected = get("nvmlDeviceGetTotalEccErrors", pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_VOLATILE_ECC) if ecc_on else None
    uncorrected = get("nvmlDeviceGetTotalEccErrors", pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC) if ecc_on else None
    mig_devices = _mig_devices(probe, handle, uuid, where) if _mig(mig[0]) is MigMode.ENABLED else ()
    processes = _processes(probe, handle, uuid, where)
    fields = dict(
        index=index,
        uuid=uuid,
        name=_text(get("nvmlDeviceGetName") or ""),
        pci_bus_id=_text(pci.busId) if pci is not None else None,
        memory_total_bytes=total,
        memory_reserved_bytes=reserved,
        memory_used_bytes=getattr(memory, "used", None),
        memory_free_bytes=getattr(memory, "free", None),
        memory_cuda_total_bytes=cuda_total(total, reserved),
        compute_capability=f"{cc[0]}.{cc[1]}" if cc else None,
        pcie_generation=get("nvmlDeviceGetCurrPcieLinkGeneration"),
        pcie_width=get("nvmlDeviceGetCurrPcieLinkWidth"),
        pcie_max_generation=get("nvmlDeviceGetMaxPcieLinkGeneration"),
        pcie_max_width=get("nvmlDeviceGetMaxPcieLinkWidth"),
        mig_mode=_mig(mig[0]),
        mig_mode_pending=_mig(mig[1]),
        mig_devices=mig_devices,
        ecc_enabled=None if ecc[0] is None else bool(ecc[0]),
        power_limit_milliwatts=get("nvmlDeviceGetEnforcedPowerLimit"),
        temperature_celsius=get("nvmlDeviceGetTemperature", pynvml.NVML_TEMPERATURE_GPU),
        utilization_gpu_percent=getattr(util, "gpu", None),
        utilization_memory_percent=getattr(util, "memory", None),
        compute_mode=_COMPUTE_MODES.get(mode) if mode is not None else None,
        numa_node=get("nvmlDeviceGetNumaNodeId"),
        persistence_mode_enabled=None if persistence is None else bool(persistence),
        power_usage_milliwatts=get("nvmlDeviceGetPowerUsage"),
        ecc_errors_corrected_count=corrected,
        ecc_errors_uncorrected_count=uncorrected,
        **_health(monitor, uuid),
    )
    failed = probe.errors[before:]
    if failed:
        fields["error"] = "; ".join(f"{e.probe}: {e.message}" for e in failed)
    return Gpu(**fields), handle, processes


def _mig_devices(probe: _Probe, handle: Any, parent_uuid: str, where: tuple) -> tuple[MigDevice, ...]:
    count = probe("nvmlDeviceGetMaxMigDeviceCount", handle, gpu=where) or 0
    out = []
    for slot in range(count):
        try:  # empty slots raise NOT_FOUND: not an error
            mig = probe.guard.call(probe.nvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, slot)
        except pynvml.NVMLError:
            continue
        memory = probe("nvmlDeviceGetMemoryInfo", mig, gpu=where)
        attrs = probe("nvmlDeviceGetAttributes", mig, gpu=where)
        name = _text(probe("nvmlDeviceGetName", mig, gpu=where) or "")
        out.append(MigDevice(
            uuid=_text(probe("nvmlDeviceGetUUID", mig, gpu=where) or ""),
            parent_uuid=parent_uuid,
            index=slot,
            # NVML names MIG devices "NVIDIA A100-SXM4-80GB MIG 3g.40gb": the profile is the last word.
            profile=name.rsplit(" ", 1)[-1],
            gpu_instance_id=probe("nvmlDeviceGetGpuInstanceId", mig, gpu=where),
            compute_instance_id=probe("nvmlDeviceGetComputeInstanceId", mig, gpu=where),
            memory_total_bytes=getattr(memory, "total", None),
            memory_used_bytes=getattr(memory, "used", None),
            memory_free_bytes=getattr(memory, "free", None),
            multiprocessor_count=getattr(attrs, "multiprocessorCount", None),
        ))
    return tuple(out)


def _processes(probe: _Probe, handle: Any, uuid: str, where: tuple) -> list[GpuProcess]:
    out = []
    for proc in probe("nvmlDeviceGetComputeRunningProcesses", handle, gpu=where) or ():
        name = probe("nvmlSystemGetProcessName", proc.pid)
        gi = getattr(proc, "gpuInstanceId", None)
        ci = getattr(proc, "computeInstanceId", None)
        # NVML uses 0xFFFFFFFF for "no instance" outside MIG.
        out.append(GpuProcess(
            pid=proc.pid,
            gpu_uuid=uuid,
            name=_text(name) if name else None,
            used_memory_bytes=proc.usedGpuMemory,
            gpu_instance_id=gi if gi is not None and gi < 0xFFFFFFFF else None,
            compute_instance_id=ci if ci is not None and ci < 0xFFFFFFFF else None,
        ))
    return out


def _nvlink_peers(probe: _Probe, handle: Any, where: tuple) -> tuple[dict[str, int], int]:
    """Active links per remote PCI bus id, and how many end at an NVSwitch (or unknown peer)."""
    peers: dict[str, int] = {}
    switch_links = 0
    for link in range(pynvml.NVML_NVLINK_MAX_LINKS):
        try:
            state = probe.guard.call(probe.nvml.nvmlDeviceGetNvLinkState, handle, link)
        except pynvml.NVMLError as exc:
            if exc.value in _UNSUPPORTED or exc.value == pynvml.NVML_ERROR_INVALID_ARGUMENT:
                break  # no (more) links on this GPU
            raise
        if not state:
            continue
        remote_type = probe("nvmlDeviceGetNvLinkRemoteDeviceType", handle, link, gpu=where)
        remote = probe("nvmlDeviceGetNvLinkRemotePciInfo_v2", handle, link, gpu=where)
        if remote is None or remote_type == pynvml.NVML_NVLINK_DEVICE_TYPE_SWITCH:
            switch_links += 1
        else:
            bus = _text(remote.busId).lower()
            peers[bus] = peers.get(bus, 0) + 1
    return peers, switch_links


def _links(probe: _Probe, gpus: list[Gpu], handles: list[Any]) -> dict[tuple[int, int], tuple[LinkLevel | None, int]]:
    nvlinks = [_nvlink_peers(probe, h, (g.index, g.uuid)) if h is not None else ({}, 0) for g, h in zip(gpus, handles)]
    out: dict[tuple[int, int], tuple[LinkLevel | None, int]] = {}
    for i, a in enumerate(gpus):
        for j in range(i + 1, len(gpus)):
            b = gpus[j]
            if handles[i] is None or handles[j] is None:
                continue
            direct = nvlinks[i][0].get((b.pci_bus_id or "").lower(), 0)
            # Through NVSwitch every GPU reaches every other with all its switch links (topo -m: NV18).
            switched = min(nvlinks[i][1], nvlinks[j][1])
            count = direct or switched
            ancestor = probe("nvmlDeviceGetTopologyCommonAncestor", handles[i], handles[j], gpu=(a.index, a.uuid))
            level = LinkLevel.NVLINK if count else _TOPOLOGY_LEVELS.get(ancestor)
            out[(a.index, b.index)] = (level, count)
    return out


def collect_nvml(nvml: Any, guard: CallGuard, source: CollectionSource = CollectionSource.NVML,
                 hostname: str | None = None, monitor: NvmlEventMonitor | None = None) -> HostInventory:
    """One full collection. Assumes NVML is initialised (``nvml_init``); ``monitor`` adds GPU health."""
    probe = _Probe(nvml, guard)
    driver = probe("nvmlSystemGetDriverVersion")
    nvml_version = probe("nvmlSystemGetNVMLVersion")
    cuda = probe("nvmlSystemGetCudaDriverVersion_v2") or probe("nvmlSystemGetCudaDriverVersion")
    count = probe("nvmlDeviceGetCount") or 0
    gpus, handles, processes = [], [], []
    for index in range(count):
        gpu, handle, procs = _gpu(probe, index, monitor)
        gpus.append(gpu)
        handles.append(handle)
        processes += procs
    links = pair_links(gpus, _links(probe, gpus, handles))
    return HostInventory(
        host=host_info(_text(driver) if driver else None, _cuda_version(cuda),
                       _text(nvml_version) if nvml_version else None, hostname),
        gpus=tuple(gpus),
        processes=tuple(processes),
        links=links,
        source=source,
        errors=tuple(probe.errors),
    )


class NvmlBackend:
    """Live NVML through ``pynvml`` (or any module-shaped object with the same functions)."""

    name = "nvml"

    def __init__(self, nvml: Any = pynvml, source: CollectionSource = CollectionSource.NVML,
                 hostname: str | None = None) -> None:
        self.nvml, self.source, self.hostname = nvml, source, hostname
        self._initialised = False
        self.monitor: NvmlEventMonitor | None = None
        self._wake: Any = None

    def set_wake(self, wake: Any) -> None:
        """``wake()`` asks the collector for a collection now (after an XID/ECC event)."""
        self._wake = wake
        if self.monitor is not None:
            self.monitor.on_event = wake

    def collect(self, guard: CallGuard) -> HostInventory:
        if not self._initialised:
            nvml_init(self.nvml, guard)
            self._initialised = True
        if self.monitor is None:
            monitor = NvmlEventMonitor(self.nvml)
            monitor.on_event = self._wake
            self.monitor = monitor if monitor.start(guard.call) else None
            if self.monitor is None:
                self.monitor = _UNMONITORED
        monitor = None if self.monitor is _UNMONITORED else self.monitor
        return collect_nvml(self.nvml, guard, self.source, self.hostname, monitor)

    def close(self) -> None:
        if self.monitor is not None and self.monitor is not _UNMONITORED:
            self.monitor.stop()


_UNMONITORED: Any = object()  # event registration was tried and is not available
