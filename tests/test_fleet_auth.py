"""A token-protected fleet, as the shipped deployments run it: the agents require a bearer token,
the planner requires one from its clients and sends the agents' token on its inventory streams."""

from __future__ import annotations

import time

import pytest
from reliability.helpers import H100_CAPTURE, agent_process, planner_process, wait_until

from clients.sdk.errors import Unauthenticated
from clients.sdk.fleet_client import FleetClient
from planner_service.fleet.models import HostState


def test_planner_watches_token_protected_agents_with_the_agent_token(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-fleet-token\n")
    env = {"HF_HUB_OFFLINE": "1"}
    with agent_process("--replay", str(H100_CAPTURE), "--auth-token-file", str(token_file), env=env) as agent, \
            planner_process("--agents", agent.address, "--auth-token-file", str(token_file),
                            "--agent-auth-token-file", str(token_file), env=env) as planner:
        with FleetClient(planner.address, token="s3cret-fleet-token") as fleet:
            hosts = wait_until(lambda: [h for h in fleet.list_hosts() if h.state == HostState.READY], 15)
            assert [h.address for h in hosts] == [agent.address]
        with FleetClient(planner.address, token="wrong") as fleet, pytest.raises(Unauthenticated):
            fleet.list_hosts()


def test_without_the_agent_token_the_host_never_becomes_ready(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-fleet-token\n")
    env = {"HF_HUB_OFFLINE": "1"}
    with agent_process("--replay", str(H100_CAPTURE), "--auth-token-file", str(token_file), env=env) as agent, \
            planner_process("--agents", agent.address, "--fleet-stale-after-seconds", "1", env=env) as planner, \
            FleetClient(planner.address) as fleet:
        wait_until(lambda: fleet.list_hosts(), 15)  # discovered from the static list...
        deadline = time.monotonic() + 2.0  # ...but the agent refuses the stream: never READY
        while time.monotonic() < deadline:
            assert all(h.state != HostState.READY for h in fleet.list_hosts())
            time.sleep(0.1)
