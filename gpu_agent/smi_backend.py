"""The nvidia-smi backend: live (subprocess, each with a timeout) or replayed from a capture folder.

Both run the same commands through a ``CommandRunner`` and the same parsers (``smi_parse``):

    nvidia-smi -q -x                                       -> nvidia-smi-q-x[-busy].xml
    nvidia-smi -L                                          -> nvidia-smi-L.txt
    nvidia-smi --query-gpu=<QUERY_GPU_FIELDS> --format=csv -> query-gpu.csv (compute_cap only)
    nvidia-smi --query-compute-apps=... --format=csv       -> query-compute-apps[-busy].csv
    nvidia-smi topo -m                                     -> nvidia-smi-topo-m.txt

``RecordedRunner`` maps each command to its file in a capture laid out like
``shared/fixtures/nvidia/h100-80gb-hbm3/``; variant ``busy`` prefers the ``-busy`` file where the
capture has one. Only static fields are read from query-gpu.csv, so its idle recording serves both.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path
from typing import Protocol

from gpu_agent.backends import BackendUnavailable, host_info
from gpu_agent.inventory import CollectionError, CollectionSource, HostInventory, pair_links
from gpu_agent.smi_parse import (
    SmiParseError,
    parse_compute_apps_csv,
    parse_list,
    parse_query_gpu_csv,
    parse_query_xml,
    parse_topo,
)
from gpu_agent.watchdog import CallGuard, CallTimeout
from vllm_planner.bounded import MAX_CAPTURE_FILE_BYTES, InputError, read_text

# The 26 fields of the recorded query-gpu.csv, in its order.
QUERY_GPU_FIELDS = (
    "index,uuid,name,serial,memory.total,memory.used,memory.free,memory.reserved,driver_version,compute_cap,"
    "pci.bus_id,pcie.link.gen.max,pcie.link.gen.current,pcie.link.width.max,pcie.link.width.current,"
    "mig.mode.current,ecc.mode.current,power.limit,power.max_limit,temperature.gpu,utilization.gpu,"
    "utilization.memory,clocks.max.sm,clocks.max.memory,persistence_mode,compute_mode"
)
COMPUTE_APPS_FIELDS = "pid,process_name,used_memory,gpu_uuid"

CMD_QUERY_XML = ("-q", "-x")
CMD_LIST = ("-L",)
CMD_QUERY_GPU = (f"--query-gpu={QUERY_GPU_FIELDS}", "--format=csv")
CMD_COMPUTE_APPS = (f"--query-compute-apps={COMPUTE_APPS_FIELDS}", "--format=csv")
CMD_TOPO = ("topo", "-m")

_RECORDED_FILES = {
    CMD_QUERY_XML: ("nvidia-smi-q-x.xml", "nvidia-smi-q-x-busy.xml"),
    CMD_LIST: ("nvidia-smi-L.txt", None),
    CMD_QUERY_GPU: ("query-gpu.csv", None),
    CMD_COMPUTE_APPS: ("query-compute-apps.csv", "query-compute-apps-busy.csv"),
    CMD_TOPO: ("nvidia-smi-topo-m.txt", None),
}
VARIANTS = ("idle", "busy")


class CommandRunner(Protocol):
    def run(self, args: tuple[str, ...]) -> str: ...


class SubprocessRunner:
    """Runs ``nvidia-smi`` with a timeout; on timeout kills it and reaps it off the calling thread
    (``subprocess.run`` would wait for a child stuck in the driver)."""

    def __init__(self, binary: str = "nvidia-smi", timeout_seconds: float = 10.0) -> None:
        path = shutil.which(binary)
        if path is None:
            raise BackendUnavailable(f"{binary} not found on PATH")
        self.binary, self.timeout_seconds = path, timeout_seconds

    def run(self, args: tuple[str, ...]) -> str:
        proc = subprocess.Popen([self.binary, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=self.timeout_seconds)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            threading.Thread(target=proc.wait, daemon=True, name="reap nvidia-smi").start()
            raise CallTimeout(f"nvidia-smi {' '.join(args)} did not return within {self.timeout_seconds:g}s") from exc
        if proc.returncode != 0:
            raise SmiParseError(f"nvidia-smi {' '.join(args)} exited {proc.returncode}: {(err or out).strip()[:200]}")
        return out


class RecordedRunner:
    """Answers the commands above from a capture folder (the replay)."""

    def __init__(self, directory: Path, variant: str = "idle") -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown replay variant {variant!r} (one of {', '.join(VARIANTS)})")
        self.directory, self.variant = Path(directory), variant
        if not (self.directory / _RECORDED_FILES[CMD_QUERY_XML][0]).is_file():
            raise FileNotFoundError(f"{self.directory} has no nvidia-smi-q-x.xml: not a capture folder")
        busy_xml = _RECORDED_FILES[CMD_QUERY_XML][1]
        if variant == "busy" and not (self.directory / busy_xml).is_file():
            raise FileNotFoundError(f"{self.directory} has no {busy_xml} for variant busy")

    def run(self, args: tuple[str, ...]) -> str:
        names = _RECORDED_FILES.get(tuple(args))
        if names is None:
            raise SmiParseError(f"no recording for nvidia-smi {' '.join(args)}")
        idle, busy = names
        path = self.directory / (busy if self.variant == "busy" and busy else idle)
        if not path.exists():
            return ""  # an optional recording the capture lacks: treated like empty output
        try:  # bounded, a regular file, UTF-8: a corrupted capture is a parse error like bad output
            return read_text(path, max_bytes=MAX_CAPTURE_FILE_BYTES, what=f"capture file {path.name}")
        except InputError as exc:
            raise SmiParseError(str(exc)) from None


def collect_smi(runner: CommandRunner, source: CollectionSource, hostname: str | None = None) -> HostInventory:
    errors: list[CollectionError] = []

    def optional(args: tuple[str, ...]) -> str:
        try:
            return runner.run(args)
        except SmiParseError as exc:
            errors.append(CollectionError(probe="nvidia-smi " + " ".join(args), message=str(exc)))
            return ""

    smi = parse_query_xml(runner.run(CMD_QUERY_XML), parse_list(optional(CMD_LIST)))
    query = parse_query_gpu_csv(optional(CMD_QUERY_GPU)) if smi.gpus else {}
    topo = parse_topo(optional(CMD_TOPO))
    processes = [
        proc.model_copy(update=dict(zip(("gpu_instance_id", "compute_instance_id"),
                                        smi.process_instances.get((proc.gpu_uuid, proc.pid), (None, None)))))
        for proc in parse_compute_apps_csv(optional(CMD_COMPUTE_APPS))
    ]
    gpus = tuple(
        gpu.model_copy(update={
            "compute_capability": (query.get(gpu.uuid) or {}).get("compute_cap"),
            "cpu_affinity": topo.cpu_affinity.get(gpu.index),
            "numa_node": topo.numa_node.get(gpu.index),
        })
        for gpu in smi.gpus
    )
    return HostInventory(
        host=host_info(smi.driver_version, smi.cuda_driver_version, hostname=hostname),
        gpus=gpus,
        processes=tuple(processes),
        links=pair_links(gpus, topo.links),
        source=source,
        errors=tuple(errors),
    )


class SmiBackend:
    name = "nvidia-smi"

    def __init__(self, runner: CommandRunner, source: CollectionSource = CollectionSource.NVIDIA_SMI,
                 hostname: str | None = None) -> None:
        self.runner, self.source, self.hostname = runner, source, hostname

    def collect(self, guard: CallGuard) -> HostInventory:
        # Subprocesses carry their own timeout (SubprocessRunner); parsing is pure and fast.
        return collect_smi(self.runner, self.source, self.hostname)
