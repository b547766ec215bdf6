"""Never serve what cannot be encoded or cannot be true: range checks on a collected inventory.

A driver (or a capture) can report anything: 10^23 MiB of memory, negative used bytes, a PID beyond
int64. Served as is, such a value either fails protobuf encoding (every ``GetInventory`` then fails
until the reading changes) or reaches the planner as a physically impossible number. ``encodable``
runs once per collection, on every backend's result: each reading outside its physical range (which
is always inside its protobuf field's range) becomes unknown (``None``) and the collection records a
``CollectionError`` saying which probe reported what. A required field (an index, a PID) that is out of
range drops its entry (the process, the link) with the same kind of error.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from gpu_agent.inventory import CollectionError, Gpu, HostInventory

INT32_MAX = 2**31 - 1
PIB = 1 << 50  # no GPU (or MIG slice) has a petabyte of memory

# Physical bounds by field name; each is within the protobuf field's own range (int32 / int64).
_BOUNDS: dict[str, tuple[int, int]] = {
    "memory_total_bytes": (0, PIB), "memory_reserved_bytes": (0, PIB), "memory_used_bytes": (0, PIB),
    "memory_free_bytes": (0, PIB), "memory_cuda_total_bytes": (0, PIB), "used_memory_bytes": (0, PIB),
    "pcie_generation": (0, 64), "pcie_width": (0, 64), "pcie_max_generation": (0, 64), "pcie_max_width": (0, 64),
    "power_limit_milliwatts": (0, 100_000_000),  # 100 kW
    "power_usage_milliwatts": (0, 100_000_000),
    "ecc_errors_corrected_count": (0, 2**63 - 1), "ecc_errors_uncorrected_count": (0, 2**63 - 1),
    "xid_events_count": (0, 2**63 - 1), "last_xid": (0, INT32_MAX),
    "temperature_celsius": (-100, 300),
    "utilization_gpu_percent": (0, 100), "utilization_memory_percent": (0, 100),
    "numa_node": (0, 1 << 16),
    "gpu_instance_id": (0, INT32_MAX), "compute_instance_id": (0, INT32_MAX), "gpu_index": (0, INT32_MAX),
    "multiprocessor_count": (0, 1 << 20),
    # Required fields: out of range drops the entry instead.
    "index": (0, INT32_MAX), "pid": (0, 2**63 - 1), "gpu_index_a": (0, INT32_MAX), "gpu_index_b": (0, INT32_MAX),
    "nvlink_count": (0, 1 << 10),
}
_MEMORY_PARTS = ("memory_reserved_bytes", "memory_used_bytes", "memory_free_bytes", "memory_cuda_total_bytes")


class _Unencodable(Exception):
    """A required field is out of range: the whole entry is dropped."""


def _shown(value: int) -> str:
    text = str(value)
    return text if len(text) <= 24 else f"{text[:12]}...({len(text)} digits)"


def _check(item: BaseModel, errors: list[CollectionError], where: dict[str, Any]) -> BaseModel:
    """``item`` with its out-of-range optional ints set to None (errors recorded); raises for required ones."""
    fields = type(item).model_fields
    update: dict[str, Any] = {}
    for name, (low, high) in _BOUNDS.items():
        if name not in fields:
            continue
        value = getattr(item, name)
        if not isinstance(value, int) or isinstance(value, bool) or low <= value <= high:
            continue
        message = f"{name} {_shown(value)} is outside {low}..{high}"
        if not fields[name].is_required() and fields[name].default is None:
            update[name] = None
            errors.append(CollectionError(probe=f"range:{name}", message=f"{message}: reported as unknown", **where))
        else:
            errors.append(CollectionError(probe=f"range:{name}", message=f"{message}: entry dropped", **where))
            raise _Unencodable
    if "memory_total_bytes" in update:  # an impossible total makes everything measured against it unknown
        update.update({name: None for name in _MEMORY_PARTS if name in fields})
    elif getattr(item, "memory_total_bytes", None) is not None:
        total = item.memory_total_bytes
        for name in (n for n in _MEMORY_PARTS if n in fields and n not in update):
            value = getattr(item, name)
            if value is not None and value > total:  # more used/free/reserved than there is: impossible
                update[name] = None
                errors.append(CollectionError(probe=f"range:{name}", message=f"{name} {_shown(value)} exceeds "
                                              f"memory_total_bytes {total}: reported as unknown", **where))
    return item.model_copy(update=update) if update else item


def _kept(items: tuple, errors: list[CollectionError], where) -> tuple:  # noqa: ANN001
    out = []
    for item in items:
        try:
            out.append(_check(item, errors, where(item)))
        except _Unencodable:
            continue
    return tuple(out)


def encodable(inventory: HostInventory) -> HostInventory:
    """``inventory`` with every reading inside its physical (and protobuf) range; see the module doc."""
    errors: list[CollectionError] = []
    gpus = []
    for gpu in inventory.gpus:
        where = {"gpu_index": gpu.index if 0 <= gpu.index <= INT32_MAX else None, "gpu_uuid": gpu.uuid}
        try:
            checked: Gpu = _check(gpu, errors, where)  # type: ignore[assignment]
        except _Unencodable:
            continue
        migs = _kept(checked.mig_devices, errors, lambda m, w=where: w)
        gpus.append(checked.model_copy(update={"mig_devices": migs}) if migs != checked.mig_devices else checked)
    processes = _kept(inventory.processes, errors, lambda p: {"gpu_uuid": p.gpu_uuid})
    links = _kept(inventory.links, errors, lambda link: {})
    if not errors:
        return inventory
    return inventory.model_copy(update={
        "gpus": tuple(gpus), "processes": processes, "links": links, "errors": inventory.errors + tuple(errors),
    })

