"""GPU agent faults, each against a real agent gRPC server (in-thread or the ``gpu-agent`` console
script), bounded in time.

* a hung NVML call: the collector gives up after ``call_timeout_seconds``, the agent keeps answering
  with its last snapshot marked stale, and readiness drops (liveness stays);
* one failing GPU: its NVML calls raise, the GPU carries the error and the others still report;
* no driver and no ``nvidia-smi`` on PATH: ``--backend auto`` serves zero GPUs with the reason;
  ``--backend nvidia-smi`` refuses to start with one line.

The NVML faults wrap the agent's own replay of the recorded H100 (``RecordedNvml`` over
``shared/fixtures/nvidia/h100-80gb-hbm3/nvml.json``), so everything else goes through the real
NVML-to-inventory conversion.
"""

from __future__ import annotations

import copy
import json
import subprocess
import threading
import time

import grpc
import pynvml
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.sdk.agent_client import AgentClient
from gpu_agent.app import BackgroundAgent, GpuAgentSettings
from gpu_agent.inventory import CollectionSource
from gpu_agent.nvml_backend import NvmlBackend
from gpu_agent.nvml_replay import NVML_FILE, RecordedNvml
from gpu_agent.servicer import SERVICE_FULL_NAME
from reliability.helpers import H100_CAPTURE, VENV_BIN, agent_process, wait_until

pytestmark = pytest.mark.skipif(not (H100_CAPTURE / NVML_FILE).is_file(), reason="shared NVML capture not present")

FAST = {"listen": "127.0.0.1:0", "interval_seconds": 0.2, "call_timeout_seconds": 0.3,
        "collect_timeout_seconds": 2.0, "stale_after_intervals": 3.0, "heartbeat_seconds": 0.5, "grace_seconds": 0.2}


def _capture() -> dict:
    return json.loads((H100_CAPTURE / NVML_FILE).read_text())


def _two_gpu_capture() -> dict:
    """The recorded H100 twice (a second device with its own index, UUID and bus id)."""
    data = _capture()
    second = copy.deepcopy(data["devices"][0])
    second["index"] = 1
    second["uuid"] = second["uuid"][:-4] + "beef"
    if isinstance(second.get("pci"), dict):
        for key in ("busId", "bus_id", "busIdLegacy"):
            if key in second["pci"]:
                second["pci"][key] = str(second["pci"][key]).replace(":00.0", ":01.0")
    data["devices"].append(second)
    return data


class HangingNvml(RecordedNvml):
    """The replay, until ``hang`` is set: then every device query blocks (a wedged driver)."""

    def __init__(self, data: dict) -> None:
        super().__init__(data)
        self.hang = threading.Event()
        self.release = threading.Event()

    def nvmlDeviceGetCount(self) -> int:
        if self.hang.is_set():
            self.release.wait(30)  # stuck in the "driver"; released at teardown so the thread ends
        return super().nvmlDeviceGetCount()


class OneGpuFails(RecordedNvml):
    """GPU 1's memory and utilisation queries raise NVML_ERROR_GPU_IS_LOST (a fallen-off-the-bus GPU)."""

    def nvmlDeviceGetMemoryInfo(self, h, version=None):  # noqa: ANN001, ANN201
        if h.index == 1:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return super().nvmlDeviceGetMemoryInfo(h, version)

    def nvmlDeviceGetUtilizationRates(self, h):  # noqa: ANN001, ANN201
        if h.index == 1:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return super().nvmlDeviceGetUtilizationRates(h)


