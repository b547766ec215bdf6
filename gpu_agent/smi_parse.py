"""Pure parsers for nvidia-smi output, and their assembly into a ``HostInventory``.

Used by the live nvidia-smi backend and by ``--replay`` over recorded files alike. Inputs:
``nvidia-smi -q -x`` (XML; parsed by element name, since the DTD version moves between drivers),
``--query-gpu=... --format=csv`` (with header: fields are found by name), ``--query-compute-apps=
pid,process_name,used_memory,gpu_uuid --format=csv``, ``topo -m`` (ANSI codes in the header line),
and ``-L`` (the only place that names MIG devices' UUIDs and profiles). "N/A", "[N/A]" and
"[Not Supported]" mean absent.
"""

from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from gpu_agent.inventory import (
    MIB,
    ComputeMode,
    Gpu,
    GpuProcess,
    LinkLevel,
    MigDevice,
    MigMode,
    cuda_total,
)

_ABSENT = {"", "n/a", "[n/a]", "[not supported]", "not supported", "none", "[unknown error]"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_COMPUTE_MODES = {
    "default": ComputeMode.DEFAULT,
    "exclusive_process": ComputeMode.EXCLUSIVE_PROCESS,
    "prohibited": ComputeMode.PROHIBITED,
}
_LEVELS = {level.value: level for level in LinkLevel}


class SmiParseError(ValueError):
    """nvidia-smi output that does not have the expected shape."""


def _value(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.strip()
    return None if text.lower() in _ABSENT else text


def _number(text: str | None) -> float | None:
    """'81559 MiB' -> 81559.0, '700.00 W' -> 700.0, '16x' -> 16.0; absent -> None."""
    text = _value(text)
    if text is None:
        return None
    match = re.match(r"-?\d+(\.\d+)?", text)
    return float(match.group()) if match else None


def _int(text: str | None) -> int | None:
    number = _number(text)
    return None if number is None else int(number)


def _mib_bytes(text: str | None) -> int | None:
    number = _number(text)
    return None if number is None else int(number) * MIB


def _find(node: ET.Element | None, path: str) -> str | None:
    if node is None:
        return None
    found = node.find(path)
    return found.text if found is not None else None


def _mig(text: str | None) -> MigMode | None:
    text = _value(text)
    if text is None:
        return None
    return MigMode.ENABLED if text.lower() == "enabled" else MigMode.DISABLED


def _enabled(text: str | None) -> bool | None:
    text = _value(text)
    return None if text is None else text.lower() == "enabled"


@dataclass
class SmiHost:
    driver_version: str | None
    cuda_driver_version: str | None
    gpus: list[Gpu] = field(default_factory=list)
    # (gpu uuid, pid) -> (gpu_instance_id, compute_instance_id) for MIG processes.
    process_instances: dict[tuple[str, int], tuple[int | None, int | None]] = field(default_factory=dict)


def parse_query_xml(text: str, mig_names: dict[str, list[tuple[str, str]]] | None = None) -> SmiHost:
    """``nvidia-smi -q -x``. ``mig_names`` (from ``parse_list``) gives MIG UUIDs and profiles."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise SmiParseError(f"nvidia-smi -q -x: not XML: {exc}") from exc
    host = SmiHost(_value(_find(root, "driver_version")), _value(_find(root, "cuda_version")))
    for index, node in enumerate(root.findall("gpu")):
        uuid = _value(_find(node, "uuid")) or ""
        memory = node.find("fb_memory_usage")
        total, reserved = _mib_bytes(_find(memory, "total")), _mib_bytes(_find(memory, "reserved"))
        link = node.find("pci/pci_gpu_link_info")
        names = (mig_names or {}).get(uuid, [])
        migs = []
        for mig in node.findall("mig_devices/mig_device"):
            mig_index = _int(_find(mig, "index"))
            if mig_index is None:
                continue
            profile, mig_uuid = names[mig_index] if mig_index < len(names) else ("", "")
            mig_mem = mig.find("fb_memory_usage")
            migs.append(MigDevice(
                uuid=mig_uuid, parent_uuid=uuid, index=mig_index, profile=profile,
                gpu_instance_id=_int(_find(mig, "gpu_instance_id")),
                compute_instance_id=_int(_find(mig, "compute_instance_id")),
                memory_total_bytes=_mib_bytes(_find(mig_mem, "total")),
                memory_used_bytes=_mib_bytes(_find(mig_mem, "used")),
                memory_free_bytes=_mib_bytes(_find(mig_mem, "free")),
                multiprocessor_count=_int(_find(mig, "device_attributes/shared/multiprocessor_count")),
            ))
        power = _number(_find(node, "gpu_power_readings/current_power_limit"))
        # Newer drivers print instant and average draw; older ones one power_draw (sometimes under power_readings).
        draw = next((v for v in (_number(_find(node, path)) for path in (
            "gpu_power_readings/instant_power_draw", "gpu_power_readings/power_draw", "power_readings/power_draw",
            "gpu_power_readings/average_power_draw")) if v is not None), None)
        mode = _value(_find(node, "compute_mode"))
        host.gpus.append(Gpu(
            index=index,  # nvidia-smi index order = XML order
            uuid=uuid,
            name=_value(_find(node, "product_name")) or "",
            pci_bus_id=_value(_find(node, "pci/pci_bus_id")) or node.get("id"),
            memory_total_bytes=total,
            memory_reserved_bytes=reserved,
            memory_used_bytes=_mib_bytes(_find(memory, "used")),
            memory_free_bytes=_mib_bytes(_find(memory, "free")),
            memory_cuda_total_bytes=cuda_total(total, reserved),
            pcie_generation=_int(_find(link, "pcie_gen/current_link_gen")),
            pcie_width=_int(_find(link, "link_widths/current_link_width")),
            pcie_max_generation=_int(_find(link, "pcie_gen/max_link_gen")),
            pcie_max_width=_int(_find(link, "link_widths/max_link_width")),
            mig_mode=_mig(_find(node, "mig_mode/current_mig")),
            mig_mode_pending=_mig(_find(node, "mig_mode/pending_mig")),
            mig_devices=tuple(migs),
            ecc_enabled=_enabled(_find(node, "ecc_mode/current_ecc")),
            power_limit_milliwatts=None if power is None else round(power * 1000),
            power_usage_milliwatts=None if draw is None else round(draw * 1000),
            temperature_celsius=_int(_find(node, "temperature/gpu_temp")),
            utilization_gpu_percent=_int(_find(node, "utilization/gpu_util")),
            utilization_memory_percent=_int(_find(node, "utilization/memory_util")),
            compute_mode=_COMPUTE_MODES.get(mode.lower()) if mode else None,
            persistence_mode_enabled=_enabled(_find(node, "persistence_mode")),
        ))
        for proc in node.findall("processes/process_info"):
            pid = _int(_find(proc, "pid"))
            if pid is not None:
                host.process_instances[(uuid, pid)] = (
                    _int(_find(proc, "gpu_instance_id")), _int(_find(proc, "compute_instance_id")))
    return host


def _csv_rows(text: str) -> tuple[list[str], list[list[str]]]:
    rows = [[cell.strip() for cell in row] for row in csv.reader(io.StringIO(text)) if any(c.strip() for c in row)]
    if not rows:
        return [], []
    # "memory.total [MiB]" -> "memory.total"
    header = [re.sub(r"\s*\[.*\]$", "", name) for name in rows[0]]
    return header, rows[1:]


def parse_query_gpu_csv(text: str) -> dict[str, dict[str, str | None]]:
    """``--query-gpu=... --format=csv`` (with header) -> {uuid: {field: value}}."""
    header, rows = _csv_rows(text)
    if "uuid" not in header:
        raise SmiParseError("--query-gpu output needs a header with a uuid column")
    out = {}
    for row in rows:
        record = {name: _value(cell) for name, cell in zip(header, row)}
        out[record["uuid"] or ""] = record
    return out


def parse_compute_apps_csv(text: str) -> list[GpuProcess]:
    """``--query-compute-apps=pid,process_name,used_memory,gpu_uuid --format=csv``."""
    header, rows = _csv_rows(text)
    if rows and not {"pid", "gpu_uuid"} <= set(header):
        raise SmiParseError("--query-compute-apps output needs pid and gpu_uuid columns")
    out = []
    for row in rows:
        record = {name: cell for name, cell in zip(header, row)}
        out.append(GpuProcess(
            pid=int(record["pid"]),
            gpu_uuid=record["gpu_uuid"],
            name=_value(record.get("process_name")),
            used_memory_bytes=_mib_bytes(record.get("used_gpu_memory", record.get("used_memory"))),
        ))
    return out


def parse_list(text: str) -> dict[str, list[tuple[str, str]]]:
    """``nvidia-smi -L`` -> {gpu uuid: [(mig profile, mig uuid) by MIG device index]}."""
    out: dict[str, list[tuple[str, str]]] = {}
    current: str | None = None
    for line in text.splitlines():
        gpu = re.match(r"GPU \d+: .*\(UUID: (GPU-[^)]+)\)", line.strip())
        if gpu:
            current = gpu.group(1)
            out[current] = []
            continue
        mig = re.match(r"MIG (\S+)\s+Device\s+(\d+): \(UUID: (MIG-[^)]+)\)", line.strip())
        if mig and current is not None:
            slots = out[current]
            index = int(mig.group(2))
            slots.extend([("", "")] * (index + 1 - len(slots)))
            slots[index] = (mig.group(1), mig.group(3))
    return out


@dataclass
class Topology:
    links: dict[tuple[int, int], tuple[LinkLevel | None, int]]
    cpu_affinity: dict[int, str | None]
    numa_node: dict[int, int | None]


def parse_topo(text: str) -> Topology:
    """``nvidia-smi topo -m``: the GPU x GPU matrix plus CPU/NUMA affinity columns."""
    lines = [_ANSI.sub("", line) for line in text.splitlines()]
    header_at = next((i for i, line in enumerate(lines) if "GPU0" in line and "CPU Affinity" in line), None)
    topo = Topology({}, {}, {})
    if header_at is None:
        if any(line.strip() for line in lines):
            raise SmiParseError("topo -m: no header line with GPU0 and CPU Affinity")
        return topo
    columns = [c.strip() for c in lines[header_at].split("\t")]
    columns = [c for c in columns if c]
    gpu_columns = [c for c in columns if re.fullmatch(r"GPU\d+", c)]
    for line in lines[header_at + 1:]:
        cells = [c.strip() for c in line.split("\t")]
        if not cells or not re.fullmatch(r"GPU\d+", cells[0]):
            if not line.strip():
                break
            continue  # NIC rows and the like
        row = int(cells[0][3:])
        values = cells[1:]
        for col, name in enumerate(gpu_columns):
            other = int(name[3:])
            cell = values[col] if col < len(values) else ""
            if other <= row or cell == "X":
                continue
            nv = re.fullmatch(r"NV(\d+)", cell)
            pair = (row, other)
            topo.links[pair] = (LinkLevel.NVLINK, int(nv.group(1))) if nv else (_LEVELS.get(cell), 0)
        rest = values[len(gpu_columns):]
        topo.cpu_affinity[row] = _value(rest[0]) if len(rest) > 0 else None
        topo.numa_node[row] = _int(rest[1]) if len(rest) > 1 else None
    # The matrix is symmetric; keep pairs seen only from the lower row too.
    return topo
