"""The GPU agent end to end: real grpc.aio servers on 127.0.0.1:0, real channels, recorded captures
replayed through the real parsing code, a fake ``nvidia-smi`` first on PATH, and fault injection
through an NVML-shaped object (a call that sleeps, a call that fails for one GPU)."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import stat
import threading
import time
from pathlib import Path

import grpc
import pynvml
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from helpers.paths import CAPTURES, MIB
from helpers.paths import H100_CAPTURE as H100
from helpers.paths import H100_UUID as UUID
from helpers.waiting import wait_until
from clients.sdk.agent_client import AgentClient, AsyncAgentClient
from clients.sdk.errors import Unauthenticated, Unavailable
from clients.sdk.testing import FakeAgent
from gpu_agent.app import BackgroundAgent, GpuAgentSettings
from gpu_agent.inventory import CollectionSource, GpuLink, HostInventory, InventoryHeartbeat
from gpu_agent.nvml_backend import NvmlBackend
from gpu_agent.nvml_replay import RecordedNvml
from gpu_agent.servicer import SERVICE_FULL_NAME
from vllm_planner.v1 import agent_pb2, agent_pb2_grpc


def settings(**overrides) -> GpuAgentSettings:
    values = dict(listen="127.0.0.1:0", interval_seconds=0.1, heartbeat_seconds=0.3, call_timeout_seconds=0.5,
                  collect_timeout_seconds=3.0)
    values.update(overrides)
    return GpuAgentSettings(**values)


def readiness(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_FULL_NAME), timeout=2).status


@pytest.mark.parametrize("variant", ["idle", "busy"])
def test_replay_serves_exact_recorded_values(variant):
    with BackgroundAgent(settings(replay=H100, replay_variant=variant)) as agent:
        with grpc.insecure_channel(agent.address) as channel:  # what grpcurl or a Go client sees
            raw = agent_pb2_grpc.GpuAgentServiceStub(channel).GetInventory(agent_pb2.GetInventoryRequest(), timeout=5)
        inventory = raw.inventory
        assert inventory.source == agent_pb2.COLLECTION_SOURCE_REPLAY_NVIDIA_SMI
        assert (inventory.host.driver_version, inventory.host.cuda_driver_version) == ("580.159.04", "13.0")
        (gpu,) = inventory.gpus
        assert gpu.uuid == UUID and gpu.compute_capability == "9.0"
        assert gpu.memory_total_bytes == 81559 * MIB and gpu.memory_reserved_bytes == 480 * MIB
        assert gpu.memory_cuda_total_bytes == 81079 * MIB
        assert not gpu.HasField("error")
        if variant == "idle":
            assert (gpu.memory_used_bytes, gpu.memory_free_bytes) == (0, 81079 * MIB)
            assert list(inventory.processes) == []
        else:
            assert (gpu.memory_used_bytes, gpu.memory_free_bytes) == (12967 * MIB, 68113 * MIB)
            assert [(p.pid, p.name, p.used_memory_bytes, p.gpu_uuid) for p in inventory.processes] == [
                (425, "python3", 2194 * MIB, UUID), (450, "/opt/torch/.venv/bin/python3", 10758 * MIB, UUID)]
        with AgentClient(agent.address) as client:
            typed = client.get_inventory()
            assert typed.gpus[0].memory_used_bytes == gpu.memory_used_bytes
            assert typed.stale is False and client.is_ready()


def test_nvml_replay_over_grpc_and_reflection():
    with BackgroundAgent(settings(replay=H100, replay_variant="busy", replay_source="nvml")) as agent:
        with AgentClient(agent.address) as client:
            inventory = client.get_inventory()
        assert inventory.source is CollectionSource.REPLAY_NVML
        assert inventory.gpus[0].memory_free_bytes == 85520809984 - 14099546112
        assert inventory.gpus[0].numa_node is None  # "Not Supported" stays absent across the wire
        with grpc.insecure_channel(agent.address) as channel:
            services = ProtoReflectionDescriptorDatabase(channel).get_services()
        assert SERVICE_FULL_NAME in services and "grpc.health.v1.Health" in services


def test_watch_gives_snapshot_then_heartbeats_then_changes():
    first = HostInventory.model_validate(
        {"host": {"hostname": "h", "agent_version": "t"}, "source": "static",
         "gpus": [{"index": 0, "uuid": "GPU-a", "name": "X", "memory_used_bytes": 0}]})
    fake = FakeAgent(first, interval_seconds=0.05, heartbeat_seconds=0.2)
    with fake as address, AgentClient(address) as client:
        stream = client.watch_inventory(timeout_seconds=10)
        events = [next(stream) for _ in range(3)]
        assert isinstance(events[0], HostInventory) and events[0].gpus[0].uuid == "GPU-a"
        assert all(isinstance(e, InventoryHeartbeat) and not e.stale for e in events[1:])
        assert events[1].collect_time is not None
        fake.set_inventory(first.model_copy(update={"gpus": (first.gpus[0].model_copy(update={"memory_used_bytes": MIB}),)}))
        changed = next(e for e in stream if isinstance(e, HostInventory))
        assert changed.gpus[0].memory_used_bytes == MIB
        stream.close()


def test_async_client_streams_and_gets():
    async def scenario(address: str) -> tuple[HostInventory, list[type]]:
        async with AsyncAgentClient(address) as client:
            inventory = await client.get_inventory()
            kinds = []
            async for event in client.watch_inventory(timeout_seconds=5):
                kinds.append(type(event))
                if len(kinds) == 2:
                    break
            return inventory, kinds

    with FakeAgent.from_capture(CAPTURES / "h100-sxm-8x-nvswitch", heartbeat_seconds=0.2) as address:
        inventory, kinds = asyncio.run(scenario(address))
    assert len(inventory.gpus) == 8 and all(isinstance(link, GpuLink) for link in inventory.links)
    assert kinds == [HostInventory, InventoryHeartbeat]


def test_none_backend_reports_zero_gpus_with_reason_and_keeps_serving():
    with BackgroundAgent(settings(backend="none")) as agent, AgentClient(agent.address) as client:
        for _ in range(2):
            inventory = client.get_inventory()
            assert inventory.gpus == () and inventory.source is CollectionSource.NONE
            assert inventory.status_reason
            time.sleep(0.15)
        assert client.is_ready()


def _fake_smi(tmp_path: Path, body: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def test_nvidia_smi_fallback_runs_the_binary_on_path(tmp_path, monkeypatch):
    d = H100
    bin_dir = _fake_smi(tmp_path, f"""case "$*" in
  "-q -x") cat "{d}/nvidia-smi-q-x-busy.xml" ;;
  "-L") cat "{d}/nvidia-smi-L.txt" ;;
  "topo -m") cat "{d}/nvidia-smi-topo-m.txt" ;;
  --query-gpu=*) cat "{d}/query-gpu.csv" ;;
  --query-compute-apps=*) cat "{d}/query-compute-apps-busy.csv" ;;
  *) echo "unexpected: $*" >&2; exit 2 ;;
