"""Shared plumbing of the reliability suites (bad input, faults, load, properties) and the benchmarks.

Everything here starts *real* things: planner servers on 127.0.0.1:0 (in-thread or as a subprocess of
the console script), sockets that refuse or never answer (to stand in for an unreachable Hub), and
reads a process's resident memory from /proc. No network beyond loopback, ever.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SHARED = next(
    (p for p in (Path("/work/shared"), REPO.parent / "shared") if (p / "model-configs").is_dir()),
    Path("/work/shared"),
)
MODEL_CONFIGS = SHARED / "model-configs"
QWEN3_8B_CONFIG = MODEL_CONFIGS / "Qwen" / "Qwen3-8B" / "config.json"
H100_CAPTURE = SHARED / "fixtures" / "nvidia" / "h100-80gb-hbm3"
NVSWITCH_CAPTURE = REPO / "tests" / "fixtures" / "captures" / "h100-sxm-8x-nvswitch"

# A model the bundled catalog knows, so plans need neither the Hub nor a model root.
CATALOG_MODEL = "Qwen/Qwen3-8B"
SUBPROCESS_TIMEOUT_SECONDS = 60.0


def qwen3_8b_config() -> dict:
    return json.loads(QWEN3_8B_CONFIG.read_text())


def offline_environ(hf_home: Path, endpoint: str = "http://127.0.0.1:9") -> dict[str, str]:
    """Environment overrides: an empty HF cache and a Hub endpoint on a refused loopback port."""
    return {"HF_HOME": str(hf_home), "HF_ENDPOINT": endpoint, "HF_HUB_DISABLE_TELEMETRY": "1"}


def make_model_root(base: Path) -> Path:
    """A model root holding one good folder (``qwen3-8b``) and a few broken ones, plus a sentinel
    ``config.json`` *outside* the root that no request may ever reach."""
    root = base / "models"
    (root / "qwen3-8b").mkdir(parents=True)
    shutil.copy(QWEN3_8B_CONFIG, root / "qwen3-8b" / "config.json")
    (root / "empty-folder").mkdir()
    (root / "bad-json").mkdir()
    (root / "bad-json" / "config.json").write_text("{not json")
    (root / "list-json").mkdir()
    (root / "list-json" / "config.json").write_text("[1, 2, 3]")
    (root / "huge").mkdir()
    with open(root / "huge" / "config.json", "w") as handle:  # 5 MiB: over the 4 MiB config cap
        handle.write('{"pad": "' + "x" * (5 << 20) + '"}')
    (root / "deep").mkdir()
    (root / "deep" / "config.json").write_text("[" * 5000 + "]" * 5000)
    (root / "config-is-dir").mkdir()
    (root / "config-is-dir" / "config.json").mkdir()
    (root / "zero-layers").mkdir()
    (root / "zero-layers" / "config.json").write_text(json.dumps({**qwen3_8b_config(), "num_hidden_layers": 0}))
    # The sentinel: a perfectly valid config outside the root, with a marker no real model has.
    outside = base / "outside"
    (outside / "secret-model").mkdir(parents=True)
    sentinel = {**qwen3_8b_config(), "model_type": "sentinel_outside_root", "architectures": ["SentinelForCausalLM"]}
    (outside / "secret-model" / "config.json").write_text(json.dumps(sentinel))
    (outside / "config.json").write_text(json.dumps(sentinel))
    os.symlink(outside / "secret-model", root / "escape-link")
    return root


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@contextlib.contextmanager
def refused_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` on a port that was just closed: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def silent_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` on a socket that accepts connections and never answers a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            held.append(conn)  # keep it open, read nothing, write nothing

    thread = threading.Thread(target=accept, name="silent-endpoint", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        server.close()


class ServiceProcess:
    """A console-script server (``vllm-planner-service`` or ``gpu-agent``) as a real subprocess.

    The first stdout line is the bound address; stderr goes to a file so a failure can be shown.
    """

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, log_path: Path | None = None) -> None:
        self._log = open(log_path, "w+") if log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=self._log, text=True,
            env={**os.environ, **(env or {})}, cwd=str(REPO),
        )
        self.address = self._read_address()

    def _read_address(self, timeout_seconds: float = SUBPROCESS_TIMEOUT_SECONDS) -> str:
        box: dict[str, str] = {}
        reader = threading.Thread(target=lambda: box.setdefault("line", self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout_seconds)
        line = box.get("line", "").strip()
        if not line:
            self.stop()
            raise RuntimeError(f"{self.proc.args[0]} did not print its address: {self.log_text()[-2000:]}")
        return line

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        if self._log is subprocess.DEVNULL:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout_seconds: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_seconds)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log is not subprocess.DEVNULL:
            self._log.close()

    def __enter__(self) -> "ServiceProcess":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def planner_process(*args: str, env: dict[str, str] | None = None, log_path: Path | None = None) -> ServiceProcess:
    argv = [str(VENV_BIN / "vllm-planner-service"), "--listen", "127.0.0.1:0", "--grace-seconds", "0.5", *args]
    return ServiceProcess(argv, env=env, log_path=log_path)


def agent_process(*args: str, env: dict[str, str] | None = None, log_path: Path | None = None) -> ServiceProcess:
    argv = [str(VENV_BIN / "gpu-agent"), "--listen", "127.0.0.1:0", "--grace-seconds", "0.5", *args]
    return ServiceProcess(argv, env=env, log_path=log_path)


def wait_until(predicate, timeout_seconds: float = 10.0, interval_seconds: float = 0.05):  # noqa: ANN001, ANN201
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout_seconds``."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout_seconds}s")
        time.sleep(interval_seconds)


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def machine_description() -> str:
    """``N cores, CPU model`` of this machine, for benchmark tables."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {model}"


# --------------------------------------------------------------------------------------------------
# Load driver (tests/test_load.py and benchmarks/load.py): client processes x threads, bounded time
# --------------------------------------------------------------------------------------------------


def load_requests() -> list:
    """A mix of Plan requests served from the bundled catalog (no Hub), different enough to exercise
    the recommender, the fit search and the performance model."""
    from planner_service.engine.models import (
        EngineOptions, HardwareOptions, ModelOptions, PlanRequest, PolicyOptions, WorkloadOptions,
    )

    return [
        PlanRequest(model=ModelOptions(model="Qwen/Qwen3-8B")),
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
