"""Per-GPU gauges on the agent's ``/metrics``, labelled like dcgm-exporter so dashboards join.

dcgm-exporter labels every GPU series with ``gpu`` (the index), ``UUID``, ``modelName``,
``Hostname`` (and ``pci_bus_id``); these series use the same label names and values, so a Grafana
query can join ``vllm_planner_agent_gpu_memory_free_bytes`` with ``DCGM_FI_DEV_FB_USED`` on
``UUID``. Values come from the collector's cached snapshot at scrape time (a scrape never calls the
driver), whole GPUs only (MIG instances are placement targets, not devices with their own sensors):

    vllm_planner_agent_gpu_memory_used_bytes / _memory_free_bytes / _memory_total_bytes
    vllm_planner_agent_gpu_utilization_percent, _temperature_celsius, _power_usage_watts
    vllm_planner_agent_gpu_xid_errors_total, _last_xid                (from NVML XID events)
    vllm_planner_agent_gpu_ecc_errors_corrected_total / _uncorrected_total  (NVML volatile counters)
    vllm_planner_agent_gpu_healthy                                    (0 after an XID/ECC event or a failed probe)

A sensor the GPU does not report is left out rather than exported as 0.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gpu_agent.inventory import GpuHealth
from vllm_planner.transport import metrics

if TYPE_CHECKING:
    from gpu_agent.collector import Collector

LABELS = ("gpu", "UUID", "modelName", "Hostname", "pci_bus_id")
PREFIX = "vllm_planner_agent_gpu_"

_lock = threading.Lock()
_collectors: list["Collector"] = []
_registered = False


class _GpuMetrics:
    """A prometheus-client custom collector over every running agent collector of this process."""

    def describe(self) -> list[Metric]:
        return []  # the series depend on the GPUs present: let prometheus-client call collect()

    def collect(self) -> Iterator[Metric]:
        families = {
            "memory_used_bytes": GaugeMetricFamily(PREFIX + "memory_used_bytes", "GPU memory in use (NVML v2 used).", labels=LABELS),
            "memory_free_bytes": GaugeMetricFamily(PREFIX + "memory_free_bytes", "GPU memory free.", labels=LABELS),
            "memory_total_bytes": GaugeMetricFamily(PREFIX + "memory_total_bytes", "CUDA-visible GPU memory (total - reserved).", labels=LABELS),
            "utilization_percent": GaugeMetricFamily(PREFIX + "utilization_percent", "GPU utilization.", labels=LABELS),
            "temperature_celsius": GaugeMetricFamily(PREFIX + "temperature_celsius", "GPU temperature.", labels=LABELS),
            "power_usage_watts": GaugeMetricFamily(PREFIX + "power_usage_watts", "Board power draw.", labels=LABELS),
            "last_xid": GaugeMetricFamily(PREFIX + "last_xid", "Most recent XID error code.", labels=LABELS),
            "healthy": GaugeMetricFamily(PREFIX + "healthy", "1 unless an XID/ECC event or a failed probe marked the GPU unhealthy.", labels=LABELS),
            "xid_errors": CounterMetricFamily(PREFIX + "xid_errors", "Critical XID events since the agent started.", labels=LABELS),
            "ecc_corrected": CounterMetricFamily(PREFIX + "ecc_errors_corrected", "Corrected ECC errors since the driver loaded.", labels=LABELS),
            "ecc_uncorrected": CounterMetricFamily(PREFIX + "ecc_errors_uncorrected", "Uncorrected ECC errors since the driver loaded.", labels=LABELS),
        }
        with _lock:
            collectors = list(_collectors)
        for collector in collectors:
            snapshot = collector.snapshot()
            if snapshot is None:
                continue
            hostname = snapshot.host.hostname
            for gpu in snapshot.gpus:
                labels = [str(gpu.index), gpu.uuid, gpu.name, hostname, gpu.pci_bus_id or ""]
                values = {
                    "memory_used_bytes": gpu.memory_used_bytes,
                    "memory_free_bytes": gpu.memory_free_bytes,
                    "memory_total_bytes": gpu.memory_cuda_total_bytes,
                    "utilization_percent": gpu.utilization_gpu_percent,
                    "temperature_celsius": gpu.temperature_celsius,
                    "power_usage_watts": None if gpu.power_usage_milliwatts is None else gpu.power_usage_milliwatts / 1000,
                    "last_xid": gpu.last_xid,
                    "healthy": 0 if gpu.error or gpu.health is GpuHealth.UNHEALTHY else 1,
                    "xid_errors": gpu.xid_events_count,
                    "ecc_corrected": gpu.ecc_errors_corrected_count,
                    "ecc_uncorrected": gpu.ecc_errors_uncorrected_count,
                }
                for key, value in values.items():
                    if value is not None:
                        families[key].add_metric(labels, float(value))
        yield from families.values()


def _oldest_snapshot_age() -> float:
    with _lock:
        collectors = list(_collectors)
    return max((c.age_seconds() for c in collectors), default=0.0)


def register_gpu_metrics(collector: "Collector") -> None:
    """Export ``collector``'s GPUs (and its snapshot age) until ``unregister_gpu_metrics``."""
    global _registered
    with _lock:
        _collectors.append(collector)
        if not _registered:
            REGISTRY.register(_GpuMetrics())
            metrics.AGENT_SNAPSHOT_AGE_SECONDS.set_function(_oldest_snapshot_age)
            _registered = True


def unregister_gpu_metrics(collector: "Collector") -> None:
    with _lock:
        if collector in _collectors:
            _collectors.remove(collector)
