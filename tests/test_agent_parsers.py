"""Pure parts of the agent: nvidia-smi parsers, the NVML conversion over the recorded nvml.json, the
synthesized captures, proto round trips and the call watchdog. Expected values are copied from the
recorded files (shared/fixtures/nvidia/h100-80gb-hbm3), not computed by the code under test."""

from __future__ import annotations

import copy
import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pynvml
import pytest

from helpers.paths import CAPTURES, MIB
from helpers.paths import H100_CAPTURE as H100
from helpers.paths import H100_UUID as UUID
from gpu_agent.convert import inventory_from_proto, inventory_to_proto
from gpu_agent.factory import replay_backend
from gpu_agent.inventory import CollectionSource, LinkLevel, MigMode
from gpu_agent.nvml_backend import NvmlBackend
from gpu_agent.nvml_replay import RecordedNvml
from gpu_agent.smi_parse import SmiParseError, parse_compute_apps_csv, parse_list, parse_query_xml, parse_topo
from gpu_agent.watchdog import CallGuard, CallTimeout


def collect(directory: Path, variant: str = "idle", source: str = "auto"):
    return replay_backend(directory, variant, source).collect(CallGuard(5))


def test_xml_parser_reads_memory_in_mib_as_bytes():
    host = parse_query_xml((H100 / "nvidia-smi-q-x-busy.xml").read_text())
    (gpu,) = host.gpus
    assert (host.driver_version, host.cuda_driver_version) == ("580.159.04", "13.0")
    assert gpu.uuid == UUID and gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.memory_total_bytes == 81559 * MIB
    assert gpu.memory_reserved_bytes == 480 * MIB
    assert gpu.memory_used_bytes == 12967 * MIB
    assert gpu.memory_free_bytes == 68113 * MIB
    assert gpu.memory_cuda_total_bytes == 81079 * MIB
    assert gpu.power_limit_milliwatts == 700_000
    assert gpu.pcie_generation == 5 and gpu.pcie_width == 16
    assert gpu.mig_mode is MigMode.DISABLED and gpu.ecc_enabled is True


def test_topo_strips_ansi_and_reads_affinity():
    topo = parse_topo((H100 / "nvidia-smi-topo-m.txt").read_text())
    assert topo.links == {}
    assert topo.cpu_affinity == {0: "0-15"} and topo.numa_node == {0: 0}


def test_parsers_reject_garbage():
    with pytest.raises(SmiParseError):
        parse_query_xml("not xml")
    with pytest.raises(SmiParseError):
        parse_topo("something\nelse\n")
    with pytest.raises(SmiParseError):
        parse_compute_apps_csv("a, b\n1, 2\n")


def test_compute_apps_busy_exact():
    procs = parse_compute_apps_csv((H100 / "query-compute-apps-busy.csv").read_text())
    assert [(p.pid, p.name, p.used_memory_bytes, p.gpu_uuid) for p in procs] == [
        (425, "python3", 2194 * MIB, UUID),
        (450, "/opt/torch/.venv/bin/python3", 10758 * MIB, UUID),
    ]
    assert parse_compute_apps_csv((H100 / "query-compute-apps.csv").read_text()) == []


@pytest.mark.parametrize("variant", ["idle", "busy"])
def test_nvml_replay_exact_values(variant):
    inventory = collect(H100, variant, "nvml")
    assert inventory.source is CollectionSource.REPLAY_NVML
    assert inventory.host.driver_version == "580.159.04"
    assert inventory.host.cuda_driver_version == "13.0"  # 13000 in nvml.json
    (gpu,) = inventory.gpus
    assert gpu.uuid == UUID and gpu.compute_capability == "9.0"
    assert gpu.memory_total_bytes == 85520809984
    assert gpu.memory_reserved_bytes == 503316480
    assert gpu.memory_cuda_total_bytes == 85017493504
    # "Not Supported" is absent, never 0 or -1.
    assert gpu.numa_node is None and gpu.error is None and inventory.errors == ()
    if variant == "idle":
        assert (gpu.memory_used_bytes, gpu.memory_free_bytes) == (0, 85017493504)
        assert inventory.processes == ()
    else:
        # busy_snapshot.used_bytes (14099546112) is NVML v1 "used", which includes the reservation.
        assert gpu.memory_used_bytes == 14099546112 - 503316480
        assert gpu.memory_free_bytes == 85520809984 - 14099546112
        assert [(p.pid, p.used_memory_bytes) for p in inventory.processes] == [(425, 2300575744), (450, 11280580608)]


