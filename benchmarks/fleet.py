"""Fleet planning at scale over real gRPC: 1,000 and 10,000 agents streaming into one planner process.

Method (printed with the results):

- **Agents**: ``--agent-processes`` farm processes (this script with ``--serve-agents``) each serve
  their share of the agents, one ``grpc.aio`` server per agent on its own 127.0.0.1 port, each with
  the agent's real ``GpuAgentServicer`` over a real ``Collector`` (``StaticBackend``): the same
  ``WatchInventory`` stream, heartbeats and change notices a ``gpu-agent`` process serves. Host
  shapes copy the recorded captures: 40 % the single H100 80GB HBM3 idle, 20 % the same GPU busy
  (14,099,546,112 B used), 30 % an 8x H100 NVSwitch host with other processes' memory drawn from a
  seeded RNG, 10 % an A100 80GB in MIG mode (3g.40gb + 2x 2g.20gb); UUIDs and hostnames are unique.
- **Planner**: a real ``vllm-planner-service`` process with ``--agents-file`` listing every agent;
  it opens one ``WatchInventory`` stream per agent, exactly as in production.
- **Place**: Qwen3-8B (bundled catalog, real memory twin), 2 replicas, TP searched, timed from this
  process over gRPC: ``cold`` = the first call, ``warm`` = repeated calls on an unchanged fleet,
  churn: 5 % of the agents get new free memory between calls (their collectors notice and they push
  the new inventory), and three calls are timed: ``at churn`` = sent at that moment; ``during
  ingest`` = sent once the planner has applied the first of them, answered while the rest arrive on
  the same event loop; ``churn`` = once it has applied all of them (seen on a WatchFleet stream this
  process holds, as a scheduler would), when the ranking re-plans just those hosts; ``ingest s`` =
  how long that took.
- **CPUs** (``--planner-cpus auto``, 2+ CPUs): the planner and this client on the first CPU, the agent
  farm on the others, as a planner host does not share its cores with 10,000 agents.
  ``answer KiB`` = the largest serialized ``PlaceResponse``. ``reserve`` = Place with
  ``reserve_seconds`` (holds applied and recorded under the reservation lock).
- **Memory**: the planner's resident set from ``/proc/<pid>/status`` (VmRSS now, VmHWM peak).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/fleet.py [--hosts 1000 10000] [--runs 30]

The agents heartbeat every ``--heartbeat-seconds`` (10 s, a little faster than the agent's 15 s
default), so at 10,000 agents the planner also absorbs ~1,000 stream messages a second while it
answers. Everything runs on this machine: the farm processes, the planner and the client share its
cores, so the figures are a lower bound for a dedicated planner host.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

GIB = 1 << 30
H100 = "NVIDIA H100 80GB HBM3"
H100_TOTAL, H100_RESERVED, H100_BUSY_USED = 85520809984, 503316480, 14099546112
A100 = "NVIDIA A100-SXM4-80GB"
ROOT = Path(__file__).resolve().parents[1]


# -- agent farm (runs in the --serve-agents child processes) ---------------------------------------


def _uuid(host: str, index: int) -> str:
    d = hashlib.sha256(f"{host}/{index}".encode()).hexdigest()
    return f"GPU-{d[:8]}-{d[8:12]}-{d[12:16]}-{d[16:20]}-{d[20:32]}"


def synthetic_inventory(i: int, rng: random.Random):  # noqa: ANN201 (gpu_agent.inventory.HostInventory)
    """Shape mix: 40% single H100 idle, 20% single H100 busy, 30% 8x H100 NVLink, 10% A100 MIG."""
    from gpu_agent.inventory import CollectionSource, Gpu, GpuLink, HostInfo, HostInventory, LinkLevel, MigDevice, MigMode

    name = f"node-{i:05d}"
    roll = rng.random()
    cuda_total = H100_TOTAL - H100_RESERVED

    def h100(index: int, used: int, numa: int | None = None) -> Gpu:
        return Gpu(index=index, uuid=_uuid(name, index), name=H100, memory_total_bytes=H100_TOTAL,
                   memory_reserved_bytes=H100_RESERVED, memory_used_bytes=used, memory_free_bytes=cuda_total - used,
                   memory_cuda_total_bytes=cuda_total, compute_capability="9.0", numa_node=numa, mig_mode=MigMode.DISABLED)

    links: tuple = ()
    if roll < 0.6:
        gpus: tuple = (h100(0, H100_BUSY_USED - H100_RESERVED if roll >= 0.4 else 0),)
    elif roll < 0.9:
        gpus = tuple(h100(g, rng.choice((0, 0, 0, 8, 13, 40)) * GIB, 0 if g < 4 else 1) for g in range(8))
        links = tuple(GpuLink(gpu_uuid_a=a.uuid, gpu_uuid_b=b.uuid, gpu_index_a=a.index, gpu_index_b=b.index,
                              level=LinkLevel.NVLINK, nvlink_count=18) for a in gpus for b in gpus if a.index < b.index)
    else:
        parent = _uuid(name, 0)
        devices = tuple(
            MigDevice(uuid=f"MIG-{_uuid(name, 10 + k)[4:]}", parent_uuid=parent, index=k, profile=profile,
                      memory_total_bytes=int(gib * GIB), memory_used_bytes=0, memory_free_bytes=int(gib * GIB))
            for k, (profile, gib) in enumerate((("3g.40gb", 39.25), ("2g.20gb", 19.5), ("2g.20gb", 19.5)))
        )
        gpus = (Gpu(index=0, uuid=parent, name=A100, memory_total_bytes=85899345920, memory_reserved_bytes=724828160,
                    memory_cuda_total_bytes=85174583296, memory_used_bytes=0, memory_free_bytes=85174583296,
                    compute_capability="8.0", mig_mode=MigMode.ENABLED, mig_devices=devices),)
    return HostInventory(host=HostInfo(hostname=name, agent_version="bench", driver_version="580.159.04"),
                         gpus=gpus, links=links, source=CollectionSource.STATIC)


def serve_agents(first: int, count: int, seed: int, heartbeat_seconds: float, report_to: str | None = None) -> None:
    """Serve agents ``first .. first+count-1``; print one address per line, then ``ready``; then obey
    ``churn FRACTION`` lines on stdin (new free memory on that share of these agents). With
    ``report_to`` every agent also pushes to that planner (gpu-agent --register-with, push mode)."""
    import asyncio
    import uuid

    import grpc

    from gpu_agent.backends import StaticBackend
    from gpu_agent.collector import Collector
    from gpu_agent.register import report_loop
    from gpu_agent.servicer import ChangeSignal, GpuAgentServicer
    from vllm_planner.transport.settings import SERVER_OPTIONS
    from vllm_planner.v1 import agent_pb2_grpc

    async def main() -> None:
        loop = asyncio.get_running_loop()
        rng = random.Random(seed)
        agents = []
        for i in range(first, first + count):
            backend = StaticBackend(synthetic_inventory(i, rng))
            collector = Collector(backend, interval_seconds=3600, stale_after_intervals=24, instance_id=uuid.uuid4().hex)
            collector.collect_once()
            changes = ChangeSignal(loop)
            collector.add_listener(changes.notify_threadsafe)
            server = grpc.aio.server(options=SERVER_OPTIONS)
            agent_pb2_grpc.add_GpuAgentServiceServicer_to_server(GpuAgentServicer(collector, changes, heartbeat_seconds), server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            reporter = None
            if report_to:  # its own connection to the planner, as on its own host
                reporter = asyncio.create_task(report_loop(
                    report_to, collector=collector, changes=changes, advertise_address=f"127.0.0.1:{port}",
                    host=f"node-{i:05d}", agent_instance_id=collector.instance_id))
            agents.append((i, backend, collector, server, reporter))  # referenced: a dropped server stops
            print(f"127.0.0.1:{port}", flush=True)
        print("ready", flush=True)
        churn_rng = random.Random(seed + 1)
        lines: asyncio.Queue[str] = asyncio.Queue()
        threading.Thread(target=lambda: [loop.call_soon_threadsafe(lines.put_nowait, line) for line in sys.stdin],
                         daemon=True).start()
        while True:
            line = (await lines.get()).strip()
            if line.startswith("churn"):
                fraction = float(line.split()[1])
                changed = []
                for i, backend, collector, *_ in churn_rng.sample(agents, max(1, int(len(agents) * fraction))):
                    fresh = synthetic_inventory(i, churn_rng)
                    if fresh.gpus != backend.inventory.gpus:  # the same draw again is no change to report
                        changed.append(fresh.host.hostname)
                    backend.inventory = fresh
                    collector.collect_once()
                print("churned " + ",".join(changed), flush=True)
            elif line == "quit":
                return

    asyncio.run(main())


# -- the benchmark driver ---------------------------------------------------------------------------


def _rss_mib(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class FleetWatch:
    """The planner's own account of what it applied: a WatchFleet stream (as a scheduler would hold
    one) whose live changes are recorded per host name, so the driver can wait until a churn's new
    inventories have been received and applied, and time that."""

    def __init__(self, stub, pb) -> None:  # noqa: ANN001 (a FleetServiceStub and the fleet_pb2 module)
        self._seen: dict[str, float] = {}
        self._cond = threading.Condition()
        self._snapshot_done = threading.Event()
        self._call = stub.WatchFleet(pb.WatchFleetRequest(page_size=1000))
        threading.Thread(target=self._consume, daemon=True).start()
        # The initial snapshot (10 pages at 10,000 hosts) is streamed before any timed call.
        if not self._snapshot_done.wait(120):
            raise SystemExit("WatchFleet sent no complete snapshot in 120 s")

    def _consume(self) -> None:
        try:
            for message in self._call:
                if message.snapshot_complete:
                    self._snapshot_done.set()
                if not message.initial and message.HasField("host"):
                    with self._cond:
                        self._seen[message.host.host] = time.perf_counter()
                        self._cond.notify_all()
        except Exception:  # noqa: BLE001 - cancelled at the end of the run
            pass

    def wait_for(self, names: set[str], since: float, timeout: float, enough: int | None = None) -> tuple[float | None, int]:
        """Seconds from ``since`` until every host in ``names`` (or ``enough`` of them) changed after
        ``since`` (None on timeout), and how many had not by then."""
        deadline = time.perf_counter() + timeout
        allowed = 0 if enough is None else max(0, len(names) - enough)

        def missing() -> int:
            return sum(1 for name in names if self._seen.get(name, -1.0) < since)

        with self._cond:
            while missing() > allowed:
                left = deadline - time.perf_counter()
                if left <= 0:
                    return None, missing()
                self._cond.wait(min(left, 0.5))
            return max((self._seen.get(name, since) for name in names), default=since) - since, missing()

    def close(self) -> None:
        self._call.cancel()


def _pinned(cpus: set[int] | None):  # noqa: ANN202 (a Popen preexec_fn, or None)
    """Run a child on ``cpus`` only (``None``: wherever the kernel puts it)."""
    return None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))


def split_cpus(mode: str) -> tuple[set[int] | None, set[int] | None]:
    """(the planner's CPUs, the agent farm's): with ``auto`` and two or more CPUs the farm gets all but
    the first, and the planner the first, shared only with this client (which times ``Place`` and
    reads one WatchFleet stream: little CPU), as a planner host does not share its cores with 10,000
    agents; ``none`` leaves placement to the kernel."""
    affinity = getattr(os, "sched_getaffinity", None)  # Linux only
    available = sorted(affinity(0)) if affinity else []
    if mode == "none" or len(available) < 2:
        return None, None
    return {available[0]}, set(available[1:])


class Farm:
    def __init__(self, hosts: int, processes: int, heartbeat_seconds: float, report_to: str | None = None,
                 cpus: set[int] | None = None) -> None:
        per = -(-hosts // processes)
        self.procs = []
        self.addresses: list[str] = []
        for k in range(processes):
            first, count = k * per, min(per, hosts - k * per)
            if count <= 0:
                break
            proc = subprocess.Popen(
                [sys.executable, __file__, "--serve-agents", str(first), str(count), "--seed", str(k),
                 "--heartbeat-seconds", str(heartbeat_seconds)] + (["--report-to", report_to] if report_to else []),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, preexec_fn=_pinned(cpus),
            )
            self.procs.append(proc)
        for proc in self.procs:
            for line in proc.stdout:
                if line.strip() == "ready":
                    break
                self.addresses.append(line.strip())

    def churn(self, fraction: float) -> tuple[set[str], float]:
        """New inventories on ``fraction`` of every farm's agents: the host names whose GPUs changed,
        and when the first farm was told (its agents push as soon as they have collected)."""
        started = time.perf_counter()
        for proc in self.procs:
            proc.stdin.write(f"churn {fraction}\n")
            proc.stdin.flush()
        changed: set[str] = set()
        for proc in self.procs:
            word, _, names = proc.stdout.readline().strip().partition(" ")
            assert word == "churned", word
            changed.update(name for name in names.split(",") if name)
        return changed, started

    def close(self) -> None:
        for proc in self.procs:
            try:
                proc.stdin.write("quit\n")
                proc.stdin.flush()
            except BrokenPipeError:
                pass
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run(hosts: int, args: argparse.Namespace) -> dict[str, float]:
    from planner_service.engine.models import HardwareOptions, ModelOptions, PlanRequest, WorkloadOptions
    from planner_service.fleet import converters as conv
    from planner_service.fleet.models import Deployment, HostState
    from vllm_planner.transport.channel import ChannelOptions, create_channel
    from vllm_planner.v1 import fleet_pb2 as pb
    from vllm_planner.v1 import fleet_pb2_grpc

    push = args.transport == "push"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "planner_service.server.main", "--listen", "127.0.0.1:0",
               "--fleet-heartbeat-seconds", str(args.heartbeat_seconds), "--fleet-stale-after-seconds", str(4 * args.heartbeat_seconds),
               "--fleet-max-registrations", str(max(20_000, 2 * hosts)), "--log-level", "WARNING"]
    farm = None
    planner_cpus, other_cpus = args.cpu_split
    if not push:  # the planner dials every agent: start them first, list them in --agents-file
        started = time.perf_counter()
        farm = Farm(hosts, args.agent_processes, args.heartbeat_seconds, cpus=other_cpus)
        farm_seconds = time.perf_counter() - started
        agents_file = Path(tempfile.mkdtemp(prefix="fleet-bench-")) / "agents.txt"
        agents_file.write_text("\n".join(farm.addresses) + "\n")
        command += ["--agents-file", str(agents_file)]
    planner = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=None if args.verbose else subprocess.DEVNULL,
                               text=True, cwd=ROOT, env=env, preexec_fn=_pinned(planner_cpus))
    try:
        address = planner.stdout.readline().strip()
        connect_started = time.perf_counter()
        if push:  # every agent reports to the planner over its own connection
            farm = Farm(hosts, args.agent_processes, args.heartbeat_seconds, report_to=address, cpus=other_cpus)
            farm_seconds = time.perf_counter() - connect_started
        channel = create_channel(ChannelOptions(target=address))
        stub = fleet_pb2_grpc.FleetServiceStub(channel)
        ready_filter = pb.FleetHostFilter(states=[pb.FLEET_HOST_STATE_READY])
        while stub.ListHosts(pb.ListHostsRequest(filter=ready_filter, page_size=1), timeout=60).total_size < hosts:
            if time.perf_counter() - connect_started > args.connect_timeout:
                raise SystemExit(f"only {stub.ListHosts(pb.ListHostsRequest(filter=ready_filter, page_size=1)).total_size} of {hosts} agents READY")
            time.sleep(0.5)
        connect_seconds = time.perf_counter() - connect_started
        rss_connected = _rss_mib(planner.pid)[0]

        deployment = Deployment(
            plan=PlanRequest(model=ModelOptions(model="Qwen/Qwen3-8B", max_model_len=8192), hardware=HardwareOptions(),
                             workload=WorkloadOptions(prompt_tokens=1024, gen_tokens=256, concurrency=16)),
            replicas=2,
        )
        request = pb.PlaceRequest(deployment=conv.deployment_to_proto(deployment))
        sizes: list[int] = []

        def timed(req: pb.PlaceRequest) -> float:
            t = time.perf_counter()
            answer = stub.Place(req, timeout=120)
            elapsed = time.perf_counter() - t
            sizes.append(answer.ByteSize())
            assert len(answer.selected) == 2, answer.unplaced_replicas
            return elapsed

        cold = timed(request)
        warm = [timed(request) for _ in range(args.runs)]
        # Churn: 5 % of the agents get new GPU memory readings; their collectors notice and they push the
        # new inventories. One Place is timed as soon as the planner has applied the first of them, so
        # it is answered while the rest are still arriving (the planner receives and applies them on
        # the same event loop); then, once it has applied every one of them (seen on WatchFleet),
        # another: the ranking re-plans just the hosts that changed.
        watch = FleetWatch(stub, pb)
        churn, during, at_once, ingest, lost = [], [], [], [], 0
        for _ in range(args.runs):
            changed, since = farm.churn(0.05)
            at_once.append(timed(request))  # sent the moment the farm has the new readings
            watch.wait_for(changed, since, timeout=60.0, enough=1)
            during.append(timed(request))
            applied, missing = watch.wait_for(changed, since, timeout=60.0)
            lost += missing
            if applied is not None:
                ingest.append(applied)
            churn.append(timed(request))
        watch.close()
        held = pb.PlaceRequest(deployment=request.deployment, reserve_seconds=5)
        reserve = [timed(held) for _ in range(min(args.runs, 10))]
        counts = stub.ListHosts(pb.ListHostsRequest(page_size=1), timeout=60).total_size
        rss, peak = _rss_mib(planner.pid)
        channel.close()
        return {
            "hosts": hosts, "ready": counts, "farm_s": farm_seconds, "connect_s": connect_seconds,
            "cold_ms": cold * 1e3, "warm_p50": _pct(warm, 0.5) * 1e3, "warm_p99": _pct(warm, 0.99) * 1e3,
            "churn_p50": _pct(churn, 0.5) * 1e3, "churn_p99": _pct(churn, 0.99) * 1e3,
            "during_p50": _pct(during, 0.5) * 1e3, "during_p99": _pct(during, 0.99) * 1e3,
            "ingest_p50": _pct(ingest, 0.5) if ingest else float("nan"), "ingest_max": max(ingest, default=float("nan")),
            "at_once_p50": _pct(at_once, 0.5) * 1e3, "at_once_p99": _pct(at_once, 0.99) * 1e3,
            "changes_not_seen": lost, "at_once_ms": [round(x * 1e3, 1) for x in at_once],
            "during_ms": [round(x * 1e3, 1) for x in during], "churn_ms": [round(x * 1e3, 1) for x in churn],
            "reserve_p50": _pct(reserve, 0.5) * 1e3, "reserve_p99": _pct(reserve, 0.99) * 1e3,
            "answer_kib": max(sizes) / 1024, "rss_connected": rss_connected, "rss": rss, "rss_peak": peak,
            "state": HostState.READY.value, "transport": args.transport,
            "planner_cpus": sorted(planner_cpus) if planner_cpus else "shared", "other_cpus": sorted(other_cpus) if other_cpus else "shared",
        }
    finally:
        planner.terminate()
        try:
            planner.wait(15)
        except subprocess.TimeoutExpired:
            planner.kill()
            planner.wait()
        if farm is not None:
            farm.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--agent-processes", type=int, default=4)
    parser.add_argument("--planner-cpus", choices=("auto", "none"), default="auto",
                        help="auto (with 2+ CPUs): the planner and this client on the first CPU, the agent farm on "
                             "the rest; none: all processes share every CPU.")
    parser.add_argument("--heartbeat-seconds", type=float, default=10.0)
    parser.add_argument("--transport", choices=("push", "dial"), default="push",
                        help="push: agents report to the planner (gpu-agent --register-with); dial: the planner watches --agents-file.")
    parser.add_argument("--connect-timeout", type=float, default=600.0)
    parser.add_argument("--json", action="store_true", help="Print the results as JSON lines too.")
    parser.add_argument("--verbose", action="store_true", help="Show the planner's log.")
    parser.add_argument("--serve-agents", nargs=2, type=int, metavar=("FIRST", "COUNT"), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--report-to", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_agents:
        serve_agents(*args.serve_agents, args.seed, args.heartbeat_seconds, args.report_to)
        return 0

    from rich.console import Console
    from rich.table import Table

    args.cpu_split = split_cpus(args.planner_cpus)
    if args.cpu_split[0] is not None:
        os.sched_setaffinity(0, args.cpu_split[0])  # this client beside the planner, not in the farm's queue

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    console = Console(width=220)
    console.print(f"machine: {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
                  f"load average {os.getloadavg()[0]:.2f} at start")
    how = ("agents push ReportInventory calls" if args.transport == "push" else "the planner watches WatchInventory streams")
    table = Table(title=f"Place over real gRPC: agent processes, {how}, one planner process")
    columns = ("agents", "transport", "READY", "connect s", "Place cold ms", "warm p50 ms", "warm p99 ms", "5% churn p50 ms",
               "5% churn p99 ms", "at churn p50 ms", "at churn p99 ms", "during ingest p50 ms", "during ingest p99 ms",
               "5% ingest s (max)", "reserve p50 ms",
               "reserve p99 ms", "max answer KiB", "planner RSS MiB", "RSS peak MiB")
    for column in columns:
        table.add_column(column, justify="right")
    for n in args.hosts:
        r = run(n, args)
        if args.json:
            print(json.dumps(r), flush=True)
        table.add_row(f"{n:,}", args.transport, f"{r['ready']:,}", f"{r['connect_s']:.1f}", f"{r['cold_ms']:.0f}", f"{r['warm_p50']:.1f}",
                      f"{r['warm_p99']:.1f}", f"{r['churn_p50']:.1f}", f"{r['churn_p99']:.1f}", f"{r['at_once_p50']:.1f}",
                      f"{r['at_once_p99']:.1f}", f"{r['during_p50']:.1f}",
                      f"{r['during_p99']:.1f}", f"{r['ingest_p50']:.2f} ({r['ingest_max']:.2f})"
                      + (f", {r['changes_not_seen']} unseen" if r["changes_not_seen"] else ""), f"{r['reserve_p50']:.1f}",
                      f"{r['reserve_p99']:.1f}", f"{r['answer_kib']:.1f}", f"{r['rss']:.0f}", f"{r['rss_peak']:.0f}")
    console.print(table)
    console.print(
        f"How to read: {args.agent_processes} farm processes serve the agents (one gRPC server per agent, the real\n"
        f"GpuAgentServicer, heartbeat {args.heartbeat_seconds:g} s{', stretched by the planner past 200 reports/s' if args.transport == 'push' else ''});\n"
        f"the planner is a vllm-planner-service process {'the agents report to' if args.transport == 'push' else 'watching every agent'}.\n"
        "'connect s' = from the planner's start until every host is READY. Percentiles over --runs Place\n"
        "calls of Qwen3-8B x 2 replicas (TP searched, the real memory twin). Each churn gives 5 % of the agents new\n"
        "memory readings, and three Place calls are timed: 'at churn' = sent at that moment; 'during ingest' = sent\n"
        "once the planner has applied the first new inventory, answered while the rest arrive; '5% churn' = once it\n"
        "has applied all of them (the ranking re-plans those hosts). '5% ingest s' = from the churn until WatchFleet\n"
        "showed every changed host. Targets: p99 <= 200 ms, answer <= 64 KiB,\n"
        "planner RSS <= 512 MiB at 10,000 agents. "
        + (f"The planner (and this client) run on CPU {sorted(args.cpu_split[0])}, the farm on {sorted(args.cpu_split[1])}\n"
           "(--planner-cpus auto: a planner host does not share its cores with its agents)."
           if args.cpu_split[0] else "The farm, planner and client share this machine's cores.")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
