#!/usr/bin/env python3
"""Check the agent's NVML backend against ``nvidia-smi`` on a machine with a real NVIDIA GPU.

    .venv/bin/python scripts/verify_agent_nvml.py                 # live: NVML backend vs nvidia-smi
    .venv/bin/python scripts/verify_agent_nvml.py --replay shared/fixtures/nvidia/h100-80gb-hbm3 [--variant busy]

Live mode collects once through ``gpu_agent``'s NVML backend (the agent's own code path) and runs
``nvidia-smi --query-gpu=<FIELDS> --format=csv,noheader,nounits`` (with a timeout). Replay mode
compares the recorded ``nvml.json`` (through the same NVML conversion) with the recorded query CSV,
which is how the comparison logic is tested without a GPU. Compared per GPU: UUID, name, driver
version, compute capability exactly; memory total within 1 MiB (nvidia-smi truncates to MiB);
used/free within ``--tolerance-mib`` plus that 1 MiB (allocations churn between the two reads).
Prints a table; exits 1 on any mismatch, 2 when it cannot run.
"""

from __future__ import annotations

import argparse
import csv
import io
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from gpu_agent.inventory import MIB, HostInventory  # noqa: E402
from gpu_agent.watchdog import CallGuard  # noqa: E402

FIELDS = ("index", "uuid", "name", "memory.total", "memory.used", "memory.free", "driver_version", "compute_cap")
# Field order of the recorded captures (shared/fixtures/nvidia/README.md).
RECORDED = {
    "idle": ("query-gpu-noheader-nounits.csv", (
        "index", "uuid", "name", "serial", "memory.total", "memory.used", "memory.free", "memory.reserved",
        "driver_version", "compute_cap", "pci.bus_id", "pcie.link.gen.max", "pcie.link.gen.current",
        "pcie.link.width.max", "pcie.link.width.current", "mig.mode.current", "ecc.mode.current", "power.limit",
        "power.max_limit", "temperature.gpu", "utilization.gpu", "utilization.memory", "clocks.max.sm",
        "clocks.max.memory", "persistence_mode", "compute_mode")),
    "busy": ("query-gpu-busy.csv", ("index", "uuid", "name", "memory.total", "memory.used", "memory.free", "memory.reserved")),
}


@dataclass(frozen=True)
class Check:
    gpu: int
    field: str
    agent: str
    smi: str
    ok: bool


def parse_smi_rows(text: str, fields: tuple[str, ...]) -> list[dict[str, str]]:
    return [dict(zip(fields, (c.strip() for c in row))) for row in csv.reader(io.StringIO(text)) if row]


def compare(inventory: HostInventory, rows: list[dict[str, str]], tolerance_mib: float = 1.0) -> list[Check]:
    checks: list[Check] = []
    by_index = {g.index: g for g in inventory.gpus}
    if len(rows) != len(inventory.gpus):
        checks.append(Check(-1, "gpu count", str(len(inventory.gpus)), str(len(rows)), False))
    for row in rows:
        index = int(row["index"])
        gpu = by_index.get(index)
        if gpu is None:
            checks.append(Check(index, "present", "missing", "present", False))
            continue
        exact = {"uuid": gpu.uuid, "name": gpu.name, "driver_version": inventory.host.driver_version,
                 "compute_cap": gpu.compute_capability}
        for field, agent_value in exact.items():
            if field in row:
                checks.append(Check(index, field, str(agent_value), row[field], str(agent_value) == row[field]))
        for field, agent_bytes, slack in (
            ("memory.total", gpu.memory_total_bytes, 1.0),
            ("memory.used", gpu.memory_used_bytes, 1.0 + tolerance_mib),
            ("memory.free", gpu.memory_free_bytes, 1.0 + tolerance_mib),
        ):
            if field not in row:
                continue
            smi_mib = float(row[field])
            agent_mib = None if agent_bytes is None else agent_bytes / MIB
            ok = agent_mib is not None and abs(agent_mib - smi_mib) < slack
            checks.append(Check(index, field + " [MiB]", "-" if agent_mib is None else f"{agent_mib:.2f}", f"{smi_mib:g}", ok))
    return checks


def render(checks: list[Check], console: Console) -> None:
    table = Table(title="gpu-agent NVML backend vs nvidia-smi")
    for column in ("GPU", "field", "agent", "nvidia-smi", "result"):
        table.add_column(column)
    for c in checks:
        table.add_row(str(c.gpu), c.field, c.agent, c.smi, "[green]ok[/green]" if c.ok else "[red]MISMATCH[/red]")
    console.print(table)


def _live(timeout_seconds: float) -> tuple[HostInventory, list[dict[str, str]]]:
    from gpu_agent.nvml_backend import NvmlBackend

    inventory = NvmlBackend().collect(CallGuard(timeout_seconds))
    out = subprocess.run(
        ["nvidia-smi", f"--query-gpu={','.join(FIELDS)}", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, timeout=timeout_seconds, check=True,
    ).stdout
    return inventory, parse_smi_rows(out, FIELDS)


def _replay(directory: Path, variant: str) -> tuple[HostInventory, list[dict[str, str]]]:
    from gpu_agent.inventory import CollectionSource
    from gpu_agent.nvml_backend import NvmlBackend
    from gpu_agent.nvml_replay import RecordedNvml

    inventory = NvmlBackend(RecordedNvml.from_dir(directory, variant), CollectionSource.REPLAY_NVML).collect(CallGuard(5))
    name, fields = RECORDED[variant]
    return inventory, parse_smi_rows((directory / name).read_text(), fields)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replay", type=Path, default=None, help="Compare a recorded capture (nvml.json vs query CSV).")
    parser.add_argument("--variant", choices=("idle", "busy"), default="idle")
    parser.add_argument("--tolerance-mib", type=float, default=1.0, help="Allowed used/free churn between the reads.")
    parser.add_argument("--timeout-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    console = Console()
    try:
        inventory, rows = _replay(args.replay, args.variant) if args.replay else _live(args.timeout_seconds)
    except Exception as exc:  # the script's one boundary: cannot run is exit 2, one line
        console.print(f"[red]cannot compare: {type(exc).__name__}: {exc}[/red]")
        return 2
    checks = compare(inventory, rows, args.tolerance_mib)
    render(checks, console)
    failed = [c for c in checks if not c.ok]
    console.print(f"{len(checks) - len(failed)}/{len(checks)} checks ok")
    return 1 if failed or not checks else 0


if __name__ == "__main__":
    sys.exit(main())
