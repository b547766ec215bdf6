"""Entry point of ``vllm-planner``. Each command lives in its own module with a ``register``
function; every failure is turned into one line (or one JSON object with ``--json``) and an exit code
here, and only here (``clients.cli.errors``).
"""

from __future__ import annotations

import os
import importlib
import sys

from clients.cli.errors import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, CliParser, report
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


def build_parser() -> CliParser:
    parser = CliParser(
        prog="vllm-planner",
        description="Plan vLLM deployments: will it fit, with which settings, how fast, and where.",
    )
    parser.add_argument("--version", action="version", version=version_string("vllm-planner"))
    # Subparsers are created with the parent's class, so every level fails through CliParser.error.
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def _wants_json(argv: list[str]) -> bool:
    """``--json`` among the options (before a ``--``): errors then go out as a JSON object too."""
    options = argv[: argv.index("--")] if "--" in argv else argv
    return "--json" in options


def _silence_stdout() -> None:
    """The reader of stdout is gone: route what is still buffered to /dev/null, so the interpreter's
    final flush does not print a BrokenPipeError of its own."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a real file (tests capture it): nothing to flush
        pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    json_errors = _wants_json(argv)
    args = None
    try:
        args = build_parser().parse_args(argv)
        json_errors = json_errors or bool(getattr(args, "json", False))
        code = int(args.handler(args) or 0)
        sys.stdout.flush()  # a closed pipe surfaces here, inside the boundary, not at interpreter exit
        return code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except Exception as exc:  # the one boundary: every failure becomes one line and an exit code
        namer_for = getattr(args, "field_namer", None)  # set by commands whose flags fill a PlanRequest
        return report(exc, json_errors=json_errors, namer=namer_for(args) if namer_for else None)


if __name__ == "__main__":
    sys.exit(main())
