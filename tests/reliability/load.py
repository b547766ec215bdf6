"""Load driver of ``tests/test_load.py`` and ``benchmarks/load.py``: client processes x threads calling
``Plan`` (or ``Place``) on loopback for a bounded time, checking every answer against the same request
made alone, and sampling the server's resident memory after warm-up, in the middle and at the end.
"""

from __future__ import annotations

import threading
import time

from reliability.helpers import rss_bytes


def load_requests() -> list:
    """A mix of Plan requests served from the bundled catalog (no Hub), different enough to exercise
    the recommender, the fit search and the performance model."""
    from planner_service.engine.models import (
        EngineOptions, HardwareOptions, ModelOptions, PlanRequest, PolicyOptions, WorkloadOptions,
    )

    return [
        PlanRequest(model=ModelOptions(model="Qwen/Qwen3-8B"), hardware=HardwareOptions(gpu="H100")),
        PlanRequest(model=ModelOptions(model="Qwen/Qwen3-8B", max_model_len=32768, kv_cache_dtype="fp8"),
                    hardware=HardwareOptions(gpu="L40S")),
        PlanRequest(model=ModelOptions(model="meta-llama/Llama-3.1-70B-Instruct"),
                    hardware=HardwareOptions(gpu="H100 SXM", num_gpus=8)),
        PlanRequest(model=ModelOptions(model="Qwen/Qwen3-30B-A3B", max_model_len="auto"),
                    hardware=HardwareOptions(gpu="A100 SXM 80GB"), workload=WorkloadOptions(concurrency=32)),
        PlanRequest(model=ModelOptions(model="Qwen/Qwen3-0.6B"), hardware=HardwareOptions(gpu="T4"),
                    policy=PolicyOptions(gpu_memory_utilization=0.8), engine=EngineOptions(enforce_eager=True)),
        PlanRequest(model=ModelOptions(model="meta-llama/Llama-3.1-8B-Instruct", max_model_len=8192),
                    hardware=HardwareOptions(gpu="H100 SXM", tensor_parallel_size=2)),
    ]


def place_deployments() -> list:
    """Place requests for the fleet load: catalog models that fit the recorded H100 (no Hub)."""
    from planner_service.engine.models import ModelOptions, PlanRequest, WorkloadOptions
    from planner_service.fleet.models import Deployment

    return [
        Deployment(plan=PlanRequest(model=ModelOptions(model="Qwen/Qwen3-8B", max_model_len=8192))),
        Deployment(plan=PlanRequest(model=ModelOptions(model="Qwen/Qwen3-0.6B"), workload=WorkloadOptions(concurrency=16))),
        Deployment(plan=PlanRequest(model=ModelOptions(model="meta-llama/Llama-3.1-8B-Instruct", max_model_len=16384)),
                   replicas=2),
    ]


def _client_and_call(kind: str, address: str):  # noqa: ANN202
    if kind == "place":
        from clients.sdk.fleet_client import FleetClient

        client = FleetClient(address, timeout_seconds=30)
        return client, client.place
    from clients.sdk.planner_client import PlannerClient

    client = PlannerClient(address, timeout_seconds=30)
    return client, client.plan


def _load_thread(kind: str, address: str, requests: list, expected: list[str], stop_at: float, out: dict) -> None:
    from clients.sdk.errors import SdkError

    client, call = _client_and_call(kind, address)
    with client:
        i = 0
        while time.monotonic() < stop_at:
            k = i % len(requests)
            i += 1
            started = time.perf_counter()
            try:
                response = call(requests[k])
            except SdkError as exc:
                out["errors"].append(f"{exc.code}: {exc}")
                continue
            out["latencies"].append(time.perf_counter() - started)
            if response.model_dump_json() != expected[k]:
                out["mismatches"] += 1


def _request_type(kind: str):  # noqa: ANN202
    if kind == "place":
        from planner_service.fleet.models import Deployment

        return Deployment
    from planner_service.engine.models import PlanRequest

    return PlanRequest


def load_worker(address: str, request_json: list[str], expected: list[str], seconds: float, threads: int,
                kind: str = "plan") -> dict:
    """One client process: ``threads`` threads calling Plan (or Place) for ``seconds``."""
    requests = [_request_type(kind).model_validate_json(text) for text in request_json]
    stop_at = time.monotonic() + seconds
    outs = [{"errors": [], "latencies": [], "mismatches": 0} for _ in range(threads)]
    workers = [threading.Thread(target=_load_thread, args=(kind, address, requests, expected, stop_at, out))
               for out in outs]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(seconds + 60)
    return {
        "ok": sum(len(o["latencies"]) for o in outs),
        "errors": [e for o in outs for e in o["errors"]],
        "mismatches": sum(o["mismatches"] for o in outs),
        "latencies": [x for o in outs for x in o["latencies"]],
    }


def run_load(address: str, pid: int, *, seconds: float, processes: int, threads: int, kind: str = "plan") -> dict:
    """Baseline one call at a time, then ``processes`` x ``threads`` concurrent callers for
    ``seconds``, sampling the server's RSS after warm-up, in the middle and at the end.
    ``kind``: "plan" (PlannerService.Plan) or "place" (FleetService.Place)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    requests = place_deployments() if kind == "place" else load_requests()
    client, call = _client_and_call(kind, address)
    with client:
        expected = [call(r).model_dump_json() for r in requests]  # one at a time; also warms up
        for _ in range(3):  # warm every cache and code path before the first memory sample
            for r in requests:
                call(r)
    request_json = [r.model_dump_json() for r in requests]
    rss = {"start": rss_bytes(pid)}
    started = time.monotonic()
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(load_worker, address, request_json, expected, seconds, threads, kind)
                   for _ in range(processes)]
        time.sleep(seconds / 2 + 1.0)  # child start-up takes about a second
        rss["middle"] = rss_bytes(pid)
        results = [f.result(timeout=seconds + 120) for f in futures]
    rss["end"] = rss_bytes(pid)
    elapsed = time.monotonic() - started
    latencies = sorted(x for r in results for x in r["latencies"])
    return {
        "ok": sum(r["ok"] for r in results),
        "errors": [e for r in results for e in r["errors"]],
        "mismatches": sum(r["mismatches"] for r in results),
        "latencies": latencies,
        "rss": rss,
        "elapsed_seconds": elapsed,
        "callers": processes * threads,
    }
