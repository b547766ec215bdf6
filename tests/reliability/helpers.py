"""Shared plumbing of the reliability suites (bad input, faults, load) and the benchmarks.

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
from pathlib import Path
from typing import Iterator

from helpers.paths import CAPTURES, H100_CAPTURE, MODEL_CONFIGS, QWEN3_8B_CONFIG, REPO, SHARED  # noqa: F401
from helpers.waiting import wait_until  # noqa: F401  (re-exported for the reliability suites)

VENV_BIN = Path(sys.executable).parent
NVSWITCH_CAPTURE = CAPTURES / "h100-sxm-8x-nvswitch"

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
    # A folder inside the root whose config.json is a symlink to the sentinel file.
    (root / "linked-config").mkdir()
    os.symlink(outside / "config.json", root / "linked-config" / "config.json")
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
