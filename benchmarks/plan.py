"""Plans per second and latency, embedded (``run_plan`` in-process) and over gRPC (a real
``vllm-planner-service`` subprocess on loopback), with the metadata cache warm.

The request mix is ``tests/reliability/load.py`` ``load_requests()``: six catalog models and settings
(dense 0.6B-70B, MoE, TP 1-8, fp8 KV, auto max_model_len), so no Hub is involved. Each mode first
runs every request three times (warm-up: caches, imports, first-call costs) and then measures.

    .venv/bin/python benchmarks/plan.py [--seconds 5] [--threads 4]

How to read the table: ``embedded`` is the cost of the planning engine itself (one thread, no
serialization); ``grpc 1 caller`` adds protobuf conversion and a loopback round trip per plan;
``grpc N callers`` shows what the service sustains with N concurrent callers (its thread pool is
``--max-workers``). p50/p99 are per-plan latencies seen by the caller. Python threads share one
interpreter lock, so plans/s on the service scales with processes, not threads.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from reliability.helpers import machine_description, offline_environ, percentile, planner_process  # noqa: E402
from reliability.load import load_requests  # noqa: E402

WARMUP_ROUNDS = 3


def _measure(call, requests: list, seconds: float, threads: int) -> tuple[int, list[float], float]:  # noqa: ANN001
    for _ in range(WARMUP_ROUNDS):
        for request in requests:
            call(request)
    latencies: list[list[float]] = [[] for _ in range(threads)]
    stop_at = time.monotonic() + seconds

    def worker(out: list[float], offset: int) -> None:
        i = offset
        while time.monotonic() < stop_at:
            request = requests[i % len(requests)]
            i += 1
            started = time.perf_counter()
            call(request)
            out.append(time.perf_counter() - started)

    started = time.monotonic()
    pool = [threading.Thread(target=worker, args=(latencies[t], t)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.monotonic() - started
    flat = sorted(x for out in latencies for x in out)
    return len(flat), flat, elapsed


def _row(mode: str, count: int, latencies: list[float], elapsed: float) -> str:
    return (f"| {mode:<22} | {count:>6} | {count / elapsed:>8.1f} | {percentile(latencies, 0.5) * 1e3:>8.2f} "
            f"| {percentile(latencies, 0.99) * 1e3:>8.2f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="Measured seconds per mode.")
    parser.add_argument("--threads", type=int, default=4, help="Concurrent callers in the last mode.")
    args = parser.parse_args(argv)

    import os

    from clients.sdk.planner_client import PlannerClient
    from planner_service.api import run_plan

    requests = load_requests()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = offline_environ(Path(tmp) / "hf-home")
        os.environ.update(env)  # the embedded resolver sees the same (empty) HF cache and dead Hub
        rows.append(_row("embedded, 1 thread", *_measure(run_plan, requests, args.seconds, 1)))
        with planner_process("--max-workers", str(max(4, args.threads)), env=env) as planner, \
                PlannerClient(planner.address, timeout_seconds=60) as client:
            rows.append(_row("grpc, 1 caller", *_measure(client.plan, requests, args.seconds, 1)))
            rows.append(_row(f"grpc, {args.threads} callers", *_measure(client.plan, requests, args.seconds, args.threads)))

    print(f"machine: {machine_description()}; python {sys.version.split()[0]}; {len(requests)} request kinds, "
          f"{args.seconds:g} s per mode after {WARMUP_ROUNDS} warm-up rounds")
    print("| mode                   |  plans |  plans/s |  p50 ms  |  p99 ms  |")
    print("|------------------------|--------|----------|----------|----------|")
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
