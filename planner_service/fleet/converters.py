"""fleet.proto <-> ``planner_service.fleet.models`` (the only place that knows both).

Messages mirror the pydantic models field by field, so most fields copy by name (``_fill`` /
``_read``); the exceptions are handled explicitly: label dicts (repeated ``FleetLabel``), enums
(``FLEET_<ENUM>_<VALUE>``), nested models, and the deployment's ``PlanRequest``, which reuses the
planner service's own name-driven converter so both services read plan requests identically.
"""

from __future__ import annotations

from datetime import timezone
from enum import Enum
from typing import Any, TypeVar

from google.protobuf.message import Message
from pydantic import BaseModel

from planner_service.engine.errors import InvalidRequestError
from planner_service.engine.bench_models import LoadOptions, SloTarget
from planner_service.engine.models import PlanRequest
from planner_service.fleet import models as m
from vllm_planner.v1 import fleet_pb2 as pb
from vllm_planner.v1 import planner_pb2

M = TypeVar("M", bound=BaseModel)

_ENUM_PREFIX = {
    m.HostState: "FLEET_HOST_STATE_",
    m.DiscoverySource: "FLEET_DISCOVERY_SOURCE_",
    m.MemorySizing: "FLEET_MEMORY_SIZING_",
    m.RejectReason: "FLEET_REJECT_REASON_",
    m.GpuPinning: "FLEET_GPU_PINNING_",
    m.ReservationState: "FLEET_RESERVATION_STATE_",
}
_ENUM_PB = {
    m.HostState: pb.FleetHostState,
    m.DiscoverySource: pb.FleetDiscoverySource,
    m.MemorySizing: pb.FleetMemorySizing,
    m.RejectReason: pb.FleetRejectReason,
    m.GpuPinning: pb.FleetGpuPinning,
    m.ReservationState: pb.FleetReservationState,
}


def enum_to_proto(value: Enum) -> int:
    return _ENUM_PB[type(value)].Value(_ENUM_PREFIX[type(value)] + value.name)


_RAISE = object()


def enum_from_proto(cls: type[Enum], number: int, field: str = "", unknown: Any = _RAISE) -> Enum | None:
    """0 (UNSPECIFIED) -> None. A number this build does not know is the sender's mistake: an
    InvalidRequestError naming ``field`` (a request), or ``unknown`` when given (a newer server's answer)."""
    if number == 0:
        return None
    value = _ENUM_PB[cls].DESCRIPTOR.values_by_number.get(number)
    member = cls.__members__.get(value.name.removeprefix(_ENUM_PREFIX[cls])) if value is not None else None
    if member is None:
        if unknown is not _RAISE:
            return unknown
        known = ", ".join(f"{v.number} ({v.name})" for v in _ENUM_PB[cls].DESCRIPTOR.values if v.number)
        raise InvalidRequestError.for_field(field or cls.__name__, f"unknown enum value {number}; known: {known}")
    return member


def _labels_to_proto(labels: dict[str, str], target: Any) -> None:
    for key in sorted(labels):
        target.add(key=key, value=labels[key])


def _labels_from_proto(items: Any) -> dict[str, str]:
    return {item.key: item.value for item in items}


def _fill(model: BaseModel, message: Message, skip: tuple[str, ...] = ()) -> Message:
    """Copy scalar, optional and repeated-scalar fields by name."""
    for name in type(model).model_fields:
        if name in skip:
            continue
        value = getattr(model, name)
        if value is None:
            continue
        if isinstance(value, tuple):
            getattr(message, name).extend(enum_to_proto(v) if isinstance(v, Enum) else v for v in value)
        elif isinstance(value, Enum):
            setattr(message, name, enum_to_proto(value))
        else:
            setattr(message, name, value)
    return message


