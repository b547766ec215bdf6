"""Build the agent: settings, backend, collector, gRPC server, readiness tied to freshness.

Health: ``""`` reports the process (SERVING while it runs); ``vllm_planner.v1.GpuAgentService``
reports readiness: SERVING only while the snapshot is fresh (see ``Collector``), so a Kubernetes
readiness probe on that service name drops a host whose driver hung, while liveness on ``""``
does not restart it (a restart cannot fix a hung driver).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from gpu_agent.backends import InventoryBackend
from gpu_agent.collector import Collector
from gpu_agent.factory import BACKENDS, REPLAY_SOURCES, live_backend, replay_backend
from gpu_agent.gpu_metrics import register_gpu_metrics, unregister_gpu_metrics
from gpu_agent.pod_resources import DEFAULT_SOCKET, PodResourcesClient
from gpu_agent.servicer import SERVICE_FULL_NAME, ChangeSignal, GpuAgentServicer
from vllm_planner.transport.config import ServerSettings
from vllm_planner.transport.server import RunningServer, start_server
from vllm_planner.v1 import agent_pb2_grpc


class GpuAgentSettings(ServerSettings):
    model_config = SettingsConfigDict(env_prefix="GPU_AGENT_", extra="forbid")

    listen: str = Field(default="0.0.0.0:50061", description="HOST:PORT to listen on (port 0 = any free port).")
    backend: str = Field(default="auto", description="nvml, nvidia-smi, none or auto (NVML, else nvidia-smi, else none).")
    replay: Path | None = Field(default=None, description="Serve a recorded capture folder instead of this host's GPUs.")
    replay_variant: str = Field(default="idle", description="idle or busy (the capture's *-busy.* files).")
    replay_source: str = Field(default="auto", description="auto, nvidia-smi (the recorded nvidia-smi output) or nvml (nvml.json).")
    interval_seconds: float = Field(default=10.0, gt=0, description="How often the collector refreshes the snapshot.")
    heartbeat_seconds: float = Field(default=15.0, gt=0, description="WatchInventory heartbeat period while nothing changes.")
    call_timeout_seconds: float = Field(default=5.0, gt=0, description="Timeout of each NVML call / nvidia-smi run.")
    collect_timeout_seconds: float = Field(default=30.0, gt=0, description="Timeout of one whole collection.")
    stale_after_intervals: float = Field(default=3.0, gt=0, description="Snapshot is stale (NOT_SERVING) after this many intervals.")
    hostname: str | None = Field(default=None, description="Host name to report (default: this machine's).")
    register_with: str | None = Field(default=None, description="Planner HOST:PORT to report to (push mode) or self-register with (dial mode).")
    register_mode: str = Field(default="push", description="push: send inventory and heartbeats to the planner (ReportInventory); dial: register, the planner dials this agent.")
    advertise_address: str | None = Field(default=None, description="HOST:PORT the planner should dial (default: the bound address; this host's name for 0.0.0.0).")
    register_token_file: Path | None = Field(default=None, description="File holding the planner's bearer token, for --register-with (default: this agent's own token).")
    register_tls: bool = Field(default=False, description="Call the planner over TLS (implied by any --register-tls-* file).")
    register_tls_ca_file: Path | None = Field(default=None, description="CA (PEM) that signed the planner's certificate (default: the system roots).")
    register_tls_cert_file: Path | None = Field(default=None, description="Client certificate (PEM) for a planner that requires mutual TLS.")
    register_tls_key_file: Path | None = Field(default=None, description="Client private key (PEM) for a planner that requires mutual TLS.")
    register_tls_server_name: str | None = Field(default=None, description="Name the planner's certificate must carry (default: the --register-with host name).")
    pod_resources_socket: Path | None = Field(
        default=Path(DEFAULT_SOCKET),
        description="The kubelet's PodResources socket: when it exists, GPUs allocated to pods are reported as taken ('off': never read it).",
    )

    @field_validator("pod_resources_socket", mode="before")
    @classmethod
    def _socket_off(cls, value):  # noqa: ANN001, ANN206
        return None if isinstance(value, str) and value.strip().lower() == "off" else value

    @field_validator("register_with", "advertise_address")
    @classmethod
    def _dial_address(cls, value: str | None, info) -> str | None:  # noqa: ANN001
        from vllm_planner.transport.address import dial_address

        return None if value is None else dial_address(value, info.field_name)

    @model_validator(mode="after")
    def _check_agent(self) -> "GpuAgentSettings":
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}")
        if self.replay_variant not in ("idle", "busy"):
            raise ValueError("replay_variant must be idle or busy")
        if self.register_mode not in ("push", "dial"):
            raise ValueError("register_mode must be push or dial")
        if (self.register_tls_cert_file is None) != (self.register_tls_key_file is None):
            raise ValueError("--register-tls-cert-file and --register-tls-key-file go together (a client certificate and its key)")
        if self.replay_source not in REPLAY_SOURCES:
            raise ValueError(f"replay_source must be one of {', '.join(REPLAY_SOURCES)}")
        return self

    def build_backend(self) -> InventoryBackend:
        if self.replay is not None:
            return replay_backend(self.replay, self.replay_variant, self.replay_source, self.hostname)
        return live_backend(self.backend, hostname=self.hostname, call_timeout_seconds=self.call_timeout_seconds)


@dataclass
class AgentServer:
    running: RunningServer
    collector: Collector
    changes: ChangeSignal
    _monitor: asyncio.Task | None = field(default=None, repr=False)

    @property
    def instance_id(self) -> str:
        return self.collector.instance_id

    @property
    def address(self) -> str:
        return self.running.address

    async def stop(self, grace_seconds: float | None = None) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        await self.running.stop(grace_seconds)
        unregister_gpu_metrics(self.collector)
        await asyncio.to_thread(self.collector.stop)

    async def serve_until_signal(self) -> None:
        try:
            await self.running.serve_until_signal()
        finally:
            await self.stop(0)


async def _track_freshness(running: RunningServer, collector: Collector, period_seconds: float) -> None:
    serving: bool | None = None
    while True:
        # A snapshot that merely aged into staleness (a hung driver) has no collection to announce it:
        # check_freshness tells the watch streams, so the planner hears it with the next message.
        fresh = await asyncio.to_thread(collector.check_freshness)
        if fresh != serving:
            await running.set_serving(fresh, SERVICE_FULL_NAME)
            serving = fresh
        await asyncio.sleep(period_seconds)


async def build_agent_server(settings: GpuAgentSettings, backend: InventoryBackend | None = None) -> AgentServer:
    """Start collecting, wait (bounded) for the first collection, then start serving.

    Every start gets a new random ``agent_instance_id`` (stamped on each snapshot and sent with the
    registration), so the planner can tell a restarted agent from a reconnected stream.
    """
    socket = settings.pod_resources_socket
    collector = Collector(
        backend or settings.build_backend(),
        interval_seconds=settings.interval_seconds,
        call_timeout_seconds=settings.call_timeout_seconds,
        collect_timeout_seconds=settings.collect_timeout_seconds,
        stale_after_intervals=settings.stale_after_intervals,
        instance_id=uuid.uuid4().hex,
        pod_resources=PodResourcesClient(socket, settings.call_timeout_seconds) if socket is not None else None,
    )
    changes = ChangeSignal(asyncio.get_running_loop())
    collector.add_listener(changes.notify_threadsafe)
    collector.start()
    await asyncio.to_thread(collector.wait_first, settings.collect_timeout_seconds)
    servicer = GpuAgentServicer(collector, changes, settings.heartbeat_seconds)
    try:
        running = await start_server(
            settings.server_options(),
            register=lambda server: agent_pb2_grpc.add_GpuAgentServiceServicer_to_server(servicer, server),
            service_full_names=[SERVICE_FULL_NAME],
        )
    except BaseException:
        collector.stop()
        raise
    register_gpu_metrics(collector)
    period = min(settings.interval_seconds / 2, 1.0)
    monitor = asyncio.ensure_future(_track_freshness(running, collector, period))
    return AgentServer(running, collector, changes, monitor)


class BackgroundAgent:
    """A real agent on its own event loop in a daemon thread (tests, ``FakeAgent``, embedding)."""

    def __init__(self, settings: GpuAgentSettings, backend: InventoryBackend | None = None) -> None:
        self._settings, self._backend = settings, backend
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gpu-agent", daemon=True)
        self.server: AgentServer | None = None

    @property
    def address(self) -> str:
        if self.server is None:
            raise RuntimeError("agent not started")
        return self.server.address

    def call(self, coroutine, timeout_seconds: float = 30.0):  # noqa: ANN001, ANN201
        future: Future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=timeout_seconds)

    def start(self) -> "BackgroundAgent":
        self._thread.start()
        self.server = self.call(build_agent_server(self._settings, self._backend))
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.call(self.server.stop(0))
            self.server = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> "BackgroundAgent":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
