"""Load on loopback: several client processes (each with a few threads) call ``Plan`` on a real
``vllm-planner-service`` subprocess for a bounded time.

Pass criteria: zero errors; every response byte-identical (as JSON) to the same request made one at
a time before the load; the server's resident memory flat after warm-up (sampled from /proc at the
start, the middle and the end of the run). Duration: ``LOAD_SECONDS`` (default 10, the CI setting);
``benchmarks/load.py`` is the longer manual run with the same driver.
"""

from __future__ import annotations

import os

import pytest

from reliability.helpers import offline_environ, planner_process
from reliability.load import run_load

LOAD_SECONDS = float(os.environ.get("LOAD_SECONDS", "10"))
PROCESSES = int(os.environ.get("LOAD_PROCESSES", "3"))
THREADS = int(os.environ.get("LOAD_THREADS", "4"))
# After warm-up a steady server must not grow: allow allocator noise, not a leak per request.
RSS_GROWTH_LIMIT_BYTES = 24 << 20

pytestmark = pytest.mark.slow


def test_concurrent_plans_from_several_processes(tmp_path):
    with planner_process("--max-workers", "4", env=offline_environ(tmp_path / "hf-home"),
                         log_path=tmp_path / "planner.log") as planner:
        result = run_load(planner.address, planner.pid, seconds=LOAD_SECONDS, processes=PROCESSES, threads=THREADS)
        assert planner.proc.poll() is None, "the planner died under load"
    rss = result["rss"]
    summary = (f"{result['ok']} plans in {result['elapsed_seconds']:.1f}s from {result['callers']} callers; "
               f"RSS start {rss['start'] >> 20} MiB, middle {rss['middle'] >> 20} MiB, end {rss['end'] >> 20} MiB")
    print(summary)
    assert result["errors"] == [], result["errors"][:5]
    assert result["mismatches"] == 0, "a response under load differed from the same request made alone"
    assert result["ok"] >= PROCESSES * THREADS * 2, summary  # every caller got through several plans
    assert rss["end"] - rss["start"] < RSS_GROWTH_LIMIT_BYTES, summary
    assert rss["middle"] - rss["start"] < RSS_GROWTH_LIMIT_BYTES, summary


def test_concurrent_place_calls_on_a_live_fleet(tmp_path, monkeypatch):
    """``FleetService.Place`` under the same load, against a fleet watching a replayed H100 agent.

    The fleet service runs in this test process (``helpers.fleet.FleetPlanner``), so the RSS figure is
    this process's: it still shows a per-request leak, if any.
    """
    from reliability.helpers import H100_CAPTURE, agent_process, wait_until

    if not H100_CAPTURE.is_dir():
        pytest.skip("shared NVIDIA capture not present")
    from clients.sdk.fleet_client import FleetClient
    from helpers.fleet import FleetPlanner
    from planner_service.fleet.models import HostState
    from planner_service.fleet.runtime import FleetSettings
    from planner_service.fleet.testing import BackgroundLoop

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    agent = agent_process("--replay", str(H100_CAPTURE), "--replay-variant", "busy", "--hostname", "h100-load",
                          "--interval-seconds", "0.5", log_path=tmp_path / "agent.log")
    loop = BackgroundLoop()
    planner = FleetPlanner(loop, FleetSettings(agents=[agent.address]))
    try:
        with FleetClient(planner.address) as client:
            wait_until(lambda: [h.state for h in client.list_hosts()] == [HostState.READY], 15)
        result = run_load(planner.address, os.getpid(), seconds=LOAD_SECONDS / 2, processes=2, threads=THREADS,
                          kind="place")
    finally:
        planner.stop()
        loop.close()
        agent.stop()
    rss = result["rss"]
    summary = (f"{result['ok']} placements in {result['elapsed_seconds']:.1f}s from {result['callers']} callers; "
               f"RSS start {rss['start'] >> 20} MiB, end {rss['end'] >> 20} MiB")
    print(summary)
    assert result["errors"] == [], result["errors"][:5]
    assert result["mismatches"] == 0, "a Place response under load differed from the same request made alone"
    assert result["ok"] >= 2 * THREADS, summary
    assert rss["end"] - rss["start"] < RSS_GROWTH_LIMIT_BYTES, summary
