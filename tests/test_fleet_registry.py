"""Soft-state fleet: state machine on a fake clock, discovery sources, watcher reconnect with backoff."""

from __future__ import annotations

import asyncio
import random
import socket

import pytest

from planner_service.engine.errors import InvalidRequestError
from planner_service.fleet.discovery import DnsDiscovery, Registrations, StaticDiscovery, parse_agent_list, read_agent_file
from planner_service.fleet.models import DiscoverySource, HostFilter, HostState
from planner_service.fleet.registry import FleetRegistry, FleetTimings
from planner_service.fleet.testing import a100_mig_host, h100_host
from planner_service.fleet.watcher import WatcherPool, backoff_seconds, watch_agent

TIMINGS = FleetTimings(stale_after_seconds=10, gone_after_seconds=20, evict_after_seconds=30, registration_lease_seconds=15)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ready_stale_gone_evicted_on_time():
    clock = Clock()
    reg = FleetRegistry(TIMINGS, clock)
    reg.add_target("a:1", DiscoverySource.STATIC)
    assert reg.get("a:1").state is HostState.CONNECTING
    reg.update("a:1", h100_host("gpu-a"))
    assert reg.get("gpu-a").state is HostState.READY and reg.get("gpu-a").address == "a:1"
    clock.now += 9
    reg.sweep()
    assert reg.get("gpu-a").state is HostState.READY
    clock.now += 2
    reg.sweep()
    host = reg.get("gpu-a")
    assert host.state is HostState.STALE and "no inventory for 11.0s" in host.state_reason
    reg.update("a:1", h100_host("gpu-a"))  # a heartbeat brings it back
    assert reg.get("gpu-a").state is HostState.READY
    reg.mark_broken("a:1", "stream failed: UNAVAILABLE")
    assert reg.get("gpu-a").state is HostState.STALE
    clock.now += 21
    reg.sweep()
    assert reg.get("gpu-a").state is HostState.GONE
    clock.now += 31
    reg.sweep()
    assert reg.get("gpu-a").state is HostState.GONE  # still discovered: kept
    reg.remove_target("a:1", DiscoverySource.STATIC)
    reg.sweep()
    assert reg.get("gpu-a") is None and len(reg) == 0


def test_agent_reported_stale_snapshot_is_not_ready():
    reg = FleetRegistry(TIMINGS, Clock())
    stale = h100_host("gpu-a").model_copy(update={"state": HostState.STALE, "state_reason": "NVML timed out"})
    reg.update("a:1", stale)
    assert reg.get("gpu-a").state is HostState.STALE and reg.get("gpu-a").state_reason == "NVML timed out"


def test_filters_and_deterministic_order():
    reg = FleetRegistry(TIMINGS, Clock())
    reg.update("z:1", h100_host("b-host", busy=True))
    reg.update("y:1", a100_mig_host("a-host"))
    assert [h.host for h in reg.hosts()] == ["a-host", "b-host"]
    assert [h.host for h in reg.hosts(HostFilter(gpu_types=("H100",)))] == ["b-host"]
    assert [h.host for h in reg.hosts(HostFilter(min_free_memory_bytes=75 << 30))] == []
    assert [h.host for h in reg.hosts(HostFilter(min_free_memory_bytes=35 << 30))] == ["a-host", "b-host"]
    assert reg.hosts(HostFilter(states=(HostState.STALE,))) == []


def test_static_list_and_file(tmp_path):
    assert parse_agent_list(["b:2,a:1", " a:1 "]) == ["a:1", "b:2"]
    path = tmp_path / "agents.txt"
    path.write_text("# fleet\nh1:50052\nh2:50052, h3:50052  # rack 2\n")
    assert read_agent_file(path) == ["h1:50052", "h2:50052", "h3:50052"]
    with pytest.raises(InvalidRequestError):
        parse_agent_list(["no-port"])
    reg = FleetRegistry(TIMINGS, Clock())
    StaticDiscovery(reg, ["h1:1"]).start()
    assert reg.targets() == ["h1:1"]


