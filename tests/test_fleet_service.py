"""FleetService over real gRPC on 127.0.0.1:0: SDK (sync + async), agent registration, CLI.

Agents here are in-process inventory streams (the watcher's injected opener) and the twin is the
transparent stand-in, so this file checks the service plumbing; tests/test_fleet_e2e.py runs real
agents and the real memory twin.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml

from clients.cli.main import main
from clients.sdk.errors import InvalidArgument, NotFound
from clients.sdk.fleet_client import AsyncFleetClient, FleetClient
from gpu_agent.register import heartbeat_loop
from helpers.fleet import FleetPlanner
from helpers.waiting import wait_until
from planner_service.engine.models import ModelOptions, PlanRequest
from planner_service.engine.source import ModelSource
from planner_service.fleet.evaluator import TwinProvider
from planner_service.fleet.models import Deployment, HostFilter, HostState
from planner_service.fleet.registry import FleetTimings
from planner_service.fleet.runtime import FleetSettings
from planner_service.fleet.testing import BackgroundLoop, StandInTwin, a100_mig_host, h100_host, h100_nvlink_host

FAST = FleetTimings(
    heartbeat_interval_seconds=0.2, registration_lease_seconds=1.0, stale_after_seconds=0.6, gone_after_seconds=1.0,
    evict_after_seconds=30, sweep_interval_seconds=0.05, backoff_initial_seconds=0.05, backoff_max_seconds=0.2,
)
INVENTORY = {
    "10.9.0.1:50052": h100_host("h100-idle", labels={"zone": "a"}),
    "10.9.0.2:50052": h100_host("h100-busy", busy=True),
    "10.9.0.3:50052": h100_nvlink_host("dgx-a"),
    "127.0.0.1:50052": a100_mig_host("a100-mig"),  # registers itself in the tests
}


class FakeAgents:
    """Inventory streams keyed by address; ``down`` addresses fail to connect."""

    def __init__(self) -> None:
        self.down: set[str] = set()

    async def open(self, address: str):
        known = INVENTORY.get(address)
        if known is None or address in self.down:
            raise ConnectionError(f"{address} refused")
        while address not in self.down:
            yield known
            await asyncio.sleep(0.05)
        raise ConnectionError("agent went away")


def _provider() -> TwinProvider:
    return TwinProvider(resolve=lambda m: ModelSource(model=m.model, source="inline", config={}), build=lambda s, r: StandInTwin()(r))


@pytest.fixture
def planner():
    loop = BackgroundLoop()
    agents = FakeAgents()
    settings = FleetSettings(agents=list(INVENTORY)[:3], timings=FAST)
    p = FleetPlanner(loop, settings, open_stream=agents.open, provider=_provider())
    p.agents = agents
    yield p
    p.stop()
    loop.close()


def test_sync_sdk_lists_gets_places_and_plans(planner):
    with FleetClient(planner.address) as client:
        hosts = wait_until(lambda: [h for h in client.list_hosts() if h.state is HostState.READY] if len(
            [h for h in client.list_hosts() if h.state is HostState.READY]) == 3 else None)
        assert [h.host for h in hosts] == ["dgx-a", "h100-busy", "h100-idle"]
        assert [h.host for h in client.list_hosts(HostFilter(labels={"zone": "a"}))] == ["h100-idle"]
        dgx = client.get_host("dgx-a")
        assert len(dgx.gpus) == 8 and dgx.gpus[0].nvlink_peer_uuids and dgx.sources[0].value == "static"
        with pytest.raises(NotFound):
            client.get_host("nope")
        answer = client.place(Deployment(plan=PlanRequest(model=ModelOptions(model="m", max_model_len=8192)), replicas=2))
        assert [p.host for p in answer.selected] == ["dgx-a", "h100-idle"]
        assert answer.placements[-1].host == "h100-busy" and answer.placements[-1].gpu_memory_utilization < 0.9
        plan = client.plan_fleet([Deployment(name="a", plan=PlanRequest(model=ModelOptions(model="m", max_model_len=4096)), replicas=2)])
        assert len(plan.assignments) == 2 and plan.budgets
        with pytest.raises(InvalidArgument):
            client.place(Deployment(plan=PlanRequest(model=ModelOptions(model="m")), replicas=1).model_copy(update={"replicas": -1}))


def test_a_cancel_that_meets_the_planner_lookup_is_not_swallowed():
    """The agent's registration loops resolve the planner in a thread: a cancellation that arrives in
    the same loop turn as the lookup's answer must still cancel (Python 3.11's wait_for returned the
    answer instead, and a stopped agent kept reporting)."""
    import threading
    import time

    from gpu_agent.register import _resolve

    async def scenario() -> None:
        called, release = threading.Event(), threading.Event()

        def resolver(host: str, port: int) -> list[str]:
            called.set()
            release.wait(5)
            return [f"127.0.0.1:{port}"]

        task = asyncio.create_task(_resolve("planner.example:50051", resolver, 5.0))
        await asyncio.get_running_loop().run_in_executor(None, called.wait, 5)
        release.set()
        time.sleep(0.3)  # blocks the loop: the lookup's answer is queued for this loop's next turn
        task.cancel()  # ... and so is the cancellation
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


def test_agent_registration_heartbeat_and_lease(planner):
    async def start_heartbeat():
        return asyncio.create_task(heartbeat_loop(planner.address, advertise_address="127.0.0.1:50052", host="a100-mig",
                                                  labels={"zone": "b"}))

    async def stop(task):
        task.cancel()
        done, pending = await asyncio.wait({task}, timeout=3)
        if pending:
            task.print_stack()
            raise AssertionError("heartbeat did not stop")

    with FleetClient(planner.address) as client:
        task = planner.loop.run(start_heartbeat())
        host = wait_until(lambda: next((h for h in client.list_hosts() if h.host == "a100-mig" and h.state is HostState.READY), None))
        assert host.address == "127.0.0.1:50052" and [s.value for s in host.sources] == ["registered"]
        assert host.labels == {"zone": "b"}
        planner.loop.run(asyncio.sleep(0.5))  # several heartbeats (the planner asks for 0.2 s): lease kept
        assert client.get_host("a100-mig").state is HostState.READY
        planner.loop.run(stop(task))
        # no more heartbeats: the lease lapses, the watcher stops, the host goes stale then gone
        gone = wait_until(lambda: next((h for h in client.list_hosts() if h.host == "a100-mig" and h.state is HostState.GONE), None))
        assert gone.sources == () and gone.state_reason == "no longer discovered"


def test_watch_fleet_streams_snapshot_then_changes(planner):
    async def run():
        async with AsyncFleetClient(planner.address) as client:
            events = []
            async for event in client.watch_fleet(timeout_seconds=10):
                events.append(event)
                if len([e for e in events if e.initial]) == 3 and not any(not e.initial for e in events):
                    planner.loop.loop.call_soon_threadsafe(planner.agents.down.add, "10.9.0.1:50052")
                if any(not e.initial and e.host.host == "h100-idle" and e.host.state is HostState.STALE for e in events):
                    return events

    events = asyncio.run(asyncio.wait_for(run(), 15))
    assert [e.initial for e in events[:3]] == [True, True, True]
    stale = [e for e in events if not e.initial and e.host.host == "h100-idle"][-1]
    assert "agent went away" in stale.host.state_reason


def test_cli_hosts_place_plan_and_watch(planner, capsys, tmp_path):
    with FleetClient(planner.address) as client:
        wait_until(lambda: len([h for h in client.list_hosts() if h.state is HostState.READY]) == 3)
    assert main(["fleet", "hosts", "--planner", planner.address, "--json"]) == 0
    hosts = json.loads(capsys.readouterr().out)
    assert [h["host"] for h in hosts] == ["dgx-a", "h100-busy", "h100-idle"]

    assert main(["fleet", "hosts", "--planner", planner.address, "--gpu-type", "H100"]) == 0
    table = capsys.readouterr().out
    assert "dgx-a" in table and "8x NVIDIA H100 80GB HBM3" in table

    assert main(["fleet", "host", "dgx-a", "--planner", planner.address]) == 0
    assert "GPU-" in capsys.readouterr().out

    assert main(["fleet", "place", "--planner", planner.address, "--model", "m", "--max-model-len", "8192", "--tp", "4",
                 "--show-artifacts"]) == 0
    out = capsys.readouterr().out
    assert "dgx-a" in out and "tp_impossible" in out and "CUDA_VISIBLE_DEVICES=GPU-" in out

    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"deployments": [
        {"name": "chat", "model": "m", "max_model_len": 4096, "replicas": 2, "workload": {"concurrency": 4}},
        {"name": "big", "model": "m", "params_b": 70, "tensor_parallel_size": 8, "max_model_len": 4096, "replicas": 2,
         "sizing": "max_free"},
    ]}))
    assert main(["fleet", "plan", str(path), "--planner", planner.address, "--json"]) == 1  # one 'big' replica cannot fit
    plan = json.loads(capsys.readouterr().out)
    assert [a["deployment"] for a in plan["assignments"]] == ["chat", "chat", "big"]
    assert plan["unplaced"][0]["deployment"] == "big"

    path.write_text("deployments:\n  - model: m\n    colour: blue\n")
    assert main(["fleet", "plan", str(path), "--planner", planner.address]) == 2
    assert "deployments[0]: unknown keys: 'colour'" in capsys.readouterr().err

    assert main(["fleet", "watch", "--planner", planner.address, "--count", "3"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3


def test_cli_without_planner_is_one_line_error(capsys, monkeypatch):
    monkeypatch.delenv("VLLM_PLANNER_ADDRESS", raising=False)
    assert main(["fleet", "hosts"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --planner") and len(err.strip().splitlines()) == 1
