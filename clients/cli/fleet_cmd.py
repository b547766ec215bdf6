"""``vllm-planner fleet hosts|host|place|plan|watch``: the fleet as the planner service sees it.

The fleet lives in the planner service (agents stream to it), so every subcommand needs
``--planner HOST:PORT`` (or ``VLLM_PLANNER_ADDRESS``). Output is a Rich table by default and the
pydantic models as JSON with ``--json``. ``fleet plan FILE`` reads a YAML list of deployments::

    deployments:
      - name: chat
        model: Qwen/Qwen3-8B
        replicas: 2
        max_model_len: 8192
        workload: {prompt_tokens: 1024, gen_tokens: 256, concurrency: 32}
        filter: {gpu_types: [H100]}
      - model: meta-llama/Llama-3.1-70B-Instruct
        tensor_parallel_size: 4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

from clients.cli.backend import add_remote_arguments, remote_client
from clients.cli.options import FIELD_FLAGS, parse_memory_gib, parse_positive_float, parse_positive_int, parse_seconds
from planner_service.engine.errors import InvalidRequestError, invalid_request_from
from planner_service.fleet.models import (
    Deployment,
    FleetHost,
    FleetPlanResponse,
    GpuPinning,
    HostFilter,
    HostState,
    Placement,
    PlaceResponse,
    Reservation,
    targets,
)
from vllm_planner.bounded import MAX_DEPLOYMENTS_BYTES, InputError, file_label, read_yaml, shown

GIB = 1 << 30
_DEPLOYMENT_KEYS = {"name", "replicas", "max_ttft_seconds", "max_itl_seconds", "filter", "sizing", "plan", "strict", "gpu_pinning",
                    "request_rate", "slos", "slo_percentile", "load"}
_STRICT_HELP = ("Refuse placements that would change what was asked (a shorter context than asked or than the "
                "model's default, another KV-cache dtype, a lower utilization than asked) instead of showing them.")
_MODEL_KEYS = {"model", "revision", "quantization", "kv_cache_dtype", "max_model_len", "dtype", "trust_remote_code", "params_b"}
_HARDWARE_KEYS = {"tensor_parallel_size", "pipeline_parallel_size", "enable_expert_parallel"}
_SECTIONS = {"workload", "policy", "engine"}


def register(subparsers: argparse._SubParsersAction) -> None:
    fleet = subparsers.add_parser("fleet", help="Hosts, placement and fleet plans from a planner service.")
    sub = fleet.add_subparsers(dest="fleet_command", required=True, metavar="SUBCOMMAND")

    hosts = sub.add_parser("hosts", help="List the hosts of the fleet.")
    _common(hosts)
    hosts.add_argument("--gpu-type", action="append", default=[], help="GPU name substring (repeatable).")
    hosts.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    hosts.add_argument("--state", action="append", default=[], choices=[s.value for s in HostState])
    hosts.add_argument("--min-free-gib", type=parse_memory_gib, default=None, help="At least one GPU with this much free.")
    hosts.set_defaults(handler=_hosts)

    host = sub.add_parser("host", help="Show one host and its GPUs.")
    _common(host)
    host.add_argument("name", help="Hostname or agent address.")
    host.set_defaults(handler=_host)

    place = sub.add_parser("place", help="Ranked placements of one model on the fleet.")
    _common(place)
    place.add_argument("--model", required=True)
    place.add_argument("--max-model-len", type=parse_positive_int, default=None)
    place.add_argument("--quantization", default=None)
    place.add_argument("--kv-cache-dtype", default=None)
    place.add_argument("--tensor-parallel-size", "--tp", type=parse_positive_int, default=None)
    place.add_argument("--gpu-memory-utilization", type=parse_positive_float, default=None, help="Upper bound; lowered to what is free.")
    place.add_argument("--prompt-tokens", type=parse_positive_int, default=None)
    place.add_argument("--gen-tokens", type=parse_positive_int, default=None)
    place.add_argument("--concurrency", type=parse_positive_int, default=None)
    place.add_argument("--replicas", type=parse_positive_int, default=1)
    place.add_argument("--max-ttft-ms", type=parse_positive_float, default=None)
    place.add_argument("--max-itl-ms", type=parse_positive_float, default=None)
    place.add_argument("--gpu-type", action="append", default=[])
    place.add_argument("--host", action="append", default=[], dest="hosts")
    place.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    place.add_argument("--max-results", type=parse_positive_int, default=10)
    place.add_argument("--show-artifacts", action="store_true", help="Print the pinned commands of the selected placements.")
    place.add_argument("--gpu-pinning", choices=[p.value for p in GpuPinning], default=None,
                       help="How Kubernetes manifests pin the GPUs: auto (DRA when the exact GPUs matter), node, dra.")
    _reserve_flag(place)
    place.add_argument("--strict", action="store_true", help=_STRICT_HELP)
    place.set_defaults(handler=_place, field_namer=_place_field_namer)

    plan = sub.add_parser("plan", help="Place several deployments (YAML file) without over-committing GPUs.")
    _common(plan)
    plan.add_argument("file", type=Path)
    _reserve_flag(plan)
    plan.add_argument("--strict", action="store_true", help=_STRICT_HELP + " Applies to every deployment of FILE.")
    plan.set_defaults(handler=_plan)

    release = sub.add_parser("release", help="Release a reservation made with --reserve-seconds.")
    _common(release)
    release.add_argument("reservation_id", metavar="RESERVATION_ID")
    release.set_defaults(handler=_release)

    reservations = sub.add_parser("reservations", help="List the reservations the planner holds.")
    _common(reservations)
    reservations.set_defaults(handler=_reservations)

    watch = sub.add_parser("watch", help="Stream host changes (Ctrl-C to stop).")
    _common(watch)
    watch.add_argument("--count", type=parse_positive_int, default=None, help="Stop after this many events.")
    watch.add_argument("--timeout-seconds", type=parse_seconds, default=None, help="Stop after this long.")
    watch.set_defaults(handler=_watch)


def _reserve_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reserve-seconds", type=parse_positive_float, default=None, metavar="S",
                        help="Hold the chosen GPUs' memory for S seconds (at most 3600), so no other answer gets it.")


def _common(parser: argparse.ArgumentParser) -> None:
    add_remote_arguments(parser, title="planner service", planner_help="Planner service address")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")


def _client(args: argparse.Namespace):  # noqa: ANN202  (clients.sdk.FleetClient)
    from clients.sdk.fleet_client import FleetClient

    missing = InvalidRequestError.for_field("--planner", "the fleet lives in a planner service: pass --planner HOST:PORT")
    return remote_client(FleetClient, args, missing=missing)


# Deployment fields ``fleet place`` sets from flags of its own (the plan's fields use plan's flag names).
_PLACE_FLAGS = {"replicas": "--replicas", "max_ttft_seconds": "--max-ttft-ms", "max_itl_seconds": "--max-itl-ms",
                "filter.gpu_types": "--gpu-type", "filter.hosts": "--host", "filter.labels": "--label"}


def _place_field_namer(args: argparse.Namespace) -> Callable[[str], str]:
    """``place.plan.model.max_model_len`` (or the service's ``plan.model.max_model_len``) -> ``--max-model-len``."""

    def name(field: str) -> str:
        key = field
        for prefix in ("place.", "deployment.", "plan."):
            key = key.removeprefix(prefix)
        return _PLACE_FLAGS.get(key) or FIELD_FLAGS.get(key) or field

    return name


def _labels(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidRequestError.for_field("--label", f"expected KEY=VALUE, got {shown(item)}")
        out[key] = value
    return out


def _emit_json(value: Any) -> None:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") for v in value]
    print(json.dumps(value, indent=2, sort_keys=True))


def _show(args: argparse.Namespace, value: Any, render: Callable[[Any], None]) -> None:
    """``--json``: the pydantic value as JSON; else the Rich rendering."""
    if args.json:
        _emit_json(value)
    else:
        render(value)


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / GIB:.1f}"


# -- handlers ---------------------------------------------------------------------------------------


def _hosts(args: argparse.Namespace) -> int:
    flt = HostFilter(
        gpu_types=tuple(args.gpu_type), labels=_labels(args.label), states=tuple(HostState(s) for s in args.state),
        min_free_memory_bytes=int(args.min_free_gib * GIB) if args.min_free_gib is not None else None,
    )
    with _client(args) as client:
        _show(args, client.list_hosts(flt), hosts_table)
    return 0


def _host(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _show(args, client.get_host(args.name), host_detail)
    return 0


def _place(args: argparse.Namespace) -> int:
    model: dict[str, Any] = {"model": args.model}
    for key in ("max_model_len", "quantization", "kv_cache_dtype"):
        if getattr(args, key) is not None:
            model[key] = getattr(args, key)
    item: dict[str, Any] = {
        **model,
        "replicas": args.replicas,
        "filter": {"gpu_types": args.gpu_type, "hosts": args.hosts, "labels": _labels(args.label)},
    }
    if args.tensor_parallel_size is not None:
        item["tensor_parallel_size"] = args.tensor_parallel_size
    workload = {k: getattr(args, k) for k in ("prompt_tokens", "gen_tokens", "concurrency") if getattr(args, k) is not None}
    if workload:
        item["workload"] = workload
    if args.gpu_memory_utilization is not None:
        item["policy"] = {"gpu_memory_utilization": args.gpu_memory_utilization}
    if args.max_ttft_ms is not None:
        item["max_ttft_seconds"] = args.max_ttft_ms / 1000
    if args.max_itl_ms is not None:
        item["max_itl_seconds"] = args.max_itl_ms / 1000
    if args.gpu_pinning is not None:
        item["gpu_pinning"] = args.gpu_pinning
    if args.strict:
        item["strict"] = True
    deployment = deployment_from_dict(item, "place")
    with _client(args) as client:
        answer = client.place(deployment, max_results=args.max_results, reserve_seconds=args.reserve_seconds or 0.0)
    _show(args, answer, lambda value: place_report(value, show_artifacts=args.show_artifacts))
    return 0 if answer.selected and not answer.unplaced_replicas else 1


def _plan(args: argparse.Namespace) -> int:
    deployments = load_deployments(args.file)
    if args.strict:
        deployments = [d.model_copy(update={"strict": True}) for d in deployments]
    with _client(args) as client:
        answer = client.plan_fleet(deployments, reserve_seconds=args.reserve_seconds or 0.0)
    _show(args, answer, fleet_plan_report)
    return 0 if not answer.unplaced else 1


def _release(args: argparse.Namespace) -> int:
    with _client(args) as client:
        released = client.release_reservation(args.reservation_id)
    _show(args, released, lambda r: _console().print(f"released {r.reservation_id} ({r.deployment}): "
                                                     f"{sum(h.memory_held_bytes for h in r.holds) / GIB:.1f} GiB on {len(r.holds)} GPU(s)"))
    return 0


def _reservations(args: argparse.Namespace) -> int:
    with _client(args) as client:
        active = client.list_reservations()
    _show(args, active, reservations_table)
    return 0


def _watch(args: argparse.Namespace) -> int:
    seen = 0
    with _client(args) as client:
        for event in client.watch_fleet(timeout_seconds=args.timeout_seconds):
            if args.json:
                print(json.dumps({"initial": event.initial, "removed": event.removed, "host": event.host.model_dump(mode="json")}), flush=True)
            else:
                h = event.host
                tag = "removed" if event.removed else ("now" if event.initial else "change")
                print(f"{tag:8} {h.host:24} {h.state.value:10} gpus={len(h.gpus)} {h.state_reason or ''}".rstrip(), flush=True)
            seen += 1
            if args.count is not None and seen >= args.count:
                break
    return 0


# -- YAML deployments -------------------------------------------------------------------------------


def deployment_from_dict(item: dict[str, Any], where: str) -> Deployment:
    """A deployment from the YAML shorthand (model keys at the top level) or the full ``plan:`` form."""
    if not isinstance(item, dict):
        raise InvalidRequestError.for_field(where, "each deployment must be a mapping")
    item = _slo_shorthand(item, where)
    unknown = sorted(map(str, set(item) - _DEPLOYMENT_KEYS - _MODEL_KEYS - _HARDWARE_KEYS - _SECTIONS))
    if unknown:
        more = f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else ""
        raise InvalidRequestError.for_field(where, f"unknown keys: {', '.join(shown(k, 40) for k in unknown[:5])}{more}")
    data = {k: v for k, v in item.items() if k in _DEPLOYMENT_KEYS}
    if "plan" not in data:
        plan: dict[str, Any] = {"model": {k: v for k, v in item.items() if k in _MODEL_KEYS}}
        hardware = {k: v for k, v in item.items() if k in _HARDWARE_KEYS}
        if hardware:
            plan["hardware"] = hardware
        plan.update({k: item[k] for k in _SECTIONS if k in item})
        data["plan"] = plan
    try:
        return Deployment.model_validate(data)
    except ValidationError as exc:
        raise invalid_request_from(exc, prefix=where) from None


def _slo_shorthand(item: dict[str, Any], where: str) -> dict[str, Any]:
    """``slo: {ttft: 500, tpot: 50}`` or ``slo: [ttft:500, tpot:50]`` (ms) -> ``slos: [{metric, milliseconds}]``."""
    if "slo" not in item:
        return item
    if "slos" in item:
        raise InvalidRequestError.for_field(f"{where}.slo", "give slo or slos, not both")
    raw = item["slo"]
    pairs: list[tuple[Any, Any]]
    if isinstance(raw, dict):
        pairs = list(raw.items())
    elif isinstance(raw, list) and all(isinstance(x, str) and ":" in x for x in raw):
        pairs = [tuple(x.split(":", 1)) for x in raw]
    else:
        raise InvalidRequestError.for_field(f"{where}.slo", "expected {ttft: MS, tpot: MS, e2el: MS} or [ttft:MS, ...]")
    rest = {k: v for k, v in item.items() if k != "slo"}
    rest["slos"] = [{"metric": str(k).strip().lower(), "milliseconds": v} for k, v in pairs]
    return rest


def load_deployments(path: Path) -> list[Deployment]:
    """The deployments of a YAML file: bounded, a regular file, UTF-8, no aliases; errors name the file."""
    label = file_label(path)
    try:
        doc = read_yaml(path, max_bytes=MAX_DEPLOYMENTS_BYTES, what=label)
    except InputError as exc:
        raise InvalidRequestError(str(exc)) from None
    items = doc.get("deployments") if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not items:
        raise InvalidRequestError.for_field(label, "expected a non-empty 'deployments:' list")
    return [deployment_from_dict(item, f"{label}: deployments[{i}]") for i, item in enumerate(items)]


# -- tables -----------------------------------------------------------------------------------------


def _console():  # noqa: ANN202
    from rich.console import Console

    console = Console()
    # Piped output (files, CI logs, tests) gets wide tables instead of wrapped cells.
    return console if console.is_terminal else Console(width=200)


def _table(title: str, *columns: str):  # noqa: ANN202
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    return table


def _gpu_kinds(host: FleetHost) -> str:
    """Physical GPUs by model; a MIG-enabled GPU counts once, with its instances noted."""
    physical = [g for g in host.gpus if not g.is_mig_instance]
    parts = []
    for name in host.gpu_types:
        same = [g for g in physical if g.name == name]
        mig = [g for g in same if g.mig_enabled]
        note = ""
        if mig:
            instances = sum(1 for g in host.gpus if g.mig_parent_uuid in {p.uuid for p in mig})
            note = f" ({len(mig)} in MIG mode: {instances} instance(s))"
        parts.append(f"{len(same)}x {name}{note}")
    return ", ".join(parts) or "-"


def _free_per_target(host: FleetHost) -> str:
    """Free GiB of each placement target: whole GPUs, then MIG instances (marked)."""
    whole = [_gib(g.memory_free_bytes) for g in targets(host) if not g.is_mig_instance]
    mig = [_gib(g.memory_free_bytes) for g in targets(host) if g.is_mig_instance]
    return " ".join(whole + ([f"MIG: {' '.join(mig)}"] if mig else [])) or "-"


def hosts_table(hosts: list[FleetHost]) -> None:
    table = _table(f"{len(hosts)} host(s)", "host", "state", "GPUs", "free GiB (per GPU)", "sources", "address", "note")
    for h in hosts:
        table.add_row(h.host, h.state.value, _gpu_kinds(h), _free_per_target(h), ",".join(s.value for s in h.sources),
                      h.address, h.state_reason or "")
    _console().print(table)


def host_detail(host: FleetHost) -> None:
    console = _console()
    age = "-" if host.last_update_age_seconds is None else f"{host.last_update_age_seconds:.1f}s ago"
    console.print(f"[bold]{host.host}[/bold] {host.address}  state={host.state.value}  updated {age}  driver={host.driver_version or '-'}")
    if host.labels:
        console.print("labels: " + ", ".join(f"{k}={v}" for k, v in sorted(host.labels.items())))
    table = _table("GPUs", "idx", "uuid", "name", "MIG", "total GiB", "free GiB", "CC", "NUMA", "NVLink peers")
    for g in host.gpus:
        mig = g.mig_profile or ("enabled" if g.mig_enabled else "")
        table.add_row(str(g.index), g.uuid, g.name, mig, _gib(g.memory_total_bytes), _gib(g.memory_free_bytes),
                      g.compute_capability or "-", "-" if g.numa_node is None else str(g.numa_node), str(len(g.nvlink_peer_uuids)))
    console.print(table)


def _placement_row(p: Placement) -> list[str]:
    ms = lambda s: "-" if s is None else f"{s * 1000:.0f}"  # noqa: E731
    changed = "!" if p.adjustments else ""  # what the deployment asked was changed: see the warnings below
    return [p.host, ",".join(str(i) for i in p.gpu_indices) + (" (MIG)" if p.mig else ""), p.gpu_name,
            f"{p.tensor_parallel_size} {p.interconnect}", f"{p.gpu_memory_utilization:.2f}", _gib(p.memory_free_bytes),
            f"{p.max_model_len:,}{changed}", p.kv_cache_dtype or "-", f"{p.kv_cache_tokens:,}", f"{p.max_concurrency:.1f}",
            ms(p.ttft_seconds), ms(p.itl_seconds)]


_PLACEMENT_COLUMNS = ("host", "GPUs", "GPU", "TP", "util", "free GiB", "context", "KV dtype", "KV tokens", "max conc.",
                      "TTFT ms", "ITL ms")


def _print_adjustments(console, rows: list[tuple[str, Placement]]) -> None:  # noqa: ANN001
    """Every change to what was asked, as a warning line under the table (``!`` marks the rows)."""
    for label, p in rows:
        for change in p.adjustments:
            console.print(f"warning: {label} on {p.host} GPU {','.join(map(str, p.gpu_indices))}: {change} "
                          "(--strict refuses such placements)", style="yellow", markup=False, highlight=False)


def place_report(answer: PlaceResponse, show_artifacts: bool = False) -> None:
    console = _console()
    table = _table(f"{answer.deployment}: ranked placements ({answer.hosts_considered} host(s) considered)", "#", *_PLACEMENT_COLUMNS)
    for i, p in enumerate(answer.placements, 1):
        table.add_row(str(i), *_placement_row(p))
    console.print(table)
    chosen = _table(f"selected for {len(answer.selected)} replica(s)", *_PLACEMENT_COLUMNS, "GPU UUIDs")
    for p in answer.selected:
        chosen.add_row(*_placement_row(p), ",".join(p.gpu_uuids))
    console.print(chosen)
    _print_adjustments(console, [(f"replica {i}", p) for i, p in enumerate(answer.selected)])
    if answer.unplaced_replicas:
        console.print(f"[red]{answer.unplaced_replicas} replica(s) could not be placed[/red]")
    if answer.rejection_counts:
        counts = ", ".join(f"{reason.value} {n}" for reason, n in sorted(answer.rejection_counts.items(), key=lambda kv: -kv[1]))
        console.print(f"rejected hosts: {sum(answer.rejection_counts.values())} ({counts})")
    if answer.rejections:
        rejected = _table("closest rejected hosts", "host", "reason", "why")
        for r in answer.rejections:
            rejected.add_row(r.host, r.reason.value, r.message)
        console.print(rejected)
    if answer.reservation is not None:
        _reservation_line(console, answer.reservation)
    if show_artifacts:
        for p in answer.selected:
            if p.artifacts:
                console.print(f"[bold]{p.host}[/bold]\n  {p.artifacts.serve_command}\n  {p.artifacts.docker_run}", soft_wrap=True)


def fleet_plan_report(answer: FleetPlanResponse) -> None:
    console = _console()
    if answer.sizings:
        sized = _table("sized for a request rate", "deployment", "req/s", "replicas", "GPU", "TP", "quant", "KV",
                       "max_num_seqs", "req/s per replica", "predicted (ms)")
        for z in answer.sizings:
            predicted = ", ".join(f"{k.removesuffix('_ms')} {v:.0f}" for k, v in z.predicted.items()) or z.reason
            sized.add_row(z.deployment, f"{z.request_rate:g}", str(z.replicas), z.gpu or "-",
                          str(z.tensor_parallel_size or "-"), z.quantization or "-", z.kv_cache_dtype or "-",
                          str(z.max_num_seqs or "-"), f"{z.max_rate_per_replica:.2f}", predicted)
        console.print(sized)
    table = _table(f"{len(answer.assignments)} assignment(s)", "deployment", "replica", *_PLACEMENT_COLUMNS)
    for a in answer.assignments:
        table.add_row(a.deployment, str(a.replica), *_placement_row(a.placement))
    console.print(table)
    _print_adjustments(console, [(f"{a.deployment} replica {a.replica}", a.placement) for a in answer.assignments])
    if answer.unplaced:
        missing = _table("could not be placed", "deployment", "replica", "why")
        for u in answer.unplaced:
            missing.add_row(u.deployment, str(u.replica), u.reason)
        console.print(missing)
    budget = _table("GPU memory budget", "host", "GPU", "free GiB", "reserved GiB", "left GiB")
    for b in answer.budgets:
        budget.add_row(b.host, b.uuid, _gib(b.memory_free_bytes), _gib(b.reserved_bytes), _gib(b.remaining_bytes))
    console.print(budget)
    if answer.reservation is not None:
        _reservation_line(console, answer.reservation)


def _reservation_line(console, reservation: Reservation) -> None:  # noqa: ANN001
    held = sum(h.memory_held_bytes for h in reservation.holds) / GIB
    console.print(f"reserved {held:.1f} GiB on {len(reservation.holds)} GPU(s) for {reservation.expires_in_seconds:.0f}s: "
                  f"release early with `vllm-planner fleet release {reservation.reservation_id}`")


def reservations_table(reservations: list[Reservation]) -> None:
    table = _table(f"{len(reservations)} reservation(s)", "id", "deployment", "expires in s", "GPUs", "held GiB")
    for r in reservations:
        held = sum(h.memory_held_bytes for h in r.holds if not h.consumed)
        table.add_row(r.reservation_id, r.deployment, f"{r.expires_in_seconds:.0f}", str(len(r.holds)), _gib(held))
    _console().print(table)
