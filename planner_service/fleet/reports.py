"""Agents that push (``ReportInventory``): each report is a registration plus an inventory or heartbeat.

Why push: a gRPC stream held open costs the planner about 43 KiB per agent in gRPC core and grpc.aio
(an idle HTTP/2 connection about 14 KiB; measured on 10,000 loopback connections, see
benchmarks/README.md), so 10,000 dialled ``WatchInventory`` streams alone exceed the planner's 512 MiB
budget. A pushing agent keeps one long-lived connection to the planner and sends one short unary call
per change or heartbeat interval: the planner holds the connection and nothing else per agent.

The semantics are the dialled stream's: an inventory replaces the host's record (READY, or STALE when
the agent says its snapshot is stale); a heartbeat carries only freshness and moves the host between
READY and STALE at once (recovery within one heartbeat); no report for ``stale_after_seconds`` makes
the host STALE (the registry's sweep), and a lapsed lease lets it go GONE. A heartbeat vouches for
one (agent instance, inventory generation); when the planner holds another (it restarted, the agent
restarted, a report was lost) it answers ``inventory_wanted`` and the agent sends the whole inventory.

A report is a client's word, so its inventory is bounded before anything is kept (``check_inventory``):
at most ``MAX_REPORTED_GPUS`` GPUs (MIG instances and links in proportion) and ``MAX_REPORTED_TEXT``
characters per string, or INVALID_ARGUMENT naming the field.
"""

from __future__ import annotations

from planner_service.engine.errors import InvalidRequestError
from planner_service.fleet.discovery import Registrations
from planner_service.fleet.inventory_adapter import host_from_inventory, with_freshness
from planner_service.fleet.models import DiscoverySource
from planner_service.fleet.registration import Registration
from planner_service.fleet.registry import FleetRegistry
from vllm_planner.v1 import agent_pb2
from vllm_planner.v1 import fleet_pb2 as pb


MAX_REPORTED_GPUS = 64
MAX_REPORTED_TEXT = 256
_GPU_TEXT = ("uuid", "name", "compute_capability", "health_reason", "error")


def _text(value: str, field: str) -> None:
    if len(value) > MAX_REPORTED_TEXT:
        raise InvalidRequestError.for_field(field, f"at most {MAX_REPORTED_TEXT} characters, got {len(value):,}")


def check_inventory(inventory: agent_pb2.HostInventory) -> None:
    """Bound what a pushed inventory may hold (the dialled stream trusts the agent the planner chose)."""
    gpus = inventory.gpus
    if len(gpus) > MAX_REPORTED_GPUS:
        raise InvalidRequestError.for_field("inventory.gpus", f"at most {MAX_REPORTED_GPUS} GPUs, got {len(gpus):,}")
    if len(inventory.links) > MAX_REPORTED_GPUS * MAX_REPORTED_GPUS:
        raise InvalidRequestError.for_field("inventory.links", f"at most {MAX_REPORTED_GPUS ** 2} links")
    if inventory.HasField("pod_resources") and len(inventory.pod_resources.allocations) > 8 * MAX_REPORTED_GPUS:
        raise InvalidRequestError.for_field("inventory.pod_resources.allocations", f"at most {8 * MAX_REPORTED_GPUS}")
    _text(inventory.host.hostname, "inventory.host.hostname")
    _text(inventory.host.agent_instance_id, "inventory.host.agent_instance_id")
    _text(inventory.status_reason, "inventory.status_reason")
    for i, gpu in enumerate(gpus):
        for name in _GPU_TEXT:
            value = getattr(gpu, name)
            _text(value if isinstance(value, str) else str(value), f"inventory.gpus[{i}].{name}")
        if len(gpu.mig_devices) > 8:
            raise InvalidRequestError.for_field(f"inventory.gpus[{i}].mig_devices", "at most 8 MIG instances")
        for k, dev in enumerate(gpu.mig_devices):
            _text(dev.uuid, f"inventory.gpus[{i}].mig_devices[{k}].uuid")
            _text(dev.profile, f"inventory.gpus[{i}].mig_devices[{k}].profile")
    for k, link in enumerate(inventory.links):
        _text(link.gpu_uuid_a, f"inventory.links[{k}].gpu_uuid_a")
        _text(link.gpu_uuid_b, f"inventory.links[{k}].gpu_uuid_b")
    if inventory.HasField("pod_resources"):
        for k, a in enumerate(inventory.pod_resources.allocations):
            for name in ("gpu_uuid", "namespace", "pod", "container"):
                _text(getattr(a, name), f"inventory.pod_resources.allocations[{k}].{name}")


class Reports:
    def __init__(self, registry: FleetRegistry, registrations: Registrations) -> None:
        self._registry = registry
        self._registrations = registrations

    def report(self, registration: Registration, request: pb.ReportInventoryRequest) -> bool:
        """Apply one validated report; True when the planner needs the agent's whole inventory."""
        kind = request.WhichOneof("report")
        if kind == "inventory":
            check_inventory(request.inventory)  # before anything is kept
        address = self._registrations.register(str(registration.address), registration.labels, DiscoverySource.REPORTED)
        generation = request.inventory_generation
        if kind == "inventory":
            self._registry.update(address, host_from_inventory(request.inventory, address, generation))
            return False
        last = self._registry.last_input(address)
        if (kind != "heartbeat" or last is None or last.generation != generation
                or last.agent_instance_id != registration.agent_instance_id):
            return True
        self._registry.update(address, with_freshness(last, request.heartbeat))
        return False