def test_dns_discovery_resolves_localhost_and_keeps_answers_on_failure():
    reg = FleetRegistry(TIMINGS, Clock())
    dns = DnsDiscovery(reg, "localhost:50052")
    asyncio.run(dns.refresh())
    assert "127.0.0.1:50052" in reg.targets()

    answers = [["10.0.0.1:1", "10.0.0.2:1"], OSError("SERVFAIL"), ["10.0.0.2:1"]]

    def resolver(host: str, port: int) -> list[str]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    reg2 = FleetRegistry(TIMINGS, Clock())
    dns2 = DnsDiscovery(reg2, "agents.svc:1", resolver)
    asyncio.run(dns2.refresh())
    assert reg2.targets() == ["10.0.0.1:1", "10.0.0.2:1"]
    asyncio.run(dns2.refresh())  # failure: nothing dropped
    assert reg2.targets() == ["10.0.0.1:1", "10.0.0.2:1"]
    asyncio.run(dns2.refresh())
    assert reg2.targets() == ["10.0.0.2:1"]


def test_dns_lookup_is_bounded_by_its_timeout():
    reg = FleetRegistry(FleetTimings(dns_timeout_seconds=0.05), Clock())

    def slow(host: str, port: int) -> list[str]:
        import time

        time.sleep(0.5)
        return ["1.2.3.4:1"]

    async def run() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await DnsDiscovery(reg, "slow:1", slow).refresh()
        return loop.time() - start

    assert asyncio.run(run()) < 0.4 and reg.targets() == []


def test_registration_leases_lapse_without_heartbeat():
    clock = Clock()
    reg = FleetRegistry(TIMINGS, clock)
    leases = Registrations(reg, clock)
    leases.register("10.0.0.7:50052", {"zone": "b"})
    reg.update("10.0.0.7:50052", h100_host("gpu-7", labels={"nvidia.com/gpu.count": "1"}))
    assert reg.targets() == ["10.0.0.7:50052"]
    assert reg.get("gpu-7").labels == {"nvidia.com/gpu.count": "1", "zone": "b"}
    clock.now += 14
    leases.register("10.0.0.7:50052")  # heartbeat renews
    clock.now += 14
    leases.expire()
    assert reg.targets() == ["10.0.0.7:50052"]
    clock.now += 2
    leases.expire()
    assert reg.targets() == []


def test_at_the_registration_cap_lapsed_leases_make_room_and_live_ones_do_not():
    from planner_service.engine.errors import ResourceExhaustedError

    clock = Clock()
    reg = FleetRegistry(TIMINGS, clock)
    leases = Registrations(reg, clock, max_registrations=2)
    leases.register("10.0.0.1:50052")
    clock.now += 10
    leases.register("10.0.0.2:50052")
    with pytest.raises(ResourceExhaustedError):
        leases.register("10.0.0.3:50052")  # both leases live (15 s)
    leases.register("10.0.0.1:50052")  # a renewal is always accepted: both now lapse at 25 s
    clock.now += 10
    with pytest.raises(ResourceExhaustedError):
        leases.register("10.0.0.3:50052")  # 20 s: still both live
    clock.now += 6
    leases.register("10.0.0.3:50052")  # 26 s: both lapsed; at the cap they are expired first, then it is admitted
    assert reg.targets() == ["10.0.0.3:50052"] and len(leases) == 1


def test_backoff_grows_exponentially_with_full_jitter():
    timings = FleetTimings(backoff_initial_seconds=0.5, backoff_max_seconds=8)
    rng = random.Random(1)
    samples = [[backoff_seconds(a, timings, rng) for _ in range(200)] for a in range(6)]
    for attempt, values in enumerate(samples):
        ceiling = min(8, 0.5 * 2**attempt)
        assert all(0 <= v <= ceiling for v in values)
        assert max(values) > ceiling * 0.8  # jitter spans the range
    assert max(samples[5]) <= 8


def test_watcher_reconnects_after_failures_and_marks_the_host_stale_meanwhile():
    async def run() -> list[HostState]:
        reg = FleetRegistry(FleetTimings(backoff_initial_seconds=0.01, backoff_max_seconds=0.02))
        attempts = {"n": 0}
        seen: list[HostState] = []
        connected = asyncio.Event()

        async def opener(address: str):
            attempts["n"] += 1
            if attempts["n"] < 3:
                raise ConnectionError("refused")
            yield h100_host("gpu-a")
            connected.set()
            await asyncio.sleep(3600)

        queue = reg.subscribe()

        async def observe():
            while True:
                seen.append((await queue.get()).host.state)

        observer = asyncio.create_task(observe())
        reg.add_target("a:1", DiscoverySource.STATIC)
        pool = WatcherPool(reg, opener, seed=3)
        pool.reconcile(reg.targets())
        await asyncio.wait_for(connected.wait(), 5)
        assert attempts["n"] == 3 and reg.get("gpu-a").state is HostState.READY
        pool.reconcile([])  # no longer discovered: watcher stopped, host stale
        await asyncio.sleep(0)
        assert reg.get("gpu-a").state is HostState.STALE and reg.get("gpu-a").state_reason == "no longer discovered"
        await pool.close()
        observer.cancel()
        return seen

    states = asyncio.run(run())
    assert states == [HostState.CONNECTING, HostState.STALE, HostState.READY, HostState.STALE]