def test_h100_nvswitch_capture():
    idle = collect(CAPTURES / "h100-sxm-8x-nvswitch")
    assert len(idle.gpus) == 8 and len(idle.links) == 28
    assert all(link.level is LinkLevel.NVLINK and link.nvlink_count == 18 for link in idle.links)
    assert [g.numa_node for g in idle.gpus] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert {g.compute_capability for g in idle.gpus} == {"9.0"}
    assert {g.memory_cuda_total_bytes for g in idle.gpus} == {81079 * MIB}
    busy = collect(CAPTURES / "h100-sxm-8x-nvswitch", "busy")
    assert [g.memory_used_bytes // MIB for g in busy.gpus] == [72916] * 4 + [0] * 4
    assert sorted(p.pid for p in busy.processes) == [91234, 91235, 91236, 91237]


def test_a100_mig_capture():
    inventory = collect(CAPTURES / "a100-80gb-mig", "busy")
    mig_gpu, full_gpu = inventory.gpus
    assert mig_gpu.mig_mode is MigMode.ENABLED and full_gpu.mig_mode is MigMode.DISABLED
    assert full_gpu.mig_devices == ()
    assert [(m.profile, m.gpu_instance_id, m.memory_total_bytes // MIB) for m in mig_gpu.mig_devices] == [
        ("3g.40gb", 2, 40192), ("2g.20gb", 3, 19968), ("1g.10gb", 9, 9728)]
    assert all(m.uuid.startswith("MIG-") and m.parent_uuid == mig_gpu.uuid for m in mig_gpu.mig_devices)
    assert mig_gpu.mig_devices[2].memory_used_bytes == (12 + 8192) * MIB
    (mig_proc,) = [p for p in inventory.processes if p.pid == 51200]
    assert (mig_proc.gpu_instance_id, mig_proc.compute_instance_id) == (9, 0)
    assert inventory.links[0].nvlink_count == 12
    assert parse_list((CAPTURES / "a100-80gb-mig" / "nvidia-smi-L.txt").read_text())[full_gpu.uuid] == []


@pytest.mark.parametrize("directory,source", [(H100, "nvml"), (H100, "nvidia-smi"), (CAPTURES / "a100-80gb-mig", "auto")])
def test_proto_round_trip_keeps_absent_fields_absent(directory, source):
    inventory = collect(directory, "busy", source)
    assert inventory_from_proto(inventory_to_proto(inventory)) == inventory


def test_replay_variant_busy_needs_busy_files(tmp_path):
    (tmp_path / "nvidia-smi-q-x.xml").write_text((H100 / "nvidia-smi-q-x.xml").read_text())
    with pytest.raises(FileNotFoundError):
        replay_backend(tmp_path, "busy")
    with pytest.raises(ValueError):
        replay_backend(tmp_path, "noisy")


def test_watchdog_times_out_and_refuses_while_hung():
    guard = CallGuard(0.2)
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(CallTimeout):
        guard.call(release.wait)
    assert time.monotonic() - started < 1.0
    with pytest.raises(CallTimeout, match="still hung"):
        guard.call(lambda: 1)
    release.set()
    time.sleep(0.05)
    assert guard.call(lambda: 7) == 7
    with pytest.raises(ZeroDivisionError):
        guard.call(lambda: 1 / 0)


class _SwitchedNvml(RecordedNvml):
    """Links as an NVSwitch host reports them: every active link ends at a switch."""

    def nvmlDeviceGetNvLinkRemoteDeviceType(self, h, link):
        return pynvml.NVML_NVLINK_DEVICE_TYPE_SWITCH

    def nvmlDeviceGetNvLinkRemotePciInfo_v2(self, h, link):
        return SimpleNamespace(busId="00000000:80:00.0")

    def nvmlDeviceGetTopologyCommonAncestor(self, a, b):
        return pynvml.NVML_TOPOLOGY_HOSTBRIDGE


def _three_gpus() -> dict:
    """Three copies of the recorded H100: GPUs 0 and 1 with 18 active NVLinks, GPU 2 with none."""
    data = json.loads((H100 / "nvml.json").read_text())
    base = data["devices"][0]
    data["devices"] = []
    for i in range(3):
        device = copy.deepcopy(base)
        device.update(index=i, uuid=f"GPU-{i}", pci={"busId": f"00000000:0{i}:00.0"},
                      nvlink_states=[1] * 18 if i < 2 else base["nvlink_states"])
        data["devices"].append(device)
    return data


def test_nvml_links_through_nvswitch_and_pcie_levels():
    inventory = NvmlBackend(_SwitchedNvml(_three_gpus())).collect(CallGuard(5))
    links = {(link.gpu_index_a, link.gpu_index_b): (link.level, link.nvlink_count) for link in inventory.links}
    assert links == {(0, 1): (LinkLevel.NVLINK, 18), (0, 2): (LinkLevel.PHB, 0), (1, 2): (LinkLevel.PHB, 0)}
    assert inventory.links[0].gpu_uuid_a == "GPU-0" and inventory.links[0].gpu_uuid_b == "GPU-1"
