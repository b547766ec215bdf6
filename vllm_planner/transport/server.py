"""Build, start and stop a ``grpc.aio`` server the same way for every service.

Usage (inside a running event loop)::

    running = await start_server(
        ServerOptions(listen="127.0.0.1:0"),
        register=lambda server: add_FooServicer_to_server(FooServicer(), server),
        service_full_names=["vllm_planner.v1.FooService"],
    )
    print(running.address, flush=True)   # first line of output: the bound address
    await running.wait_for_termination()

Every server gets, from ``ServerOptions`` alone: TLS or mutual TLS, bearer-token auth (health
exempt), the standard health and reflection services, a request id and an access-log line per RPC,
Prometheus RPC metrics (plus an HTTP ``/metrics`` endpoint when ``metrics_listen`` is set), an
optional plaintext health-only port for kubelet gRPC probes (which cannot speak TLS), and a
graceful stop that drains in-flight RPCs.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from vllm_planner.transport.metrics import MetricsServer
from vllm_planner.bounded import InputError
from vllm_planner.transport.pem import read_ca, read_cert_and_key
from vllm_planner.transport.settings import SERVER_OPTIONS

log = logging.getLogger(__name__)


@dataclass
class ServerOptions:
    """How a server listens and whom it lets in."""

    listen: str = "127.0.0.1:0"
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Given: clients must present a certificate signed by this CA (mutual TLS).
    tls_client_ca_file: Path | None = None
    # Given: every RPC but health must carry "authorization: Bearer <token>".
    auth_token: str | None = None
    grace_seconds: float = 5.0
    interceptors: Sequence[grpc.aio.ServerInterceptor] = field(default_factory=tuple)
    # Given: Prometheus /metrics over HTTP on this HOST:PORT (the RPC metrics are recorded regardless).
    metrics_listen: str | None = None
    # Given: a second, plaintext, health-only gRPC port (kubelet grpc probes speak neither TLS nor tokens).
    health_listen: str | None = None
    # Given: start_server configures logging (text|json, level) unless the root logger has handlers.
    log_format: str | None = None
    log_level: str | None = None
    # After flipping health to NOT_SERVING, wait this long before refusing calls, so load balancers
    # and endpoint controllers stop routing here first.
    drain_delay_seconds: float = 0.0


def server_credentials(options: ServerOptions) -> grpc.ServerCredentials | None:
    if options.tls_cert_file is None and options.tls_key_file is None:
        if options.tls_client_ca_file is not None:
            raise InputError("a client CA (mTLS) needs a server certificate and key too")
        return None
    if options.tls_cert_file is None or options.tls_key_file is None:
        raise InputError("TLS needs both a certificate and a key")
    cert, key = read_cert_and_key(options.tls_cert_file, options.tls_key_file, what="server TLS")
    client_ca = read_ca(options.tls_client_ca_file, what="client CA file") if options.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    host: str
    health: health.aio.HealthServicer
    grace_seconds: float
    health_server: grpc.aio.Server | None = None
    health_port: int | None = None
    metrics_server: MetricsServer | None = None
    drain_delay_seconds: float = 0.0

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def set_serving(self, serving: bool, service: str = "") -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.health.set(service, status)

    async def stop(self, grace_seconds: float | None = None) -> None:
        """Graceful: report NOT_SERVING, stop taking calls, let in-flight RPCs finish within grace."""
        await self.health.enter_graceful_shutdown()
        if self.drain_delay_seconds > 0:
            await asyncio.sleep(self.drain_delay_seconds)
        grace = self.grace_seconds if grace_seconds is None else grace_seconds
        await self.server.stop(grace)
        if self.health_server is not None:
            await self.health_server.stop(0)
        if self.metrics_server is not None:
            self.metrics_server.stop()
            self.metrics_server = None

    async def wait_for_termination(self) -> None:
        await self.server.wait_for_termination()

    async def serve_until_signal(self) -> None:
        """Block until SIGTERM/SIGINT, then shut down gracefully."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread
                pass
        waiter = asyncio.ensure_future(self.server.wait_for_termination())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            log.info("signal received: draining in-flight RPCs for up to %.1f s", self.grace_seconds)
            await self.stop()
        waiter.cancel()
        stopper.cancel()