def test_watch_agent_marks_a_stream_that_ends():
    async def run():
        reg = FleetRegistry(FleetTimings(backoff_initial_seconds=5))

        async def opener(address: str):
            yield h100_host("gpu-a")

        task = asyncio.create_task(watch_agent("a:1", reg, opener, random.Random(0)))
        for _ in range(50):
            await asyncio.sleep(0.01)
            host = reg.get("gpu-a")
            if host is not None and host.state is HostState.STALE:
                break
        task.cancel()
        return reg.get("gpu-a")

    host = asyncio.run(run())
    assert host.state is HostState.STALE and host.state_reason == "inventory stream ended"


def test_system_resolver_of_localhost():
    from planner_service.fleet.discovery import system_resolver

    answer = system_resolver("localhost", 9)
    assert "127.0.0.1:9" in answer or "[::1]:9" in answer
    assert socket.getaddrinfo  # the resolver is the stdlib one


def test_fleet_flags_mix_into_server_settings(tmp_path, monkeypatch):
    import argparse

    from pydantic_settings import SettingsConfigDict

    from planner_service.fleet.runtime import FleetFlags
    from vllm_planner.transport.config import ServerSettings, add_settings_arguments, load_settings

    class Settings(ServerSettings, FleetFlags):
        model_config = SettingsConfigDict(env_prefix="TEST_FLEET_", extra="forbid")

    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, Settings)
    monkeypatch.setenv("TEST_FLEET_FLEET_STALE_AFTER_SECONDS", "7")
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    args = parser.parse_args(["--agents", "a:1,b:2", "--agents", "c:3", "--agents-dns", "gpu-agents.ns.svc:50061",
                              "--fleet-heartbeat-seconds", "2", "--agent-auth-token-file", str(token)])
    fleet = load_settings(Settings, args).fleet_settings()
    assert parse_agent_list(fleet.agents) == ["a:1", "b:2", "c:3"] and fleet.agents_dns == ["gpu-agents.ns.svc:50061"]
    assert fleet.timings.heartbeat_interval_seconds == 2 and fleet.timings.registration_lease_seconds == 6
    assert fleet.timings.stale_after_seconds == 7 and fleet.agent_auth_token == "s3cret"


def test_heartbeats_are_paced_to_the_planners_report_budget():
    """Nomad's rule: past ``heartbeat x max_reports_per_second`` agents, the interval agents are told,
    their leases and the staleness threshold all grow with the number of agents; back under, they shrink."""
    clock = Clock()
    timings = FleetTimings(heartbeat_interval_seconds=2, registration_lease_seconds=6, stale_after_seconds=6,
                           gone_after_seconds=100, max_reports_per_second=5)
    reg = FleetRegistry(timings, clock)
    leases = Registrations(reg, clock)
    for i in range(10):  # 10 agents every 2 s = 5 reports/s: within budget
        leases.register(f"10.0.0.{i}:50052")
    assert (leases.heartbeat_interval_seconds, leases.lease_seconds) == (2, 6)
    for i in range(10, 40):  # 40 agents: told every 8 s, leases of 24 s
        leases.register(f"10.0.0.{i}:50052")
    assert (leases.heartbeat_interval_seconds, leases.lease_seconds) == (8, 24)
    reg.update("10.0.0.39:50052", h100_host("gpu-39"))
    clock.now += 20  # three configured intervals missed, but not three paced ones
    reg.sweep()
    assert reg.get("gpu-39").state is HostState.READY
    leases.register("10.0.0.39:50052")  # only this agent renews (a lease of 24 s again)
    clock.now += 5
    reg.sweep()
    assert reg.get("gpu-39").state is HostState.STALE  # 25 s without an inventory > 24
    leases.expire()  # every other lease, 6 to 23.4 s long, has lapsed
    assert reg.targets() == ["10.0.0.39:50052"]
    assert (leases.heartbeat_interval_seconds, leases.lease_seconds) == (2, 6)
