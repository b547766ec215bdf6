"""What one agent connection and one report cost the planner: RSS and CPU time of a real
``vllm-planner-service`` process before and after N agents connect and report (push mode), one HTTP/2
connection each.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/fleet_connections.py [--connections 3000]
[--server-option grpc.http2.bdp_probe=0 ...]``

Each connection is its own channel (``grpc.use_local_subchannel_pool``, as the agent's reporter opens
it; without it channels to one target share a connection), makes one ``ReportInventory`` heartbeat
(the planner registers the agent and asks for its inventory) and stays open while the planner's
``VmRSS`` is read from ``/proc``. Then every agent sends its whole inventory (an 8x H100 NVLink host, the
largest shape of ``benchmarks/fleet.py``) ``--reports`` times, and the planner's CPU time (user + system,
``/proc/<pid>/stat``) per report is printed: the cost of one report, gRPC included. ``--server-option`` adds a gRPC server argument to the planner's
(``vllm_planner.transport.settings.SERVER_OPTIONS``) to see whether it moves the per-connection cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The planner child: the real service entry point with extra server arguments from the environment.
_CHILD = """
import json, os, sys
import vllm_planner.transport.server as server
server.SERVER_OPTIONS = list(server.SERVER_OPTIONS) + [tuple(o) for o in json.loads(os.environ["FLEET_CONN_OPTIONS"])]
from planner_service.server.main import main
sys.exit(main(sys.argv[1:]))
"""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _rss_mib(pid: int) -> float:
    from benchmarks.fleet import _rss_mib as rss_and_peak  # one /proc reader for both fleet benchmarks

    return rss_and_peak(pid)[0]


def _option(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    return key, int(value) if value.lstrip("-").isdigit() else value


async def _connect(address: str, count: int) -> list:
    import grpc

    from vllm_planner.transport.settings import CLIENT_OPTIONS
    from vllm_planner.v1 import agent_pb2, fleet_pb2, fleet_pb2_grpc

    options = CLIENT_OPTIONS + [("grpc.use_local_subchannel_pool", 1), ("grpc.enable_channelz", 0)]
    channels = []
    for i in range(count):
        channel = grpc.aio.insecure_channel(address, options=options)
        channels.append(channel)
        await fleet_pb2_grpc.FleetServiceStub(channel).ReportInventory(
            fleet_pb2.ReportInventoryRequest(address=f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}:9400", host=f"node-{i}",
                                             agent_instance_id="probe", heartbeat=agent_pb2.InventoryHeartbeat()),
            timeout=30)
    return channels


async def _report(channels: list, reports: int) -> None:
    import random

    from benchmarks.fleet import synthetic_inventory
    from gpu_agent.convert import inventory_to_proto
    from vllm_planner.v1 import fleet_pb2, fleet_pb2_grpc

    rng = random.Random(0)
    shape = next(inv for inv in (synthetic_inventory(i, rng) for i in range(100)) if len(inv.gpus) == 8)
    inventory = inventory_to_proto(shape)
    in_flight = asyncio.Semaphore(32)  # agents report independently; a few dozen calls at a time

    async def one(i: int, channel, generation: int) -> None:  # noqa: ANN001
        async with in_flight:
            await fleet_pb2_grpc.FleetServiceStub(channel).ReportInventory(
                fleet_pb2.ReportInventoryRequest(address=f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}:9400", host=f"node-{i}",
                                                 agent_instance_id="probe", inventory=inventory, inventory_generation=generation),
                timeout=60)

    for round_ in range(reports):
        await asyncio.gather(*(one(i, channel, round_ + 1) for i, channel in enumerate(channels)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--reports", type=int, default=2, help="Whole-inventory reports per agent after connecting.")
    parser.add_argument("--server-option", action="append", default=[], type=_option, metavar="KEY=VALUE")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FLEET_CONN_OPTIONS": json.dumps(args.server_option)}
    planner = subprocess.Popen(
        [sys.executable, "-c", _CHILD, "--listen", "127.0.0.1:0", "--fleet-max-registrations", str(2 * args.connections + 10),
         "--log-level", "ERROR"], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        address = planner.stdout.readline().strip()
        time.sleep(2)
        before = _rss_mib(planner.pid)

        async def run() -> tuple[float, float]:
            channels = await _connect(address, args.connections)
            await asyncio.sleep(3)
            after = _rss_mib(planner.pid)
            cpu = _cpu_seconds(planner.pid)
            await _report(channels, args.reports)
            cpu = _cpu_seconds(planner.pid) - cpu
            for channel in channels:
                await channel.close()
            return after, cpu

        after, cpu = asyncio.run(run())
    finally:
        planner.terminate()
        planner.wait(15)
    per = (after - before) * 1024 / args.connections
    print(f"connections {args.connections}  server options {args.server_option or 'default'}  "
          f"planner RSS {before:.0f} -> {after:.0f} MiB  per connection {per:.1f} KiB  "
          f"planner CPU per 8-GPU inventory report {cpu / max(1, args.connections * args.reports) * 1e3:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
