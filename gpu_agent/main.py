"""``gpu-agent``: serve this host's GPU inventory over gRPC until SIGTERM/SIGINT.

The first line of stdout is the bound address (``HOST:PORT``, flushed), so a parent that started the
agent with ``--listen 127.0.0.1:0`` learns its port; logs go to stderr. Settings: flags > env
(``GPU_AGENT_*``) > YAML (``--config``) > defaults.

    gpu-agent --listen 0.0.0.0:50061                       # NVML, else nvidia-smi, else none
    gpu-agent --listen 127.0.0.1:0 --replay CAPTURE_DIR --replay-variant busy
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import sys

from pydantic import ValidationError

from gpu_agent.app import GpuAgentSettings, build_agent_server
from gpu_agent.backends import BackendUnavailable, InventoryBackend
from vllm_planner import version_string
from vllm_planner.transport.config import add_settings_arguments, load_settings
from vllm_planner.transport.logs import configure_logging

log = logging.getLogger("gpu_agent")


def _dialable(address: str) -> str:
    """0.0.0.0:P / [::]:P cannot be dialled from elsewhere: advertise this host's name instead."""
    from vllm_planner.transport.address import join_host_port, parse_host_port

    bound = parse_host_port(address, "listen", allow_wildcard=True)
    return join_host_port(socket.gethostname(), bound.port) if bound.is_wildcard else str(bound)


async def _serve(settings: GpuAgentSettings, backend: InventoryBackend) -> None:
    agent = await build_agent_server(settings, backend)
    registration = None
    if settings.register_with:
        from gpu_agent.register import start_registration

        # One fleet token is the common setup: without a planner token file, present the agent's own.
        token = settings.register_token_file.read_text().strip() if settings.register_token_file else settings.resolved_auth_token()
        registration = start_registration(
            settings.register_with, advertise_address=settings.advertise_address or _dialable(agent.address),
            host=settings.hostname, agent_instance_id=agent.instance_id, token=token,
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpu-agent", description="Serve this host's GPU inventory over gRPC (vllm_planner.v1.GpuAgentService).")
    add_settings_arguments(parser, GpuAgentSettings)
    parser.add_argument("--version", action="version", version=version_string("gpu-agent"))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(GpuAgentSettings, args)
        settings.server_options()  # reads the token file now, so a bad path fails before binding
        backend = settings.build_backend()  # a bad --replay folder or a missing nvidia-smi fails here, in one line
    except (ValidationError, ValueError, OSError, BackendUnavailable) as exc:
        parser.error(" ".join(str(exc).split()))
    configure_logging(log_format=settings.log_format, log_level=settings.log_level)
    try:
        asyncio.run(_serve(settings, backend))
    except OSError as exc:  # e.g. the port is taken
        log.error("cannot serve: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
