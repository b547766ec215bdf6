"""``gpu-agent``: serve this host's GPU inventory over gRPC until SIGTERM/SIGINT.

The first line of stdout is the bound address (``HOST:PORT``, flushed), so a parent that started the
agent with ``--listen 127.0.0.1:0`` learns its port; logs go to stderr. Settings: flags > env
(``GPU_AGENT_*``) > YAML (``--config``) > defaults.

    gpu-agent --listen 0.0.0.0:50061                       # NVML, else nvidia-smi, else none
    gpu-agent --listen 127.0.0.1:0 --replay CAPTURE_DIR --replay-variant busy
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys

from gpu_agent.app import GpuAgentSettings, build_agent_server
from gpu_agent.backends import BackendUnavailable, InventoryBackend
from vllm_planner import version_string
from vllm_planner.argparsing import OneLineArgumentParser
from vllm_planner.bounded import file_label, read_token
from vllm_planner.transport.config import add_settings_arguments, build_settings, load_settings, serve_or_fail
from vllm_planner.transport.logs import configure_logging

PROG = "gpu-agent"

log = logging.getLogger("gpu_agent")


def _dialable(address: str) -> str:
    """0.0.0.0:P / [::]:P cannot be dialled from elsewhere: advertise this host's name instead."""
    from vllm_planner.transport.address import join_host_port, parse_host_port

    bound = parse_host_port(address, "listen", allow_wildcard=True)
    return join_host_port(socket.gethostname(), bound.port) if bound.is_wildcard else str(bound)


def _register_token(settings: GpuAgentSettings) -> str | None:
    """The token presented to the planner: --register-token-file, else the agent's own token."""
    path = settings.register_token_file
    return read_token(path, what=f"--register-token-file {file_label(path)}") if path else settings.resolved_auth_token()


def _register_tls(settings: GpuAgentSettings):  # noqa: ANN202 (gpu_agent.register.PlannerTls)
    """The TLS settings for the planner, their files read once at start: a missing or malformed
    certificate is a start-up error (one line naming the flag, exit 2), not a warning every heartbeat."""
    from gpu_agent.register import PlannerTls
    from vllm_planner.transport.pem import read_ca, read_cert_and_key

    if settings.register_tls_ca_file is not None:
        read_ca(settings.register_tls_ca_file, what="--register-tls-ca-file: CA certificate file")
    if settings.register_tls_cert_file is not None and settings.register_tls_key_file is not None:
        read_cert_and_key(settings.register_tls_cert_file, settings.register_tls_key_file,
                          what="--register-tls-cert-file/--register-tls-key-file: client TLS")
    return PlannerTls.for_target(
        settings.register_with, enabled=settings.register_tls, ca_file=settings.register_tls_ca_file,
        cert_file=settings.register_tls_cert_file, key_file=settings.register_tls_key_file,
        server_name=settings.register_tls_server_name)


async def _serve(settings: GpuAgentSettings, backend: InventoryBackend) -> None:
    # The planner's token and TLS files are checked before anything starts (one line, exit 2).
    tls = _register_tls(settings) if settings.register_with else None
    # One fleet token is the common setup: without a planner token file, present the agent's own.
    token = _register_token(settings) if settings.register_with else None
    agent = await build_agent_server(settings, backend)
    registration = None
    if settings.register_with:
        from gpu_agent.register import start_registration

        registration = start_registration(
            settings.register_with, advertise_address=settings.advertise_address or _dialable(agent.address),
            host=settings.hostname, agent_instance_id=agent.instance_id, token=token, mode=settings.register_mode,
            collector=agent.collector, changes=agent.changes, tls=tls,
        )
    # The address goes out last, once everything is started: a parent that reads it may signal at once.
    sys.stdout.write(f"{agent.address}\n")
    sys.stdout.flush()
    log.info("gpu agent listening on %s (backend %s)", agent.address, agent.collector.backend.name)
    try:
        await agent.serve_until_signal()
    finally:
        if registration is not None:
            registration.cancel()
            # Bounded: closing the planner channels must not keep a stopping agent alive.
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                await asyncio.wait_for(registration, timeout=5.0)


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(prog=PROG, description="Serve this host's GPU inventory over gRPC (vllm_planner.v1.GpuAgentService).")
    add_settings_arguments(parser, GpuAgentSettings)
    parser.add_argument("--version", action="version", version=version_string("gpu-agent"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Bad flags, settings, files or a bad --replay folder end the start-up with one line and exit 2."""
    args = build_parser().parse_args(argv)

    def build() -> tuple[GpuAgentSettings, InventoryBackend]:
        settings = load_settings(GpuAgentSettings, args)
        settings.server_options()  # reads the token file and checks the TLS files now, before binding
        _register_token(settings)
        # A bad --replay folder or a missing nvidia-smi fails here, in one line.
        return settings, settings.build_backend()

    settings, backend = build_settings(PROG, build, bad_input=(BackendUnavailable,))
    configure_logging(log_format=settings.log_format, log_level=settings.log_level)
    return serve_or_fail(PROG, _serve(settings, backend), bad_input=(BackendUnavailable,))


if __name__ == "__main__":
    sys.exit(main())
