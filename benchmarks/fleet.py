"""Fleet planning at scale: ``Place`` and ``PlanFleet`` latency and planner memory, 1,000 / 10,000 agents.

Method (printed with the results): agents are simulated by feeding the planner's ``FleetRegistry``
directly with synthetic hosts built from the capture shapes in ``planner_service.fleet.testing``
(the recorded single H100 idle and busy, an 8x H100 NVSwitch host, an A100 in MIG mode), with other
processes' memory drawn from a seeded RNG so free memory varies like a real fleet. No gRPC and no
agent streams are involved: this measures the planner's own work (registry snapshot + placement
with the real memory twin). ``Place`` cold = a fresh twin cache (first request for that model);
warm = the same model again (the service keeps caches per base request).

    .venv/bin/python benchmarks/fleet.py [--hosts 1000 10000] [--runs 30]
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import statistics
import time
import tracemalloc

from planner_service.engine.models import HardwareOptions, ModelOptions, PlanRequest, WorkloadOptions
from planner_service.fleet.evaluator import TwinProvider
from planner_service.fleet.models import Deployment, FleetHost, FleetPlanRequest
from planner_service.fleet.packing import plan_fleet
from planner_service.fleet.placement import place
from planner_service.fleet.registry import FleetRegistry
from planner_service.fleet.testing import a100_mig_host, h100_host, h100_nvlink_host

GIB = 1 << 30
MODELS = ("Qwen/Qwen3-8B", "meta-llama/Llama-3.1-70B-Instruct", "Qwen/Qwen3-32B", "Qwen/Qwen3-0.6B")


def synthetic_host(i: int, rng: random.Random) -> FleetHost:
    """Shape mix: 40% single H100 idle, 20% single H100 busy, 30% 8x H100 NVLink, 10% A100 MIG."""
    name = f"node-{i:05d}"
    roll = rng.random()
    if roll < 0.4:
        return h100_host(name)
    if roll < 0.6:
        return h100_host(name, busy=True)
    if roll < 0.9:
        used = {g: rng.choice((0, 0, 0, 8, 13, 40)) * GIB for g in range(8)}
        return h100_nvlink_host(name, used_bytes=used)
    return a100_mig_host(name)


def build_registry(n: int, seed: int = 0) -> FleetRegistry:
    rng = random.Random(seed)
    registry = FleetRegistry()
    for i in range(n):
        host = synthetic_host(i, rng)
        registry.update(host.address, host)
    return registry


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _deployment(model: str, tp: int | None = None, replicas: int = 1) -> Deployment:
    return Deployment(
        plan=PlanRequest(model=ModelOptions(model=model, max_model_len=8192), hardware=HardwareOptions(tensor_parallel_size=tp),
                         workload=WorkloadOptions(prompt_tokens=1024, gen_tokens=256, concurrency=16)),
        replicas=replicas,
    )


def bench_place(registry: FleetRegistry, runs: int) -> dict[str, float]:
    deployment = _deployment("Qwen/Qwen3-8B", replicas=2)
    cold: list[float] = []
    for _ in range(3):  # fresh provider each time: first-request cost, metadata resolution included
        provider = TwinProvider()
        start = time.perf_counter()
        cache, fp8 = provider.prepare(deployment)
        place(deployment, registry.snapshot(), cache, fp8=fp8)
        cold.append(time.perf_counter() - start)
    provider = TwinProvider()
    cache, fp8 = provider.prepare(deployment)
    place(deployment, registry.snapshot(), cache, fp8=fp8)
    warm: list[float] = []
    evaluations = cache.evaluations
    for _ in range(runs):
        start = time.perf_counter()
        hosts = registry.snapshot()  # what the servicer reads on every call
        cache, fp8 = provider.prepare(deployment)
        place(deployment, hosts, cache, fp8=fp8)
        warm.append(time.perf_counter() - start)
    churn: list[float] = []
    rng = random.Random(1)
    addresses = [h.address for h in registry.snapshot()]
    for run in range(runs):  # 5% of the agents report new free memory between two requests
        for address in rng.sample(addresses, max(1, len(addresses) // 20)):
            registry.update(address, synthetic_host(int(address.split("-")[1].split(":")[0]), rng))
        start = time.perf_counter()
        cache, fp8 = provider.prepare(deployment)
        place(deployment, registry.snapshot(), cache, fp8=fp8)
        churn.append(time.perf_counter() - start)
    return {
        "churn_p50": _pct(churn, 0.5), "churn_p99": _pct(churn, 0.99),
        "cold_p50": statistics.median(cold), "cold_max": max(cold),
        "warm_p50": _pct(warm, 0.5), "warm_p99": _pct(warm, 0.99), "evaluations": float(evaluations),
    }


def bench_plan_fleet(registry: FleetRegistry, runs: int) -> dict[str, float]:
    request = FleetPlanRequest(deployments=tuple(
        _deployment(model, tp=tp, replicas=r)
        for model, tp, r in ((MODELS[0], None, 20), (MODELS[1], 4, 5), (MODELS[2], 2, 10), (MODELS[3], None, 20))
    ))
    provider = TwinProvider()
    samples: list[float] = []
    placed = 0
    for _ in range(runs):
        start = time.perf_counter()
        answer = plan_fleet(request, registry.snapshot(), provider.prepare)
        samples.append(time.perf_counter() - start)
        placed = len(answer.assignments)
    return {"p50": _pct(samples, 0.5), "p99": _pct(samples, 0.99), "first": samples[0], "placed": float(placed),
            "replicas": float(sum(d.replicas for d in request.deployments))}


def registry_bytes(n: int) -> int:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    registry = build_registry(n)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del registry
    return after - before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--plan-runs", type=int, default=5)
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    table = Table(title="fleet planner at scale (synthetic hosts fed to the registry directly; real memory twin)")
    for column in ("hosts", "GPUs", "Place cold ms", "Place warm p50 ms", "Place warm p99 ms", "5% churn p50 ms",
                   "5% churn p99 ms", "twin evals",
                   "PlanFleet p50 ms", "PlanFleet p99 ms", "placed/asked", "registry MiB (tracemalloc)", "max RSS MiB"):
        table.add_column(column, justify="right")
    for n in args.hosts:
        registry = build_registry(n)
        gpus = sum(len(h.gpus) for h in registry.snapshot())
        p = bench_place(registry, args.runs)
        f = bench_plan_fleet(registry, args.plan_runs)
        mem = registry_bytes(n)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        table.add_row(f"{n:,}", f"{gpus:,}", f"{p['cold_p50'] * 1e3:.0f}", f"{p['warm_p50'] * 1e3:.1f}", f"{p['warm_p99'] * 1e3:.1f}",
                      f"{p['churn_p50'] * 1e3:.1f}", f"{p['churn_p99'] * 1e3:.1f}",
                      f"{p['evaluations']:.0f}", f"{f['p50'] * 1e3:.0f}", f"{f['p99'] * 1e3:.0f}", f"{f['placed']:.0f}/{f['replicas']:.0f}",
                      f"{mem / (1 << 20):.1f}", f"{rss:.0f}")
    console = Console(width=200)
    console.print(table)
    console.print(
        "How to read: Place = one model (Qwen3-8B, 2 replicas, TP searched) ranked over every host, with the registry\n"
        "snapshot the servicer takes per call. 'cold' is the first request for that model (metadata + one twin run per\n"
        "distinct (GPU model, CUDA total, TP, utilization, free-memory bucket)); 'warm' = the same request again on an\n"
        "unchanged fleet (twin cache + per-host memo: unchanged hosts keep their registry objects); '5% churn' = 5% of\n"
        "the agents reported new free memory since the previous request, so only those hosts are re-planned.\n"
        "'twin evals' = distinct twin evaluations the whole fleet needed. PlanFleet = 4 models x 55 replicas over the\n"
        "same fleet. Percentiles over --runs / --plan-runs samples on this machine; no gRPC or network in the loop.\n"
        "Registry MiB = Python heap held by the registry's host records; max RSS = the whole benchmark process."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
