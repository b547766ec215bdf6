"""Observability through real RPCs against live processes' /metrics, and driver events marking GPUs
unhealthy: a ``gpu-agent`` replaying an NVML capture with a recorded XID 79 stops being placed on."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.request

import pytest

from clients.sdk.agent_client import AgentClient
from clients.sdk.errors import NotFound
from clients.sdk.fleet_client import FleetClient
from clients.sdk.planner_client import PlannerClient
from helpers.paths import H100_CAPTURE, H100_UUID
from helpers.waiting import wait_until
from planner_service.engine.models import HardwareOptions, ModelOptions, PlanRequest
from planner_service.fleet.models import Deployment, HostState, RejectReason

pytestmark = pytest.mark.skipif(not H100_CAPTURE.is_dir(), reason="shared/fixtures/nvidia capture not present")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return proc, proc.stdout.readline().strip()


def _stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _host(fleet: FleetClient, name: str):  # noqa: ANN202
    try:
        return fleet.get_host(name)
    except NotFound:  # known by its address only until its first inventory arrives
        return None


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _value(metrics: dict[str, float], name: str, **labels: str) -> float | None:
    for series, value in metrics.items():
        if series.split("{")[0] == name and all(f'{k}="{v}"' in series for k, v in labels.items()):
            return value
    return None


def _capture_with_xid(tmp_path, xid: int):  # noqa: ANN001, ANN202
    capture = tmp_path / "capture"
    shutil.copytree(H100_CAPTURE, capture)
    data = json.loads((capture / "nvml.json").read_text())
    data["events"] = [{"after_seconds": 1.5, "gpu_index": 0, "type": "xid", "data": xid}]
    (capture / "nvml.json").write_text(json.dumps(data))
    return capture


def test_documented_metrics_move_through_real_rpcs(tmp_path):
    capture = tmp_path / "capture"
    shutil.copytree(H100_CAPTURE, capture)
    agent_metrics, planner_metrics = _free_port(), _free_port()
    agent, agent_address = _start(["gpu_agent.main", "--listen", "127.0.0.1:0", "--replay", str(capture), "--hostname", "node-a",
                                   "--interval-seconds", "0.2", "--heartbeat-seconds", "0.5", "--metrics-listen", f"127.0.0.1:{agent_metrics}",
                                   "--pod-resources-socket", "off"])
    planner, planner_address = _start(["planner_service.server.main", "--listen", "127.0.0.1:0", "--agents", agent_address,
                                       "--metrics-listen", f"127.0.0.1:{planner_metrics}", "--fleet-heartbeat-seconds", "0.5"])
    try:
        with FleetClient(planner_address) as fleet, PlannerClient(planner_address) as plans:
            wait_until(lambda: [h for h in fleet.list_hosts() if h.state is HostState.READY], timeout_seconds=20)
            request = PlanRequest(model=ModelOptions(model="Qwen/Qwen3-8B"), hardware=HardwareOptions(gpu="H100"))
            plans.plan(request)
            plans.plan(request)  # the second one is a metadata cache hit
            too_big = PlanRequest(model=ModelOptions(model="meta-llama/Llama-3.1-70B-Instruct", max_model_len=131072),
                                  hardware=HardwareOptions(gpu="L4"))
            plans.plan(too_big)
        m = _scrape(planner_metrics)
        assert _value(m, "vllm_planner_plans_total", outcome="fits") == 2
        assert _value(m, "vllm_planner_plans_total", outcome="does_not_fit") == 1
        assert _value(m, "vllm_planner_hub_cache_requests_total", result="hit") >= 1
        assert _value(m, "vllm_planner_hub_cache_requests_total", result="miss") >= 2
        assert _value(m, "vllm_planner_fleet_hosts", state="ready") == 1
        assert _value(m, "grpc_server_handled_total", grpc_method="Plan", grpc_code="OK") == 3

        (capture / "nvidia-smi-q-x.xml").rename(capture / "hidden.xml")  # collections now fail
        with FleetClient(planner_address) as fleet:
            wait_until(lambda: fleet.get_host("node-a").state is HostState.STALE, timeout_seconds=10)
        m = _scrape(planner_metrics)
        assert _value(m, "vllm_planner_fleet_hosts", state="stale") == 1 and _value(m, "vllm_planner_fleet_hosts", state="ready") == 0
        a = _scrape(agent_metrics)
        assert _value(a, "vllm_planner_agent_collection_seconds_count", source="nvidia-smi") >= 1
        assert _value(a, "vllm_planner_agent_collection_errors_total", source="nvidia-smi", reason="driver") >= 1
        assert _value(a, "vllm_planner_agent_snapshot_age_seconds") > 0
        labels = {"gpu": "0", "UUID": H100_UUID, "modelName": "NVIDIA H100 80GB HBM3", "Hostname": "node-a"}
        assert _value(a, "vllm_planner_agent_gpu_memory_free_bytes", **labels) == 85017493504
        assert _value(a, "vllm_planner_agent_gpu_temperature_celsius", **labels) is not None
        assert _value(a, "vllm_planner_agent_gpu_power_usage_watts", **labels) == pytest.approx(76.04)
        assert _value(a, "vllm_planner_agent_gpu_healthy", **labels) == 1
    finally:
        _stop(planner, agent)


@pytest.mark.parametrize("xid,unhealthy", [(79, True), (13, False)])
def test_a_critical_xid_marks_the_gpu_unhealthy_and_place_skips_it(tmp_path, xid, unhealthy):
    capture = _capture_with_xid(tmp_path, xid)
    metrics_port = _free_port()
    agent, agent_address = _start(["gpu_agent.main", "--listen", "127.0.0.1:0", "--replay", str(capture), "--replay-source", "nvml",
                                   "--hostname", "node-x", "--interval-seconds", "5", "--heartbeat-seconds", "0.5",
                                   "--metrics-listen", f"127.0.0.1:{metrics_port}", "--pod-resources-socket", "off"])
    planner, planner_address = _start(["planner_service.server.main", "--listen", "127.0.0.1:0", "--agents", agent_address,
                                       "--fleet-heartbeat-seconds", "0.5"])
    try:
        with AgentClient(agent_address) as client:
            gpu = wait_until(lambda: (lambda g: g if g.xid_events_count else None)(client.get_inventory().gpus[0]), timeout_seconds=15)
        assert gpu.last_xid == xid and (gpu.health.value == "unhealthy") is unhealthy
        if unhealthy:
            assert re.match(r"XID 79 at \d{4}-", gpu.health_reason)
        a = _scrape(metrics_port)
        labels = {"UUID": H100_UUID, "Hostname": "node-x"}
        assert _value(a, "vllm_planner_agent_gpu_xid_errors_total", **labels) == 1
        assert _value(a, "vllm_planner_agent_gpu_last_xid", **labels) == xid
        assert _value(a, "vllm_planner_agent_gpu_healthy", **labels) == (0 if unhealthy else 1)
        with FleetClient(planner_address) as fleet:
            host = wait_until(lambda: (lambda h: h if h and h.state is HostState.READY and h.gpus[0].healthy is not unhealthy else None)(
                _host(fleet, "node-x")), timeout_seconds=15)
            answer = fleet.place(Deployment(plan=PlanRequest(model=ModelOptions(model="Qwen/Qwen3-8B", max_model_len=8192))))
        if unhealthy:
            assert "XID 79" in host.gpus[0].health_reason
            assert not answer.selected and answer.rejection_counts == {RejectReason.UNHEALTHY: 1}
            assert "XID 79" in answer.rejections[0].message
        else:
            assert answer.selected
    finally:
        _stop(planner, agent)
