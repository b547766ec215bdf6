"""Prometheus metrics for both services: per-RPC metrics recorded by a server interceptor that
``start_server`` installs, the service metrics the agent and planner update, and the HTTP endpoint.

Services import what they need and update it; nothing else to wire::

    from vllm_planner.transport import metrics

    with metrics.AGENT_COLLECTION_SECONDS.labels(source="nvml").time():
        snapshot = collect()
    metrics.AGENT_COLLECTION_ERRORS_TOTAL.labels(source="nvml", reason="timeout").inc()
    metrics.FLEET_HOSTS.labels(state="ready").set(12)
    metrics.HUB_CACHE_REQUESTS_TOTAL.labels(result="hit").inc()

A service-specific metric is created once with ``metrics.counter(...)`` / ``gauge`` / ``histogram``;
asking again for the same name returns the same object (so module reloads and several servers in one
test process never hit prometheus-client's "Duplicated timeseries" error).

All metrics live in prometheus-client's default registry, which also carries the process and
platform collectors (CPU, memory, open fds) for free.
"""

from __future__ import annotations

import logging
import threading
from typing import Sequence

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

_lock = threading.Lock()
# name -> (metric, its type, its label names): asking twice must ask for the same thing.
_created: dict[str, tuple[Counter | Gauge | Histogram, type, tuple[str, ...]]] = {}

# Latency buckets from 1 ms to 60 s: a cached inventory answers in ms, a plan with Hub lookups in s.
RPC_LATENCY_BUCKETS_SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def _get_or_create(kind: type, name: str, documentation: str, labelnames: Sequence[str], **kwargs):
    with _lock:
        if name in _created:
            metric, existing_kind, existing_labels = _created[name]
            if existing_kind is not kind or existing_labels != tuple(labelnames):
                raise ValueError(f"metric {name} already exists with another type or labels")
            return metric
        metric = kind(name, documentation, labelnames=tuple(labelnames), registry=REGISTRY, **kwargs)
        _created[name] = (metric, kind, tuple(labelnames))
        return metric


def counter(name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
    """A counter (``name`` without the ``_total`` suffix; prometheus-client appends it)."""
    return _get_or_create(Counter, name, documentation, labelnames)


def gauge(name: str, documentation: str, labelnames: Sequence[str] = ()) -> Gauge:
    return _get_or_create(Gauge, name, documentation, labelnames)


def histogram(
    name: str, documentation: str, labelnames: Sequence[str] = (), buckets: Sequence[float] = RPC_LATENCY_BUCKETS_SECONDS
) -> Histogram:
    return _get_or_create(Histogram, name, documentation, labelnames, buckets=tuple(buckets))


# --- RPC metrics (recorded by MetricsInterceptor; names follow go-grpc-prometheus) -------------------

RPC_STARTED_TOTAL = counter(
    "grpc_server_started", "RPCs started on the server.", ("grpc_service", "grpc_method", "grpc_type")
)
RPC_HANDLED_TOTAL = counter(
    "grpc_server_handled",
    "RPCs completed on the server, by status code.",
    ("grpc_service", "grpc_method", "grpc_type", "grpc_code"),
)
RPC_HANDLING_SECONDS = histogram(
    "grpc_server_handling_seconds",
    "Time from receiving an RPC to its completion, by status code.",
    ("grpc_service", "grpc_method", "grpc_type", "grpc_code"),
)

# --- Service metrics -------------------------------------------------------------------------------

AGENT_COLLECTION_SECONDS = histogram(
    "vllm_planner_agent_collection_seconds",
    "Time the GPU agent spent collecting one inventory snapshot, by source (nvml, nvidia-smi, fake).",
    ("source",),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
AGENT_COLLECTION_ERRORS_TOTAL = counter(
    "vllm_planner_agent_collection_errors",
    "Inventory collections that failed, by source and reason (timeout, driver, device_lost, pod_resources, error).",
    ("source", "reason"),
)
AGENT_SNAPSHOT_AGE_SECONDS = gauge(
    "vllm_planner_agent_snapshot_age_seconds", "Age of the inventory snapshot the agent serves."
)
FLEET_HOSTS = gauge(
    "vllm_planner_fleet_hosts", "Hosts the planner knows, by state (connecting, ready, stale, gone).", ("state",)
)
HUB_CACHE_REQUESTS_TOTAL = counter(
    "vllm_planner_hub_cache_requests",
    "Model metadata lookups by cache result (hit, miss, error).",
    ("result",),
)
PLANS_TOTAL = counter("vllm_planner_plans", "Plans computed, by outcome (fits, does_not_fit, error).", ("outcome",))


def split_method(full_method: str) -> tuple[str, str]:
    """'/pkg.Service/Method' -> ('pkg.Service', 'Method'); anything else -> ('unknown', name)."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return (service or "unknown", method or "unknown")


class MetricsServer:
    """The plaintext HTTP ``/metrics`` endpoint (prometheus-client's WSGI server in a daemon thread)."""

    def __init__(self, listen: str) -> None:
        from vllm_planner.transport.server import split_listen

        host, port = split_listen(listen, "metrics_listen")
        self._httpd, self._thread = start_http_server(port, addr=host)
        self.host = host
        self.port = int(self._httpd.server_address[1])
        log.info("metrics endpoint on http://%s:%d/metrics", host, self.port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