def _readiness(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        return health.Check(health_pb2.HealthCheckRequest(service=SERVICE_FULL_NAME), timeout=2).status


def _liveness(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status


def test_a_hung_nvml_call_keeps_the_last_snapshot_marked_stale():
    nvml = HangingNvml(_capture())
    backend = NvmlBackend(nvml, CollectionSource.REPLAY_NVML, "h100-hang")
    agent = BackgroundAgent(GpuAgentSettings(**FAST), backend).start()
    try:
        with AgentClient(agent.address) as client:
            fresh = client.get_inventory(timeout_seconds=5)
            assert not fresh.stale and len(fresh.gpus) == 1 and fresh.gpus[0].memory_total_bytes
            assert _readiness(agent.address) == health_pb2.HealthCheckResponse.SERVING

            nvml.hang.set()
            stale = wait_until(lambda: (inv := client.get_inventory(timeout_seconds=5)).stale and inv, timeout_seconds=10)
            assert stale.gpus == fresh.gpus, "the last good snapshot is served while the driver hangs"
            assert "did not return" in (stale.status_reason or "") or "hung" in (stale.status_reason or "")
            # Serving never waits on the driver: reads stay fast while the collector is stuck.
            started = time.monotonic()
            for _ in range(20):
                client.get_inventory(timeout_seconds=2)
            assert time.monotonic() - started < 2.0
            wait_until(lambda: _readiness(agent.address) == health_pb2.HealthCheckResponse.NOT_SERVING, 10)
            assert _liveness(agent.address) == health_pb2.HealthCheckResponse.SERVING

            nvml.hang.clear()
            nvml.release.set()  # the driver recovers: the next collection is fresh again
            wait_until(lambda: not client.get_inventory(timeout_seconds=5).stale, timeout_seconds=10)
    finally:
        nvml.release.set()
        agent.stop()


def test_one_failing_gpu_is_marked_and_the_others_still_report():
    backend = NvmlBackend(OneGpuFails(_two_gpu_capture()), CollectionSource.REPLAY_NVML, "h100-2gpu")
    with BackgroundAgent(GpuAgentSettings(**FAST), backend) as agent, AgentClient(agent.address) as client:
        inventory = client.get_inventory(timeout_seconds=5)
    assert [g.index for g in inventory.gpus] == [0, 1]
    healthy, lost = inventory.gpus
    assert healthy.error is None and healthy.memory_total_bytes and healthy.memory_free_bytes is not None
    assert lost.error, "the failing GPU must say so"
    assert lost.memory_total_bytes is None
    assert any(e.gpu_index == 1 and "nvmlDeviceGetMemoryInfo" in e.probe for e in inventory.errors)
    assert not any(e.gpu_index == 0 for e in inventory.errors)
    assert not inventory.stale, "one bad GPU is not a failed collection"


def _no_gpu_env(tmp_path) -> dict[str, str]:
    """PATH with python but without nvidia-smi, and no NVML library to load."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    return {"PATH": f"{bin_dir}:{VENV_BIN}", "LD_LIBRARY_PATH": str(tmp_path)}


@pytest.mark.skipif(subprocess.run(["sh", "-c", "command -v nvidia-smi"], capture_output=True).returncode == 0
                    or any(VENV_BIN.glob("nvidia-smi")), reason="this host has nvidia-smi")
def test_no_driver_and_no_nvidia_smi_serves_zero_gpus_with_the_reason(tmp_path):
    with agent_process("--backend", "auto", "--interval-seconds", "0.5", env=_no_gpu_env(tmp_path),
                       log_path=tmp_path / "agent.log") as agent, AgentClient(agent.address) as client:
        inventory = client.get_inventory(timeout_seconds=5)
        assert inventory.gpus == ()
        assert inventory.source is CollectionSource.NONE
        reason = (inventory.status_reason or "").lower()
        assert "nvml" in reason and "nvidia-smi" in reason, inventory.status_reason
        assert _liveness(agent.address) == health_pb2.HealthCheckResponse.SERVING


def test_backend_nvidia_smi_without_the_binary_fails_in_one_line(tmp_path):
    done = subprocess.run([str(VENV_BIN / "gpu-agent"), "--listen", "127.0.0.1:0", "--backend", "nvidia-smi"],
                          capture_output=True, text=True, timeout=30, env=_no_gpu_env(tmp_path))
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "nvidia-smi" in done.stderr.splitlines()[-1]


def test_backend_nvml_without_a_driver_keeps_serving(tmp_path):
    """An explicit NVML backend on a host without the library: the agent answers, never crashes."""
    with agent_process("--backend", "nvml", "--interval-seconds", "0.5", "--collect-timeout-seconds", "2",
                       env=_no_gpu_env(tmp_path), log_path=tmp_path / "agent.log") as agent:
        with AgentClient(agent.address) as client:
            try:
                inventory = client.get_inventory(timeout_seconds=5)
            except Exception as exc:  # noqa: BLE001  (an SdkError with a clear code is acceptable too)
                assert getattr(exc, "code", "") in ("UNAVAILABLE", "FAILED_PRECONDITION"), exc
            else:
                assert inventory.gpus == () and (inventory.stale or inventory.status_reason)
        assert agent.proc.poll() is None
        assert _liveness(agent.address) == health_pb2.HealthCheckResponse.SERVING
