"""Build, start and stop a ``grpc.aio`` server the same way for every service.

Usage (inside a running event loop)::

    running = await start_server(
        ServerOptions(listen="127.0.0.1:0"),
        register=lambda server: add_FooServicer_to_server(FooServicer(), server),
        service_full_names=["vllm_planner.v1.FooService"],
    )
    print(running.address, flush=True)   # first line of output: the bound address
    await running.wait_for_termination()
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


def server_credentials(options: ServerOptions) -> grpc.ServerCredentials | None:
    if options.tls_cert_file is None and options.tls_key_file is None:
        if options.tls_client_ca_file is not None:
            raise ValueError("a client CA (mTLS) needs a server certificate and key too")
        return None
    if options.tls_cert_file is None or options.tls_key_file is None:
        raise ValueError("TLS needs both a certificate and a key")
    cert = Path(options.tls_cert_file).read_bytes()
    key = Path(options.tls_key_file).read_bytes()
    client_ca = Path(options.tls_client_ca_file).read_bytes() if options.tls_client_ca_file else None
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
        await self.server.stop(self.grace_seconds if grace_seconds is None else grace_seconds)

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


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--listen must be HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


async def start_server(
    options: ServerOptions,
    register: Callable[[grpc.aio.Server], None],
    service_full_names: Sequence[str],
) -> RunningServer:
    """Create the server with health + reflection + interceptors, bind, start, mark SERVING."""
    interceptors = list(options.interceptors)
    if options.auth_token:
        from vllm_planner.transport.auth import BearerTokenInterceptor

        interceptors.insert(0, BearerTokenInterceptor(options.auth_token))
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
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_secure_port(bind, creds) if creds else server.add_insecure_port(bind)
    if bound == 0:
        raise OSError(f"could not bind {options.listen}")
    await server.start()
    running = RunningServer(server, bound, host, health_servicer, options.grace_seconds)
    await running.set_serving(True)
    for name in service_full_names:
        await running.set_serving(True, name)
    return running
