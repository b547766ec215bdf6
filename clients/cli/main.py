"""Entry point of ``vllm-planner``. Each command lives in its own module with a ``register``
function; errors a user can act on are turned into one line and a non-zero exit here, and only here.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from clients.cli.errors import exit_code_for, one_line
from vllm_planner import version_string

# Command modules, each exposing register(subparsers). Order = order in --help.
COMMAND_MODULES = [
    "clients.cli.plan_cmd",
    "clients.cli.generate_cmd",
    "clients.cli.bench_cmd",
    "clients.cli.capacity_cmd",
    "clients.cli.fleet_cmd",
    "clients.cli.detect_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vllm-planner",
        description="Plan vLLM deployments: will it fit, with which settings, how fast, and where.",
    )
    parser.add_argument("--version", action="version", version=version_string("vllm-planner"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the one boundary: user errors become one line, bugs keep a traceback
        code = exit_code_for(exc)
        if code is None:
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
