"""Agent inventory -> fleet host (recorded H100 capture through the agent's real parsers), and the
fleet.proto converters round-tripping every message the service sends."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpu_agent.convert import inventory_to_proto
from gpu_agent.factory import replay_backend
from gpu_agent.inventory import CollectionSource, Gpu, GpuLink, HostInfo, HostInventory, LinkLevel, MigDevice, MigMode
from gpu_agent.watchdog import CallGuard
from planner_service.engine.models import HardwareOptions, ModelOptions, PlanRequest, WorkloadOptions
from planner_service.fleet import converters as conv
from planner_service.fleet.inventory_adapter import host_from_inventory
from planner_service.fleet.models import Deployment, FleetPlanRequest, HostFilter, HostState, MemorySizing
from planner_service.fleet.packing import plan_fleet
from planner_service.fleet.placement import TwinCache, place
from planner_service.fleet.testing import StandInTwin, a100_mig_host, h100_host, h100_nvlink_host

CAPTURE = next((p for p in (Path(__file__).resolve().parents[2] / "shared/fixtures/nvidia/h100-80gb-hbm3",
                            Path("/work/shared/fixtures/nvidia/h100-80gb-hbm3")) if p.is_dir()), None)
GIB = 1 << 30


@pytest.mark.skipif(CAPTURE is None, reason="shared/fixtures/nvidia capture not present")
@pytest.mark.parametrize("source", ["nvidia-smi", "nvml"])
def test_recorded_h100_idle_and_busy(source: str):
    idle, busy = (
        host_from_inventory(inventory_to_proto(replay_backend(CAPTURE, v, source, hostname=f"h100-{v}").collect(CallGuard(5))), f"{v}:1")
        for v in ("idle", "busy")
    )
    (gi,), (gb,) = idle.gpus, busy.gpus
    assert gi.uuid == gb.uuid == "GPU-d772cfa7-b213-5aff-beb9-abaa615bb009"
    assert gi.memory_total_bytes == 85017493504  # CUDA total: NVML total 81559 MiB - 480 MiB reserved
    assert gi.memory_free_bytes == 85017493504 and gi.compute_capability == "9.0" and gi.healthy
    assert 12 * GIB < gi.memory_free_bytes - gb.memory_free_bytes < 14 * GIB  # two processes hold ~13 GiB
    assert gi.nvlink_peer_uuids == () and not gi.mig_enabled  # "Not Supported" means none
    assert idle.host == "h100-idle" and idle.state is HostState.READY
    assert idle.labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"


def _dgx() -> HostInventory:
    gpus = tuple(Gpu(index=i, uuid=f"GPU-{i}", name="NVIDIA H100 80GB HBM3", memory_total_bytes=85520809984,
                     memory_reserved_bytes=503316480, memory_free_bytes=85017493504, numa_node=i // 2) for i in range(4))
    links = (GpuLink(gpu_uuid_a="GPU-0", gpu_uuid_b="GPU-1", gpu_index_a=0, gpu_index_b=1, level=LinkLevel.NVLINK, nvlink_count=18),
             GpuLink(gpu_uuid_a="GPU-2", gpu_uuid_b="GPU-3", gpu_index_a=2, gpu_index_b=3, level=None, nvlink_count=4),
             GpuLink(gpu_uuid_a="GPU-0", gpu_uuid_b="GPU-2", gpu_index_a=0, gpu_index_b=2, level=LinkLevel.SYS, nvlink_count=0))
    return HostInventory(host=HostInfo(hostname="dgx", agent_version="t"), gpus=gpus, links=links, source=CollectionSource.STATIC)


def test_link_matrix_becomes_nvlink_peers_and_cuda_total_is_derived():
    host = host_from_inventory(inventory_to_proto(_dgx()), "dgx:1")
    peers = {g.uuid: g.nvlink_peer_uuids for g in host.gpus}
    assert peers == {"GPU-0": ("GPU-1",), "GPU-1": ("GPU-0",), "GPU-2": ("GPU-3",), "GPU-3": ("GPU-2",)}
    assert {g.memory_total_bytes for g in host.gpus} == {85017493504}
    assert [g.numa_node for g in host.gpus] == [0, 0, 1, 1]


def test_mig_parent_is_not_a_target_its_instances_are():
    parent = Gpu(index=0, uuid="GPU-p", name="NVIDIA A100-SXM4-80GB", memory_total_bytes=80 * GIB, memory_free_bytes=80 * GIB,
                 compute_capability="8.0", mig_mode=MigMode.ENABLED,
                 mig_devices=(MigDevice(uuid="MIG-b", parent_uuid="GPU-p", index=1, profile="2g.20gb", memory_total_bytes=20 * GIB,
                                        memory_used_bytes=5 * GIB),
                              MigDevice(uuid="MIG-a", parent_uuid="GPU-p", index=0, profile="3g.40gb", memory_total_bytes=40 * GIB,
                                        memory_free_bytes=40 * GIB)))
    broken = Gpu(index=1, uuid="GPU-x", name="NVIDIA A100-SXM4-80GB", error="GpuIsLost")
    inv = HostInventory(host=HostInfo(hostname="mig", agent_version="t"), gpus=(parent, broken), source=CollectionSource.STATIC)
    host = host_from_inventory(inventory_to_proto(inv), "mig:1")
    by_uuid = {g.uuid: g for g in host.gpus}
    assert by_uuid["GPU-p"].mig_enabled and by_uuid["MIG-a"].mig_parent_uuid == "GPU-p"
    assert by_uuid["MIG-b"].memory_free_bytes == 15 * GIB and by_uuid["MIG-b"].mig_profile == "2g.20gb"
    assert not by_uuid["GPU-x"].healthy  # listed, never placed on
    assert host.labels["nvidia.com/mig.capable"] == "true"
    answer = place(Deployment(plan=PlanRequest(model=ModelOptions(model="m", max_model_len=4096))), [host], TwinCache(StandInTwin(params_b=1)))
    assert [p.gpu_uuids for p in answer.placements] == [("MIG-a",)]


def test_records_built_without_validation_are_what_validation_builds():
    """host_from_inventory skips pydantic's validation (it runs for every report of every host): the
    records must still be exactly the validated ones, types included, for whole GPUs, MIG instances,
    unhealthy GPUs and stale snapshots; copies must not leak into the shared fields-set."""
    mig = Gpu(index=0, uuid="GPU-p", name="NVIDIA A100-SXM4-80GB", memory_total_bytes=80 * GIB, memory_free_bytes=80 * GIB,
              compute_capability="8.0", mig_mode=MigMode.ENABLED,
              mig_devices=(MigDevice(uuid="MIG-a", parent_uuid="GPU-p", index=0, profile="3g.40gb", memory_total_bytes=40 * GIB,
                                     memory_used_bytes=GIB),
                           MigDevice(uuid="MIG-b", parent_uuid="GPU-p", index=1, profile="2g.20gb")))
    lost = Gpu(index=1, uuid="GPU-x", name="NVIDIA A100-SXM4-80GB", error="GpuIsLost")
    inventories = [_dgx(), _dgx().model_copy(update={"stale": True, "status_reason": "NVML call timed out"}),
                   HostInventory(host=HostInfo(hostname="mig", agent_version="t", driver_version="580.1"), gpus=(mig, lost),
                                 source=CollectionSource.STATIC)]
    for inventory in inventories:
        host = host_from_inventory(inventory_to_proto(inventory), "h:1", generation=7)
        validated = type(host).model_validate(host.model_dump())
        assert validated == host and validated.model_dump() == host.model_dump()
        for fast, checked in zip(host.gpus, validated.gpus):
            assert {k: type(v) for k, v in fast.__dict__.items()} == {k: type(v) for k, v in checked.__dict__.items()}
        before = set(host.model_fields_set)
        moved = host.model_copy(update={"state": HostState.STALE, "extra_field_name": 1})
        assert moved.state is HostState.STALE and host.model_fields_set == before
        assert host_from_inventory(inventory_to_proto(inventory), "h:1").model_fields_set == before


def test_stale_agent_snapshot_is_reported_stale():
    inv = _dgx().model_copy(update={"stale": True, "status_reason": "NVML call timed out"})
    host = host_from_inventory(inventory_to_proto(inv), "dgx:1")
    assert host.state is HostState.STALE and host.state_reason == "NVML call timed out"


def test_converters_round_trip_every_message():
    for host in (h100_host("a", labels={"zone": "x"}), h100_nvlink_host("b"), a100_mig_host("c")):
        assert conv.host_from_proto(conv.host_to_proto(host)) == host
    flt = HostFilter(gpu_types=("H100",), labels={"k": "v"}, min_free_memory_bytes=5, states=(HostState.READY, HostState.STALE))
    assert conv.filter_from_proto(conv.filter_to_proto(flt)) == flt
    dep = Deployment(name="d", plan=PlanRequest(model=ModelOptions(model="m", max_model_len="auto"), hardware=HardwareOptions(tensor_parallel_size=2),
                                                workload=WorkloadOptions(concurrency=7)),
                     replicas=3, max_itl_seconds=0.05, filter=flt, sizing=MemorySizing.FIT_WORKLOAD)
    assert conv.deployment_from_proto(conv.deployment_to_proto(dep)) == dep
    hosts = [h100_host("a"), h100_host("b", busy=True), h100_nvlink_host("c"), a100_mig_host("d")]
    answer = place(Deployment(plan=PlanRequest(model=ModelOptions(model="m", max_model_len=8192)), replicas=2), hosts, TwinCache(StandInTwin()))
    assert answer.rejections == () and answer.selected
    assert conv.place_response_from_proto(conv.place_response_to_proto(answer)) == answer
    tp4 = place(Deployment(plan=PlanRequest(model=ModelOptions(model="m"), hardware=HardwareOptions(tensor_parallel_size=4))), hosts,
                TwinCache(StandInTwin()))
    assert conv.place_response_from_proto(conv.place_response_to_proto(tp4)) == tp4
    fleet = plan_fleet(FleetPlanRequest(deployments=(dep.model_copy(update={"filter": HostFilter()}),)), hosts,
                       lambda d: (TwinCache(StandInTwin()), False))
    assert conv.fleet_plan_from_proto(conv.fleet_plan_to_proto(fleet)) == fleet


def test_fleet_twin_never_reads_local_paths_a_client_names(tmp_path):
    from planner_service.engine.errors import PermissionDeniedError
    from planner_service.fleet.evaluator import TwinProvider

    (tmp_path / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    with pytest.raises(PermissionDeniedError):
        TwinProvider().prepare(Deployment(plan=PlanRequest(model=ModelOptions(model=str(tmp_path)))))