esac
""")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    # auto: NVML has no library on this machine, so the agent falls back to nvidia-smi.
    with BackgroundAgent(settings(backend="auto")) as agent, AgentClient(agent.address) as client:
        inventory = client.get_inventory()
    if inventory.source is CollectionSource.NVML:  # pragma: no cover - a machine with a real driver
        pytest.skip("NVML is available here; the fallback is not used")
    assert inventory.source is CollectionSource.NVIDIA_SMI
    assert inventory.gpus[0].uuid == UUID and inventory.gpus[0].compute_capability == "9.0"
    assert inventory.gpus[0].memory_used_bytes == 12967 * MIB
    assert [p.pid for p in inventory.processes] == [425, 450]


def test_hung_nvidia_smi_is_killed_and_reported(tmp_path, monkeypatch):
    bin_dir = _fake_smi(tmp_path, "sleep 30\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    started = time.monotonic()
    with BackgroundAgent(settings(backend="nvidia-smi", call_timeout_seconds=0.3)) as agent:
        with AgentClient(agent.address) as client, pytest.raises(Unavailable, match="did not return"):
            client.get_inventory()
        assert readiness(agent.address) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert time.monotonic() - started < 10


class _FlakyNvml(RecordedNvml):
    """Two GPUs from nvml.json; memory reads can hang, GPU 1's temperature read fails."""

    def __init__(self, data: dict) -> None:
        data = copy.deepcopy(data)
        second = copy.deepcopy(data["devices"][0])
        second.update(index=1, uuid="GPU-00000000-0000-0000-0000-000000000001")
        data["devices"].append(second)
        super().__init__(data)
        self.hang = threading.Event()
        self.release = threading.Event()

    def nvmlDeviceGetMemoryInfo(self, h, version=None):
        if self.hang.is_set():
            self.release.wait(30)
        return super().nvmlDeviceGetMemoryInfo(h, version)

    def nvmlDeviceGetTemperature(self, h, sensor):
        if h.index == 1:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)
        return super().nvmlDeviceGetTemperature(h, sensor)


def test_per_gpu_failure_marks_that_gpu_and_hung_call_keeps_last_snapshot_stale():
    nvml = _FlakyNvml(json.loads((H100 / "nvml.json").read_text()))
    backend = NvmlBackend(nvml, CollectionSource.REPLAY_NVML)
    with BackgroundAgent(settings(call_timeout_seconds=0.2, stale_after_intervals=2), backend) as agent:
        with AgentClient(agent.address) as client:
            good = client.get_inventory()
            first, second = good.gpus
            assert first.error is None and first.temperature_celsius == 35
            assert second.error and "nvmlDeviceGetTemperature" in second.error and second.temperature_celsius is None
            assert second.memory_total_bytes == 85520809984  # the rest of that GPU still reports
            assert [e.gpu_index for e in good.errors] == [1]
            assert readiness(agent.address) == health_pb2.HealthCheckResponse.SERVING

            nvml.hang.set()
            hung = ("did not return", "still hung")
            wait_until(lambda: any(word in (client.get_inventory().status_reason or "") for word in hung))
            stale = client.get_inventory()
            assert stale.stale is True
            # The last good snapshot is still served, with its own (older) collection time.
            assert [g.uuid for g in stale.gpus] == [g.uuid for g in good.gpus]
            assert stale.collect_time >= good.collect_time
            wait_until(lambda: readiness(agent.address) == health_pb2.HealthCheckResponse.NOT_SERVING)

            nvml.hang.clear()
            nvml.release.set()
            wait_until(lambda: not client.get_inventory().stale)
            wait_until(lambda: readiness(agent.address) == health_pb2.HealthCheckResponse.SERVING)


def test_bearer_token_is_required_when_configured():
    inventory = HostInventory.model_validate({"host": {"hostname": "h", "agent_version": "t"}, "source": "static"})
    with FakeAgent(inventory, token="s3cret") as address:
        with AgentClient(address) as anonymous, pytest.raises(Unauthenticated):
            anonymous.get_inventory()
        with AgentClient(address, token="s3cret") as client:
            assert client.get_inventory().host.hostname == "h"
