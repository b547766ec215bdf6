"""``vllm-planner-service``: run the planner gRPC service until SIGTERM/SIGINT.

The first line of stdout is the bound address (``HOST:PORT``, flushed), so a parent process that
started it with ``--listen 127.0.0.1:0`` learns the port; logs go to stderr.
"""

from __future__ import annotations

import logging
import sys

from planner_service.engine.errors import PlannerError
from planner_service.fleet.discovery import read_agent_file
from planner_service.fleet.runtime import FLEET_SERVICE_NAME, FleetRuntime
from planner_service.fleet.evaluator import TwinProvider
from planner_service.server.app import ExtraService, PlannerServiceSettings, build_planner_server, build_resolver
from vllm_planner import version_string
from vllm_planner.argparsing import OneLineArgumentParser
from vllm_planner.transport.config import add_settings_arguments, build_settings, load_settings, serve_or_fail
from vllm_planner.transport.logs import configure_logging

PROG = "vllm-planner-service"


async def _serve(settings: PlannerServiceSettings) -> None:
    resolver = build_resolver(settings)
    # The fleet is soft state rebuilt from discovery + agent streams: nothing to restore on restart.
    fleet = FleetRuntime(settings.fleet_settings(), provider=TwinProvider(resolve=resolver.resolve))
    await fleet.start()
    try:
        running = await build_planner_server(
            settings, resolver=resolver, extra_services=[ExtraService(fleet.register, FLEET_SERVICE_NAME)]
        )
        await _announce_and_wait(settings, running)
    finally:
        await fleet.stop()


async def _announce_and_wait(settings: PlannerServiceSettings, running) -> None:  # noqa: ANN001
    sys.stdout.write(f"{running.address}\n")
    sys.stdout.flush()
    logging.getLogger(__name__).info(
        "planner service listening on %s (model roots: %s)",
        running.address,
        ", ".join(map(str, settings.model_root)) or "none: local paths refused",
    )
    await running.serve_until_signal()


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(
        prog=PROG,
        description="Serve vLLM deployment plans over gRPC (vllm_planner.v1.PlannerService).",
    )
    add_settings_arguments(parser, PlannerServiceSettings)
    parser.add_argument("--version", action="version", version=version_string("vllm-planner-service"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Bad flags, settings, files or addresses end the start-up with one line and exit 2."""
    args = build_parser().parse_args(argv)

    def build() -> PlannerServiceSettings:
        settings = load_settings(PlannerServiceSettings, args)
        settings.server_options()  # reads the token file and checks the TLS files now, before binding
        fleet_settings = settings.fleet_settings()  # the agent token file, too
        if fleet_settings.agents_file is not None:  # and every address in --agents-file
            read_agent_file(fleet_settings.agents_file)
        return settings

    settings = build_settings(PROG, build, bad_input=(PlannerError,))
    configure_logging(settings)
    return serve_or_fail(PROG, _serve(settings), bad_input=(PlannerError,))


if __name__ == "__main__":
    sys.exit(main())
