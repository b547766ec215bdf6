"""``vllm-planner detect``: what GPUs does this host (or an agent, or a capture) have?

    vllm-planner detect                                  # this host, in-process (NVML, else nvidia-smi, else none)
    vllm-planner detect --agent gpu-host-1:50061         # ask a running gpu-agent
    vllm-planner detect --replay CAPTURE_DIR --replay-variant busy
    vllm-planner detect --json                           # {"host": {...}, "gpus": [...], ...}

A table by default; ``--json`` prints the inventory with the field names of the agent's domain model
(``memory_total_bytes``, ``memory_reserved_bytes``, ``memory_cuda_total_bytes``, ...).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from clients.cli.backend import add_connection_arguments, checked_address, connection_kwargs
from clients.cli.options import parse_seconds
from clients.sdk.errors import Unavailable
from gpu_agent.backends import BackendUnavailable
from gpu_agent.factory import CAPTURE_ERRORS, live_backend, replay_backend
from gpu_agent.inventory import HostInventory
from gpu_agent.sanitize import encodable
from gpu_agent.smi_parse import SmiParseError
from gpu_agent.watchdog import CallGuard, CallTimeout
from planner_service.engine.errors import InvalidRequestError
from vllm_planner.bounded import file_label

GIB = 1 << 30


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "detect",
        help="Show the GPUs of this host, of a gpu-agent, or of a recorded capture.",
        description="Read GPU inventory: locally (NVML, else nvidia-smi), from a gpu-agent, or from a capture.",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--agent", metavar="HOST:PORT", default=None, help="Ask the gpu-agent at this address.")
    where.add_argument("--replay", metavar="DIR", type=Path, default=None, help="Read a recorded capture folder.")
    parser.add_argument("--replay-variant", choices=("idle", "busy"), default="idle", help="Capture variant (the *-busy.* files).")
    parser.add_argument("--replay-source", choices=("auto", "nvidia-smi", "nvml"), default="auto",
                        help="Replay the recorded nvidia-smi output (default) or nvml.json.")
    parser.add_argument("--backend", choices=("auto", "nvml", "nvidia-smi", "none"), default="auto", help="Local backend.")
    parser.add_argument("--json", action="store_true", help="Print the inventory as one JSON object.")
    parser.add_argument("--timeout-seconds", type=parse_seconds, default=10.0,
                        help="Deadline for the agent call / local collection.")
    # The agents have their own token: no fallback to the planner's env variable.
    add_connection_arguments(parser.add_argument_group("agent connection"), service="agent", token_env=None)
    parser.set_defaults(handler=run)


def _read_local(args: argparse.Namespace) -> HostInventory:
    try:
        if args.replay is not None:
            backend = replay_backend(args.replay, args.replay_variant, args.replay_source)
        else:
            backend = live_backend(args.backend, call_timeout_seconds=args.timeout_seconds)
    except (FileNotFoundError, ValueError) as exc:
        raise InvalidRequestError.for_field("--replay" if args.replay else "--backend", str(exc)) from None
    except BackendUnavailable as exc:
        raise Unavailable(str(exc), code="UNAVAILABLE") from None
    # The whole collection is bounded too: a hung driver makes detect fail, not hang.
    outer = CallGuard(args.timeout_seconds * 3)
    try:
        inventory = outer.call(backend.collect, CallGuard(args.timeout_seconds))
    except (CallTimeout, BackendUnavailable) as exc:
        raise Unavailable(f"could not read GPU inventory ({backend.name}): {_short(exc)}", code="UNAVAILABLE") from None
    except CAPTURE_ERRORS as exc:
        if args.replay is not None:  # the capture is the user's input: what cannot be replayed is bad input
            raise InvalidRequestError.for_field("--replay", f"{file_label(args.replay)}: {_short(exc)}") from None
        if not isinstance(exc, (SmiParseError, OSError)):
            raise  # live output breaking the parser in an unforeseen way is a bug: keep it visible
        raise Unavailable(f"could not read GPU inventory ({backend.name}): {_short(exc)}", code="UNAVAILABLE") from None
    # The same range checks as the agent applies before serving (detect --json prints what it would).
    return encodable(inventory)


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _read_agent(args: argparse.Namespace) -> HostInventory:
    from clients.sdk.agent_client import AgentClient

    kwargs = connection_kwargs(args, token_env=None)
    address = checked_address(args.agent, "--agent")
    with AgentClient(address, timeout_seconds=args.timeout_seconds, **kwargs) as client:
        return client.get_inventory()


def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / GIB:.2f}"


def render(inventory: HostInventory, console: Console) -> None:
    host = inventory.host
    console.print(
        f"[bold]{host.hostname}[/bold]  driver {host.driver_version or '?'}  CUDA {host.cuda_driver_version or '?'}  "
        f"source {inventory.source.value}  collected {inventory.collect_time:%Y-%m-%d %H:%M:%S}Z"
        + ("  [red]STALE[/red]" if inventory.stale else "")
    )
    if inventory.status_reason:
        console.print(f"[yellow]{inventory.status_reason}[/yellow]")
    if not inventory.gpus:
        console.print("no GPUs")
        return
    table = Table(title="GPUs (memory in GiB; CUDA total = total - reserved)")
    for column in ("#", "name", "CC", "total", "CUDA total", "used", "free", "MIG", "NUMA"):
        table.add_column(column, justify="right" if column in ("#", "total", "CUDA total", "used", "free") else "left")
    ids = []
    for gpu in inventory.gpus:
        table.add_row(
            str(gpu.index), gpu.name, gpu.compute_capability or "-", _gib(gpu.memory_total_bytes),
            _gib(gpu.memory_cuda_total_bytes), _gib(gpu.memory_used_bytes), _gib(gpu.memory_free_bytes),
            gpu.mig_mode.value if gpu.mig_mode else "-", "-" if gpu.numa_node is None else str(gpu.numa_node),
        )
        pcie = f"  PCIe gen{gpu.pcie_generation} x{gpu.pcie_width}" if gpu.pcie_generation else ""
        ids.append(f"{gpu.index}: {gpu.uuid}  {gpu.pci_bus_id or ''}{pcie}")
        for mig in gpu.mig_devices:
            table.add_row(f"{gpu.index}.{mig.index}", f"  MIG {mig.profile}", "", _gib(mig.memory_total_bytes),
                          _gib(mig.memory_total_bytes), _gib(mig.memory_used_bytes), _gib(mig.memory_free_bytes), "", "")
            ids.append(f"{gpu.index}.{mig.index}: {mig.uuid}")
        if gpu.error:
            ids.append(f"[red]{gpu.index}: error: {gpu.error}[/red]")
    console.print(table)
    for line in ids:
        console.print(line, highlight=False, emoji=False)
    if inventory.processes:
        procs = Table(title="Processes holding GPU memory")
        index_of = {gpu.uuid: str(gpu.index) for gpu in inventory.gpus}
        for column in ("pid", "name", "used GiB", "GPU"):
            procs.add_column(column)
        for proc in inventory.processes:
            procs.add_row(str(proc.pid), proc.name or "-", _gib(proc.used_memory_bytes), index_of.get(proc.gpu_uuid, proc.gpu_uuid))
        console.print(procs)
    for error in inventory.errors[:10]:  # readings the agent could not use (reported as unknown) and failed probes
        where = f"GPU {error.gpu_index}: " if error.gpu_index is not None else ""
        console.print(f"{where}{error.probe}: {error.message}", style="yellow", highlight=False, emoji=False, markup=False)
    if len(inventory.errors) > 10:
        console.print(f"[yellow]... {len(inventory.errors) - 10} more collection errors (--json lists them)[/yellow]")
    nvlinked = [link for link in inventory.links if link.nvlink_count]
    if inventory.links:
        levels = sorted({(link.level.value if link.level else "?") for link in inventory.links})
        console.print(f"GPU links: {len(nvlinked)}/{len(inventory.links)} pairs over NVLink; levels {', '.join(levels)}")


def run(args: argparse.Namespace) -> int:
    inventory = _read_agent(args) if args.agent else _read_local(args)
    if args.json:
        sys.stdout.write(json.dumps(inventory.model_dump(mode="json"), indent=2) + "\n")
    else:
        # Piped output is read by people too: wide enough that GPU names do not wrap.
        render(inventory, Console(width=None if sys.stdout.isatty() else 120))
    return 0
