"""Inventory domain <-> ``vllm_planner.v1`` agent protobuf, in one place (server and SDK share it).

proto3 ``optional`` fields are set only when the domain value is not None, and read back as None
when absent, so "Not Supported" survives the wire as absent.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel

from gpu_agent import inventory as d
from vllm_planner.v1 import agent_pb2 as pb

_SOURCE = {
    d.CollectionSource.NVML: pb.COLLECTION_SOURCE_NVML,
    d.CollectionSource.NVIDIA_SMI: pb.COLLECTION_SOURCE_NVIDIA_SMI,
    d.CollectionSource.NONE: pb.COLLECTION_SOURCE_NONE,
    d.CollectionSource.REPLAY_NVML: pb.COLLECTION_SOURCE_REPLAY_NVML,
    d.CollectionSource.REPLAY_NVIDIA_SMI: pb.COLLECTION_SOURCE_REPLAY_NVIDIA_SMI,
    d.CollectionSource.STATIC: pb.COLLECTION_SOURCE_STATIC,
}
_MIG = {d.MigMode.DISABLED: pb.MIG_MODE_DISABLED, d.MigMode.ENABLED: pb.MIG_MODE_ENABLED}
_COMPUTE = {
    d.ComputeMode.DEFAULT: pb.COMPUTE_MODE_DEFAULT,
    d.ComputeMode.EXCLUSIVE_PROCESS: pb.COMPUTE_MODE_EXCLUSIVE_PROCESS,
    d.ComputeMode.PROHIBITED: pb.COMPUTE_MODE_PROHIBITED,
}
_LEVEL = {
    d.LinkLevel.NVLINK: pb.LINK_LEVEL_NVLINK,
    d.LinkLevel.PIX: pb.LINK_LEVEL_PIX,
    d.LinkLevel.PXB: pb.LINK_LEVEL_PXB,
    d.LinkLevel.PHB: pb.LINK_LEVEL_PHB,
    d.LinkLevel.NODE: pb.LINK_LEVEL_NODE,
    d.LinkLevel.SYS: pb.LINK_LEVEL_SYS,
}
_HEALTH = {d.GpuHealth.HEALTHY: pb.GPU_HEALTH_HEALTHY, d.GpuHealth.UNHEALTHY: pb.GPU_HEALTH_UNHEALTHY}
# Enum-typed domain fields and their proto mapping (0 = UNSPECIFIED = None).
_ENUMS: dict[str, dict[Any, int]] = {
    "source": _SOURCE, "mig_mode": _MIG, "mig_mode_pending": _MIG, "compute_mode": _COMPUTE, "level": _LEVEL,
    "health": _HEALTH,
}
_REVERSE = {name: {v: k for k, v in table.items()} for name, table in _ENUMS.items()}


def timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value if value.tzinfo else value.replace(tzinfo=timezone.utc))
    return ts


def from_timestamp(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=timezone.utc)


def _fill(message: Any, model: BaseModel) -> Any:
    """Copy a flat-ish pydantic model into a message of the same field names."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        if value is None:
            continue
        if name in _ENUMS:
            setattr(message, name, _ENUMS[name][value])
        elif isinstance(value, tuple):
            target = getattr(message, name)
            for item in value:
                if isinstance(item, BaseModel):
                    _fill(target.add(), item)
                else:
                    target.append(item)  # repeated scalars (device IDs)
        elif isinstance(value, BaseModel):
            _fill(getattr(message, name), value)
        elif isinstance(value, datetime):
            getattr(message, name).CopyFrom(timestamp(value))
        else:
            setattr(message, name, value)
    return message


def _read(message: Any, model_cls: type[BaseModel]) -> BaseModel:
    values: dict[str, Any] = {}
    for name, field in model_cls.model_fields.items():
        descriptor = message.DESCRIPTOR.fields_by_name[name]
        if name in _ENUMS:
            values[name] = _REVERSE[name].get(getattr(message, name))
        elif descriptor.is_repeated and descriptor.message_type is None:
            values[name] = tuple(getattr(message, name))
        elif descriptor.is_repeated:
            item_cls = _ITEM_TYPES[(model_cls, name)]
            values[name] = tuple(_read(item, item_cls) for item in getattr(message, name))
        elif descriptor.message_type is not None and descriptor.message_type.full_name == "google.protobuf.Timestamp":
            values[name] = from_timestamp(getattr(message, name))
        elif descriptor.message_type is not None:
            present = message.HasField(name) or field.default is not None
            values[name] = _read(getattr(message, name), _ITEM_TYPES[(model_cls, name)]) if present else None
        elif descriptor.has_presence and not message.HasField(name):
            values[name] = None
        else:
            values[name] = getattr(message, name)
    if model_cls is d.HostInventory and values.get("status_reason") == "":
        values["status_reason"] = None
    return model_cls(**values)


_ITEM_TYPES: dict[tuple[type[BaseModel], str], type[BaseModel]] = {
    (d.HostInventory, "host"): d.HostInfo,
    (d.HostInventory, "gpus"): d.Gpu,
    (d.HostInventory, "processes"): d.GpuProcess,
    (d.HostInventory, "links"): d.GpuLink,
    (d.HostInventory, "errors"): d.CollectionError,
    (d.Gpu, "mig_devices"): d.MigDevice,
    (d.HostInventory, "pod_resources"): d.PodResourcesReport,
    (d.PodResourcesReport, "allocations"): d.DeviceAllocation,
    (d.PodResourcesReport, "allocatable"): d.AllocatableDevices,
}


def inventory_to_proto(inventory: d.HostInventory) -> pb.HostInventory:
    return _fill(pb.HostInventory(), inventory)


def inventory_from_proto(message: pb.HostInventory) -> d.HostInventory:
    return _read(message, d.HostInventory)  # type: ignore[return-value]


def heartbeat_to_proto(send_time: datetime, inventory: d.HostInventory | None, reason: str | None = None) -> pb.InventoryHeartbeat:
    """A heartbeat carries the snapshot's freshness, so a recovery is seen without a content change."""
    beat = pb.InventoryHeartbeat(send_time=timestamp(send_time))
    if inventory is not None:
        beat.collect_time.CopyFrom(timestamp(inventory.collect_time))
        beat.stale = inventory.stale
        beat.status_reason = (inventory.status_reason or "") if inventory.stale else ""
    else:
        beat.stale = True
        beat.status_reason = reason or "no inventory collected yet"
    return beat


def heartbeat_from_proto(message: pb.InventoryHeartbeat) -> d.InventoryHeartbeat:
    return d.InventoryHeartbeat(
        send_time=from_timestamp(message.send_time),
        collect_time=from_timestamp(message.collect_time) if message.HasField("collect_time") else None,
        stale=message.stale,
        status_reason=message.status_reason or None,
    )


def watch_event_from_proto(message: pb.WatchInventoryResponse) -> d.HostInventory | d.InventoryHeartbeat:
    if message.WhichOneof("event") == "inventory":
        return inventory_from_proto(message.inventory)
    return heartbeat_from_proto(message.heartbeat)