def _bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


async def _start_health_server(listen: str, health_servicer: health.aio.HealthServicer) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)  # the same servicer: same states
    host, port = split_listen(listen, "health_listen")
    bound = server.add_insecure_port(_bind_address(host, port))
    if bound == 0:
        raise OSError(f"could not bind health port {listen}")
    await server.start()
    return server, bound


def split_listen(listen: str, field: str = "listen") -> tuple[str, int]:
    """A listening ``HOST:PORT`` (wildcards and port 0 allowed), validated by the shared parser."""
    from vllm_planner.transport.address import parse_host_port

    parsed = parse_host_port(listen, field, allow_wildcard=True, allow_any_port=True)
    return parsed.host, parsed.port


async def start_server(
    options: ServerOptions,
    register: Callable[[grpc.aio.Server], None],
    service_full_names: Sequence[str],
) -> RunningServer:
    """Create the server with health + reflection + interceptors, bind, start, mark SERVING.

    Interceptor order: observability (request id, metrics, access log) first so it sees every call,
    including rejected ones; then bearer-token auth; then ``options.interceptors``; last a
    ``GuardInterceptor`` (statuses for undecodable requests and failures) unless one was given.
    """
    from vllm_planner.transport.auth import BearerTokenInterceptor
    from vllm_planner.transport.guard import GuardInterceptor
    from vllm_planner.transport.logs import configure_logging
    from vllm_planner.transport.observability import ObservabilityInterceptor

    # A service that set up logging itself (or pytest's capture) keeps its handlers; otherwise the
    # settings' format applies, so every service logs alike without extra code.
    if (options.log_format or options.log_level) and not logging.getLogger().handlers:
        configure_logging(log_format=options.log_format, log_level=options.log_level)
    interceptors: list[grpc.aio.ServerInterceptor] = [ObservabilityInterceptor()]
    if options.auth_token:
        interceptors.append(BearerTokenInterceptor(options.auth_token))
    interceptors += list(options.interceptors)
    # Every server answers undecodable requests and its own failures with a status, never UNKNOWN,
    # bounded: a service with domain errors brings its own GuardInterceptor (the planner's mapping).
    if not any(isinstance(i, GuardInterceptor) for i in interceptors):
        interceptors.append(GuardInterceptor())
    server = grpc.aio.server(interceptors=interceptors, options=SERVER_OPTIONS)
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_full_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    host, port = split_listen(options.listen)
    creds = server_credentials(options)
    if options.auth_token and creds is None and not _is_loopback(host):
        log.warning("bearer token over plaintext on %s: use TLS unless a service mesh encrypts traffic", options.listen)
    bind = _bind_address(host, port)
    bound = server.add_secure_port(bind, creds) if creds else server.add_insecure_port(bind)
    if bound == 0:
        raise OSError(f"could not bind {options.listen}")
    metrics_server = MetricsServer(options.metrics_listen) if options.metrics_listen else None
    health_server, health_port = None, None
    try:
        if options.health_listen:
            health_server, health_port = await _start_health_server(options.health_listen, health_servicer)
        await server.start()
    except BaseException:
        if metrics_server is not None:
            metrics_server.stop()
        if health_server is not None:
            await health_server.stop(0)
        raise
    log.info(
        "gRPC on %s (%s, token %s)%s",
        _bind_address(host, bound),
        "mutual TLS" if options.tls_client_ca_file else "TLS" if creds else "plaintext",
        "required" if options.auth_token else "off",
        f"; health-only port {_bind_address(split_listen(options.health_listen)[0], health_port)}" if health_server else "",
    )
    running = RunningServer(
        server, bound, host, health_servicer, options.grace_seconds,
        health_server=health_server, health_port=health_port, metrics_server=metrics_server,
        drain_delay_seconds=options.drain_delay_seconds,
    )
    await running.set_serving(True)
    for name in service_full_names:
        await running.set_serving(True, name)
    return running
