"""GPU agent cost on the replay backend: inventory collection time, ``GetInventory`` latency and the
agent's resident memory.

For each recorded capture (the real H100 host of ``shared/fixtures/nvidia`` through both the NVML
and the nvidia-smi replays, and the agent team's 8x H100 NVSwitch and A100 MIG captures):

* ``collect``: one full collection by the backend, in-process (what the collector thread does every
  ``--interval-seconds``; the replay parses the recorded NVML values or nvidia-smi XML/CSV, so it
  is a floor for the live backends, which also wait on the driver);
* ``start``: spawning ``gpu-agent --replay DIR`` until it prints its address (first collection done);
* ``GetInventory``: latency of the RPC from a client on loopback (serves the cached snapshot);
* ``RSS``: the agent process's resident memory after start and after all the calls (/proc).

    .venv/bin/python benchmarks/agent.py [--calls 500]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from reliability.helpers import (  # noqa: E402
    H100_CAPTURE,
    REPO,
    agent_process,
    machine_description,
    percentile,
    rss_bytes,
)

CAPTURES = [
    ("H100 (shared)", H100_CAPTURE, "nvml"),
    ("H100 (shared)", H100_CAPTURE, "nvidia-smi"),
    ("8x H100 NVSwitch", REPO / "tests/fixtures/captures/h100-sxm-8x-nvswitch", "nvidia-smi"),
    ("A100 MIG", REPO / "tests/fixtures/captures/a100-80gb-mig", "nvidia-smi"),
]


def _collect_seconds(directory: Path, source: str, runs: int) -> list[float]:
    from gpu_agent.factory import replay_backend
    from gpu_agent.watchdog import CallGuard

    backend = replay_backend(directory, "idle", source)
    guard = CallGuard(10.0)
    backend.collect(guard)  # first call pays imports and lazy parsing
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        backend.collect(guard)
        out.append(time.perf_counter() - started)
    return sorted(out)


def _agent_figures(directory: Path, source: str, calls: int) -> dict:
    from clients.sdk.agent_client import AgentClient

    started = time.perf_counter()
    agent = agent_process("--replay", str(directory), "--replay-source", source, "--interval-seconds", "10")
    start_seconds = time.perf_counter() - started
    try:
        rss_start = rss_bytes(agent.pid)
        latencies = []
        with AgentClient(agent.address) as client:
            gpus = len(client.get_inventory(timeout_seconds=10).gpus)
            for _ in range(calls):
                t0 = time.perf_counter()
                client.get_inventory(timeout_seconds=10)
                latencies.append(time.perf_counter() - t0)
        rss_end = rss_bytes(agent.pid)
    finally:
        agent.stop()
    return {"start": start_seconds, "latencies": sorted(latencies), "rss_start": rss_start, "rss_end": rss_end, "gpus": gpus}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500, help="GetInventory calls per capture.")
    parser.add_argument("--collections", type=int, default=50, help="In-process collections per capture.")
    args = parser.parse_args(argv)

    rows = []
    for label, directory, source in CAPTURES:
        if not directory.is_dir():
            rows.append(f"| {label:<17} | {source:<10} | capture not present: {directory} |")
            continue
        collect = _collect_seconds(directory, source, args.collections)
        figures = _agent_figures(directory, source, args.calls)
        lat = figures["latencies"]
        rows.append(
            f"| {label:<17} | {source:<10} | {figures['gpus']:>4} | {percentile(collect, 0.5) * 1e3:>14.2f} "
            f"| {figures['start']:>7.2f} | {percentile(lat, 0.5) * 1e3:>10.2f} | {percentile(lat, 0.99) * 1e3:>10.2f} "
            f"| {figures['rss_start'] / 2**20:>13.1f} | {figures['rss_end'] / 2**20:>11.1f} |"
        )
    print(f"machine: {machine_description()}; python {sys.version.split()[0]}; "
          f"{args.collections} collections and {args.calls} GetInventory calls per capture")
    print("| capture           | replay     | GPUs | collect p50 ms | start s | Get p50 ms | Get p99 ms | RSS start MiB | RSS end MiB |")
    print("|-------------------|------------|------|----------------|---------|------------|------------|---------------|-------------|")
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
