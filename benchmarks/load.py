"""The long manual load run: several client processes x threads calling ``Plan`` on a real
``vllm-planner-service`` subprocess, with the same driver and pass criteria as ``tests/test_load.py``
(which runs it for ``LOAD_SECONDS``, 10 s by default, in CI).

    .venv/bin/python benchmarks/load.py [--seconds 120] [--processes 4] [--threads 4] [--max-workers 4]

How to read it: ``errors`` and ``mismatches`` must be 0 (a mismatch is a response that differs from
the same request made alone before the run); ``plans/s`` is what the service sustained with that many
concurrent callers; RSS is the planner process's resident memory after warm-up, at the middle and at
the end: a leak shows as steady growth from start to middle to end (a few MiB of allocator noise is
normal). Exit status 1 when any criterion fails.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from reliability.helpers import machine_description, offline_environ, percentile, planner_process  # noqa: E402
from reliability.load import run_load  # noqa: E402

RSS_GROWTH_LIMIT_BYTES = 24 << 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--max-workers", type=int, default=4, help="The planner's --max-workers.")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        with planner_process("--max-workers", str(args.max_workers), env=offline_environ(Path(tmp) / "hf-home")) as planner:
            result = run_load(planner.address, planner.pid, seconds=args.seconds, processes=args.processes,
                              threads=args.threads)
            alive = planner.proc.poll() is None
    lat, rss = result["latencies"], result["rss"]
    growth = rss["end"] - rss["start"]
    ok = alive and not result["errors"] and result["mismatches"] == 0 and growth < RSS_GROWTH_LIMIT_BYTES
    print(f"machine: {machine_description()}; python {sys.version.split()[0]}; {args.processes} processes x "
          f"{args.threads} threads for {args.seconds:g} s; planner --max-workers {args.max_workers}")
    print("| plans | errors | mismatches | plans/s | p50 ms | p99 ms | RSS start MiB | RSS middle MiB | RSS end MiB | verdict |")
    print("|-------|--------|------------|---------|--------|--------|---------------|----------------|-------------|---------|")
    print(f"| {result['ok']:>5} | {len(result['errors']):>6} | {result['mismatches']:>10} "
          f"| {result['ok'] / result['elapsed_seconds']:>7.1f} | {percentile(lat, 0.5) * 1e3:>6.1f} "
          f"| {percentile(lat, 0.99) * 1e3:>6.1f} | {rss['start'] / 2**20:>13.1f} | {rss['middle'] / 2**20:>14.1f} "
          f"| {rss['end'] / 2**20:>11.1f} | {'PASS' if ok else 'FAIL':<7} |")
    for error in result["errors"][:5]:
        print(f"error: {error}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
