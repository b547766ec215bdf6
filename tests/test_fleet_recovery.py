"""Recovery on real processes: a ``gpu-agent`` whose collection fails goes STALE at the planner, and is
READY again within one heartbeat interval of recovering, though its GPU memory never changed.

The agent replays a copy of the recorded H100 capture; removing its ``nvidia-smi -q -x`` recording
makes every collection fail (the same path as a driver error), putting it back makes them succeed
with exactly the inventory the planner already has. Both services are real subprocesses on loopback.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest

from clients.sdk.agent_client import AgentClient
from clients.sdk.errors import NotFound
from clients.sdk.fleet_client import FleetClient
from helpers.paths import H100_CAPTURE
from helpers.waiting import wait_until
from planner_service.engine.models import ModelOptions, PlanRequest
from planner_service.fleet.models import Deployment, HostState, RejectReason

HEARTBEAT_SECONDS = 1.0
pytestmark = pytest.mark.skipif(not H100_CAPTURE.is_dir(), reason="shared/fixtures/nvidia capture not present")


def _start(args: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    return proc, proc.stdout.readline().strip()


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _agent(capture, *extra: str) -> tuple[subprocess.Popen, str]:  # noqa: ANN001
    return _start(["gpu_agent.main", "--listen", "127.0.0.1:0", "--replay", str(capture), "--hostname", "h100-flaky",
                   "--interval-seconds", "0.2", "--heartbeat-seconds", str(HEARTBEAT_SECONDS), "--pod-resources-socket", "off",
                   *extra])


def _state(client: FleetClient) -> HostState | None:
    try:
        return client.get_host("h100-flaky").state
    except NotFound:  # known by its address only until its first inventory arrives
        return None


@pytest.mark.parametrize("mode", ["dial", "push"])
def test_stale_host_is_ready_again_within_one_heartbeat_of_the_agent_recovering(tmp_path, mode: str):
    """dial: the planner watches the agent (--agents); push: the agent reports (--register-with)."""
    capture = tmp_path / "capture"
    shutil.copytree(H100_CAPTURE, capture)
    xml = capture / "nvidia-smi-q-x.xml"
    planner_args = ["planner_service.server.main", "--listen", "127.0.0.1:0",
                    "--fleet-heartbeat-seconds", str(HEARTBEAT_SECONDS), "--fleet-stale-after-seconds", "5"]
    if mode == "dial":
        agent, agent_address = _agent(capture)
        planner, planner_address = _start(planner_args + ["--agents", agent_address])
    else:
        planner, planner_address = _start(planner_args)
        agent, agent_address = _agent(capture, "--register-with", planner_address)
    try:
        with FleetClient(planner_address) as client:
            wait_until(lambda: _state(client) is HostState.READY, timeout_seconds=20)
            before = client.get_host("h100-flaky")
            deployment = Deployment(plan=PlanRequest(model=ModelOptions(model="Qwen/Qwen3-8B", max_model_len=8192)))
            assert client.place(deployment).selected

            xml.rename(capture / "hidden.xml")  # the next collection fails: the agent says so at once
            stale = wait_until(lambda: (lambda h: h if h.state is HostState.STALE else None)(client.get_host("h100-flaky")),
                               timeout_seconds=5)
            assert "last collection failed" in stale.state_reason
            answer = client.place(deployment)
            assert not answer.selected and answer.rejection_counts == {RejectReason.STATE: 1}
            time.sleep(2 * HEARTBEAT_SECONDS)  # several stale heartbeats: it stays STALE meanwhile
            assert _state(client) is HostState.STALE

            (capture / "hidden.xml").rename(xml)  # the driver is back; the inventory is unchanged
            recovered_at = time.monotonic()
            wait_until(lambda: _state(client) is HostState.READY, timeout_seconds=10, interval_seconds=0.02)
            took = time.monotonic() - recovered_at
            print(f"READY again {took:.2f}s after the agent recovered (heartbeat {HEARTBEAT_SECONDS}s)")
            assert took <= HEARTBEAT_SECONDS
            after = client.get_host("h100-flaky")
            assert after.gpus == before.gpus and after.agent_instance_id == before.agent_instance_id
            assert client.place(deployment).selected
    finally:
        _stop(planner)
        _stop(agent)


def test_agent_instance_id_is_new_on_every_start():
    ids = []
    for _ in range(2):
        agent, address = _agent(H100_CAPTURE)
        try:
            with AgentClient(address) as client:
                ids.append(client.get_inventory().host.agent_instance_id)
        finally:
            _stop(agent)
    assert all(len(i) == 32 for i in ids) and ids[0] != ids[1]
