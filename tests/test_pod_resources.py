"""Allocation truth from Kubernetes: the agent reads a (fake) kubelet's PodResources API over a real unix
socket with grpcio, and the planner never places on a GPU a pod holds, even at zero memory used."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

from clients.sdk.agent_client import AgentClient
from clients.sdk.errors import Unavailable
from clients.sdk.fleet_client import FleetClient
from gpu_agent.app import BackgroundAgent, GpuAgentSettings
from gpu_agent.backends import StaticBackend
from gpu_agent.inventory import CollectionSource, Gpu, HostInfo, HostInventory, MigDevice, MigMode
from gpu_agent.pod_resources import PodResourcesClient
from helpers.fleet import FleetPlanner
from helpers.kubelet import FakeKubelet
from helpers.waiting import wait_until
from planner_service.engine.models import ModelOptions, PlanRequest
from planner_service.fleet.models import Deployment, HostState, RejectReason
from planner_service.fleet.registry import FleetTimings
from planner_service.fleet.runtime import FleetSettings
from planner_service.fleet.testing import BackgroundLoop

GIB = 1 << 30
H100 = "NVIDIA H100 80GB HBM3"
UUIDS = [f"GPU-0000000{i}-aaaa-bbbb-cccc-000000000000" for i in range(3)]
MIG_PARENT = "GPU-a100a100-0000-0000-0000-000000000000"
MIG = ["MIG-11111111-0000-0000-0000-000000000000", "MIG-22222222-0000-0000-0000-000000000000"]


def _inventory() -> HostInventory:
    gpus = tuple(
        Gpu(index=i, uuid=u, name=H100, memory_total_bytes=85520809984, memory_reserved_bytes=503316480, memory_used_bytes=0,
            memory_free_bytes=85017493504, memory_cuda_total_bytes=85017493504, compute_capability="9.0", mig_mode=MigMode.DISABLED)
        for i, u in enumerate(UUIDS)
    )
    a100 = Gpu(index=3, uuid=MIG_PARENT, name="NVIDIA A100-SXM4-80GB", memory_total_bytes=85899345920, memory_reserved_bytes=724828160,
               memory_cuda_total_bytes=85174583296, memory_used_bytes=0, memory_free_bytes=85174583296, compute_capability="8.0",
               mig_mode=MigMode.ENABLED, mig_devices=tuple(
                   MigDevice(uuid=u, parent_uuid=MIG_PARENT, index=k, profile="3g.40gb", memory_total_bytes=int(39.25 * GIB),
                             memory_used_bytes=0, memory_free_bytes=int(39.25 * GIB)) for k, u in enumerate(MIG)))
    return HostInventory(host=HostInfo(hostname="k8s-node-1", agent_version="test"), gpus=gpus + (a100,), source=CollectionSource.STATIC)


@pytest.fixture
def sock():
    # Unix socket paths are limited to ~107 bytes: keep it short.
    with tempfile.TemporaryDirectory(prefix="kubelet-") as directory:
        yield Path(directory) / "kubelet.sock"


def test_client_resolves_every_device_id_spelling(sock):
    pods = {
        ("ml", "vllm-0"): {"vllm": {"nvidia.com/gpu": [UUIDS[0]], "example.com/nic": ["eth1"]}},
        ("ml", "legacy"): {"main": {"nvidia.com/gpu": ["1"]}},  # DEVICE_ID_STRATEGY=index
        ("ml", "mig"): {"main": {"nvidia.com/mig-3g.40gb": [MIG[1]]}},
        ("ml", "shared"): {"main": {"nvidia.com/gpu": [f"{UUIDS[2]}::3"]}},  # time-slicing replica
        ("ml", "ghost"): {"main": {"nvidia.com/gpu": ["GPU-not-on-this-host"]}},
    }
    claims = {("ml", "dra"): {"main": [("gpus-claim", "gpu.nvidia.com", "gpu-2")]}}
    allocatable = {"nvidia.com/gpu": [UUIDS[1], UUIDS[0]], "nvidia.com/mig-3g.40gb": MIG}
    with FakeKubelet(sock, pods, claims, allocatable) as kubelet:
        report = PodResourcesClient(sock).read(_inventory().gpus)
    assert kubelet.calls == ["List", "GetAllocatableResources"]
    resolved = {(a.pod, a.device_id): a.gpu_uuid for a in report.allocations}
    assert resolved == {
        ("vllm-0", UUIDS[0]): UUIDS[0], ("legacy", "1"): UUIDS[1], ("mig", MIG[1]): MIG[1],
        ("shared", f"{UUIDS[2]}::3"): UUIDS[2], ("ghost", "GPU-not-on-this-host"): "", ("dra", "gpu-2"): UUIDS[2],
    }
    dra = next(a for a in report.allocations if a.pod == "dra")
    assert (dra.claim_name, dra.namespace, dra.container) == ("gpus-claim", "ml", "main")
    assert [(a.resource_name, a.device_ids) for a in report.allocatable] == [
        ("nvidia.com/gpu", tuple(sorted(UUIDS[:2]))), ("nvidia.com/mig-3g.40gb", tuple(MIG))]


def _agent(socket_path: Path) -> BackgroundAgent:
    settings = GpuAgentSettings(listen="127.0.0.1:0", interval_seconds=0.1, heartbeat_seconds=0.3,
                                pod_resources_socket=socket_path, collect_timeout_seconds=5)
    return BackgroundAgent(settings, StaticBackend(_inventory()))


def test_planner_never_places_on_gpus_the_kubelet_allocated(sock, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pods = {("ml", "starting"): {"vllm": {"nvidia.com/gpu": [UUIDS[0], UUIDS[1]]}},
            ("ml", "mig-job"): {"main": {"nvidia.com/mig-3g.40gb": [MIG[0]]}}}
    loop = BackgroundLoop()
    with FakeKubelet(sock, pods, allocatable={"nvidia.com/gpu": UUIDS}) as kubelet, _agent(sock) as agent:
        with AgentClient(agent.address) as client:
            inventory = client.get_inventory()
        assert inventory.pod_resources.socket_path == str(sock)
        assert {a.gpu_uuid for a in inventory.pod_resources.allocations} == {UUIDS[0], UUIDS[1], MIG[0]}
        planner = FleetPlanner(loop, FleetSettings(agents=[agent.address], timings=FleetTimings(sweep_interval_seconds=0.05)))
        try:
            with FleetClient(planner.address) as fleet:
                host = wait_until(lambda: next((h for h in fleet.list_hosts() if h.state is HostState.READY), None), timeout_seconds=15)
                holders = {g.uuid: g.allocated_to for g in host.gpus}
                assert holders[UUIDS[0]] == "ml/starting/vllm" and holders[UUIDS[2]] is None and holders[MIG[0]] == "ml/mig-job/main"
                # Every GPU shows all its memory free, yet the pod's GPUs are taken.
                small = Deployment(plan=PlanRequest(model=ModelOptions(model="Qwen/Qwen3-0.6B", max_model_len=4096)), replicas=3)
                answer = fleet.place(small)
                chosen = [u for p in answer.selected for u in p.gpu_uuids]
                assert not {UUIDS[0], UUIDS[1], MIG[0]} & set(chosen)
                assert set(chosen) <= {UUIDS[2], MIG[1]}

                # The pod's allocation grows to every whole GPU: the host offers only the free MIG slice.
                kubelet.pods[("ml", "starting")] = {"vllm": {"nvidia.com/gpu": UUIDS}}
                wait_until(lambda: fleet.get_host("k8s-node-1").gpus[2].allocated_to is not None, timeout_seconds=10)
                only_h100 = Deployment(plan=PlanRequest(model=ModelOptions(model="Qwen/Qwen3-0.6B", max_model_len=4096)),
                                       filter={"gpu_types": ["H100"]})
                rejected = fleet.place(only_h100)
                assert not rejected.selected and rejected.rejection_counts == {RejectReason.ALLOCATED: 1}
                assert "ml/starting/vllm" in rejected.rejections[0].message
        finally:
            planner.stop()
            loop.close()


def test_a_kubelet_that_does_not_answer_makes_the_snapshot_stale(sock):
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock))  # the socket exists (mounted) but nothing serves it: no snapshot at all
    try:
        with _agent(sock) as agent, AgentClient(agent.address) as client:
            with pytest.raises(Unavailable, match="kubelet PodResources"):
                client.get_inventory()
    finally:
        listener.close()
        os.unlink(sock)
    with FakeKubelet(sock, {("ml", "p"): {"c": {"nvidia.com/gpu": [UUIDS[0]]}}}) as kubelet:
        agent = _agent(sock).start()
        try:
            with AgentClient(agent.address) as client:
                assert not client.get_inventory().stale
                kubelet.__exit__()  # the kubelet restarts: its socket goes away for a while
                stale = wait_until(lambda: (lambda inv: inv if inv.stale else None)(client.get_inventory()), timeout_seconds=5)
                assert "kubelet PodResources" in stale.status_reason
                assert stale.pod_resources.allocations[0].gpu_uuid == UUIDS[0]  # the last truth, marked stale
        finally:
            agent.stop()


def test_no_socket_no_report(tmp_path):
    with _agent(tmp_path / "absent.sock") as agent, AgentClient(agent.address) as client:
        inventory = client.get_inventory()
    assert inventory.pod_resources is None and not inventory.stale