def _read(message: Message, cls: type[M], skip: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    fields = message.DESCRIPTOR.fields_by_name
    for name in cls.model_fields:
        if name in skip or name not in fields:
            continue
        field = fields[name]
        if field.is_repeated:
            out[name] = tuple(getattr(message, name))
        elif field.has_presence and not message.HasField(name):
            continue
        else:
            out[name] = getattr(message, name)
    out.update(extra)
    return out


# -- hosts --------------------------------------------------------------------------------------------


def gpu_to_proto(gpu: m.FleetGpu) -> pb.FleetGpu:
    return _fill(gpu, pb.FleetGpu())


def gpu_from_proto(msg: pb.FleetGpu) -> m.FleetGpu:
    return m.FleetGpu(**_read(msg, m.FleetGpu))


def host_to_proto(host: m.FleetHost) -> pb.FleetHost:
    msg = _fill(host, pb.FleetHost(), skip=("labels", "gpus"))
    _labels_to_proto(host.labels, msg.labels)
    msg.gpus.extend(gpu_to_proto(g) for g in host.gpus)
    return msg


def host_from_proto(msg: pb.FleetHost) -> m.FleetHost:
    return m.FleetHost(
        **_read(msg, m.FleetHost, skip=("labels", "gpus", "state", "sources")),
        state=enum_from_proto(m.HostState, msg.state, unknown=None) or m.HostState.CONNECTING,
        sources=tuple(s for s in (enum_from_proto(m.DiscoverySource, n, unknown=None) for n in msg.sources) if s),
        labels=_labels_from_proto(msg.labels),
        gpus=tuple(gpu_from_proto(g) for g in msg.gpus),
    )


def filter_to_proto(flt: m.HostFilter) -> pb.FleetHostFilter:
    msg = _fill(flt, pb.FleetHostFilter(), skip=("labels",))
    _labels_to_proto(flt.labels, msg.labels)
    return msg


def filter_from_proto(msg: pb.FleetHostFilter) -> m.HostFilter:
    return m.HostFilter(
        **_read(msg, m.HostFilter, skip=("labels", "states")),
        labels=_labels_from_proto(msg.labels),
        states=tuple(enum_from_proto(m.HostState, s, f"filter.states[{i}]") for i, s in enumerate(msg.states) if s),
    )


# -- deployments and placements ------------------------------------------------------------------


def deployment_to_proto(dep: m.Deployment) -> pb.FleetDeployment:
    from planner_service.server.convert import to_proto

    msg = _fill(dep, pb.FleetDeployment(), skip=("plan", "filter", "sizing", "gpu_pinning", "slos", "load"))
    msg.plan.CopyFrom(to_proto(dep.plan, planner_pb2.PlanRequest()))
    for slo in dep.slos:
        msg.slos.add(metric=slo.metric, milliseconds=slo.milliseconds)
    if dep.load is not None:
        msg.load.CopyFrom(to_proto(dep.load, planner_pb2.LoadOptions()))
    msg.filter.CopyFrom(filter_to_proto(dep.filter))
    if dep.sizing is not None:
        msg.sizing = enum_to_proto(dep.sizing)
    if dep.gpu_pinning is not None:
        msg.gpu_pinning = enum_to_proto(dep.gpu_pinning)
    return msg


def deployment_from_proto(msg: pb.FleetDeployment) -> m.Deployment:
    from planner_service.server.convert import from_proto

    return m.Deployment(
        **_read(msg, m.Deployment, skip=("plan", "filter", "sizing", "replicas", "gpu_pinning", "slos", "load")),
        replicas=msg.replicas or 1,
        plan=from_proto(msg.plan, PlanRequest),
        slos=tuple(SloTarget(metric=s.metric, milliseconds=s.milliseconds) for s in msg.slos),
        load=from_proto(msg.load, LoadOptions) if msg.HasField("load") else None,
        filter=filter_from_proto(msg.filter),
        sizing=enum_from_proto(m.MemorySizing, msg.sizing, "deployment.sizing"),
        gpu_pinning=enum_from_proto(m.GpuPinning, msg.gpu_pinning, "deployment.gpu_pinning"),
    )


def placement_to_proto(p: m.Placement) -> pb.FleetPlacement:
    msg = _fill(p, pb.FleetPlacement(), skip=("artifacts",))
    if p.artifacts is not None:
        a = p.artifacts
        art = _fill(a, msg.artifacts, skip=("kubernetes_node_selector",))
        _labels_to_proto(a.kubernetes_node_selector, art.kubernetes_node_selector)
    return msg


def placement_from_proto(msg: pb.FleetPlacement) -> m.Placement:
    artifacts = None
    if msg.HasField("artifacts"):
        artifacts = m.PlacementArtifacts(
            **_read(msg.artifacts, m.PlacementArtifacts, skip=("kubernetes_node_selector", "kubernetes_gpu_pinning")),
            kubernetes_node_selector=_labels_from_proto(msg.artifacts.kubernetes_node_selector),
            kubernetes_gpu_pinning=enum_from_proto(m.GpuPinning, msg.artifacts.kubernetes_gpu_pinning, unknown=None),
        )
    return m.Placement(**_read(msg, m.Placement, skip=("artifacts",)), artifacts=artifacts)


def reservation_to_proto(r: m.Reservation) -> pb.FleetReservation:
    msg = pb.FleetReservation(reservation_id=r.reservation_id, deployment=r.deployment,
                              expires_in_seconds=r.expires_in_seconds, state=enum_to_proto(r.state))
    msg.expire_time.FromDatetime(r.expire_time.astimezone(timezone.utc))
    msg.holds.extend(_fill(h, pb.FleetHold()) for h in r.holds)
    return msg


def reservation_from_proto(msg: pb.FleetReservation) -> m.Reservation:
    return m.Reservation(
        reservation_id=msg.reservation_id, deployment=msg.deployment,
        expire_time=msg.expire_time.ToDatetime(tzinfo=timezone.utc), expires_in_seconds=msg.expires_in_seconds,
        state=enum_from_proto(m.ReservationState, msg.state, unknown=None) or m.ReservationState.ACTIVE,
        holds=tuple(m.Hold(**_read(h, m.Hold)) for h in msg.holds),
    )


def _rejection_to_proto(x: m.Rejection) -> pb.FleetRejection:
    return pb.FleetRejection(host=x.host, reason=enum_to_proto(x.reason), message=x.message)


def _rejection_from_proto(x: pb.FleetRejection) -> m.Rejection:
    return m.Rejection(host=x.host, reason=enum_from_proto(m.RejectReason, x.reason, unknown=None) or m.RejectReason.INVALID, message=x.message)


def place_response_to_proto(r: m.PlaceResponse) -> pb.PlaceResponse:
    """The deprecated per-host ``rejections`` list stays empty: the closest few and the counts per
    reason keep the answer's size independent of the fleet's."""
    msg = pb.PlaceResponse(
        deployment=r.deployment, unplaced_replicas=r.unplaced_replicas, hosts_considered=r.hosts_considered
    )
    msg.placements.extend(placement_to_proto(p) for p in r.placements)
    msg.selected.extend(placement_to_proto(p) for p in r.selected)
    msg.closest_rejections.extend(_rejection_to_proto(x) for x in r.rejections)
    msg.rejection_counts.extend(
        pb.FleetRejectionCount(reason=enum_to_proto(reason), hosts=n)
        for reason, n in sorted(r.rejection_counts.items(), key=lambda item: (-item[1], item[0].value))
    )
    if r.reservation is not None:
        msg.reservation.CopyFrom(reservation_to_proto(r.reservation))
    return msg


def place_response_from_proto(msg: pb.PlaceResponse) -> m.PlaceResponse:
    # An older planner fills the deprecated list with every rejected host: read it when the new one is empty.
    rejections = msg.closest_rejections or msg.rejections
    return m.PlaceResponse(
        deployment=msg.deployment,
        placements=tuple(placement_from_proto(p) for p in msg.placements),
        selected=tuple(placement_from_proto(p) for p in msg.selected),
        rejections=tuple(_rejection_from_proto(x) for x in rejections),
        rejection_counts={enum_from_proto(m.RejectReason, c.reason, unknown=None) or m.RejectReason.INVALID: c.hosts
                          for c in msg.rejection_counts},
        unplaced_replicas=msg.unplaced_replicas,
        hosts_considered=msg.hosts_considered,
        reservation=reservation_from_proto(msg.reservation) if msg.HasField("reservation") else None,
    )


def fleet_plan_to_proto(r: m.FleetPlanResponse) -> pb.PlanFleetResponse:
    msg = pb.PlanFleetResponse()
    for a in r.assignments:
        msg.assignments.add(deployment=a.deployment, replica=a.replica).placement.CopyFrom(placement_to_proto(a.placement))
    msg.unplaced.extend(pb.FleetUnplaced(deployment=u.deployment, replica=u.replica, reason=u.reason) for u in r.unplaced)
    msg.budgets.extend(_fill(b, pb.FleetGpuBudget()) for b in r.budgets)
    if r.reservation is not None:
        msg.reservation.CopyFrom(reservation_to_proto(r.reservation))
    for sizing in r.sizings:
        item = _fill(sizing, msg.sizings.add(), skip=("predicted",))
        item.predicted.extend(planner_pb2.PredictedLatency(key=k, value=v) for k, v in sizing.predicted.items())
    return msg


def fleet_plan_from_proto(msg: pb.PlanFleetResponse) -> m.FleetPlanResponse:
    return m.FleetPlanResponse(
        assignments=tuple(
            m.Assignment(deployment=a.deployment, replica=a.replica, placement=placement_from_proto(a.placement))
            for a in msg.assignments
        ),
        unplaced=tuple(m.Unplaced(deployment=u.deployment, replica=u.replica, reason=u.reason) for u in msg.unplaced),
        budgets=tuple(m.GpuBudget(**_read(b, m.GpuBudget)) for b in msg.budgets),
        reservation=reservation_from_proto(msg.reservation) if msg.HasField("reservation") else None,
        sizings=tuple(m.DeploymentSizing(**_read(z, m.DeploymentSizing, skip=("predicted",)),
                                         predicted={p.key: p.value for p in z.predicted}) for z in msg.sizings),
    )
