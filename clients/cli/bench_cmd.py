"""``vllm-planner bench``: what ``vllm bench serve`` would print for a configuration under a load.

Takes every ``plan`` flag (model, hardware, engine) plus the load flags of ``vllm bench serve``; prints
bench's result block, or with ``--json`` one object whose keys are those ``--save-result`` writes (plus
``preemptions``, ``plan`` and ``assumptions``). Exits 1, with the plan's report, when vLLM would not start.
"""

from __future__ import annotations

import argparse
import json
import sys

from clients.cli.backend import add_remote_arguments, planner_address, planner_client
from clients.cli.bench_report import render_bench
from clients.cli.load_options import add_load_arguments, load_from_args
from clients.cli.options import add_plan_arguments, profile_from_args
from clients.cli.report import render_report
from planner_service.engine.bench_models import BenchRequest, BenchResponse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="Predict what `vllm bench serve` would print for this configuration and load.",
        description="Simulate vLLM's scheduler and steps under a vllm-bench-serve load (no GPU needed).",
    )
    add_plan_arguments(parser)
    add_load_arguments(parser)
    parser.add_argument("--json", action="store_true", default=None,
                        help="Print one JSON object with the keys of `vllm bench serve --save-result`.")
    add_remote_arguments(parser)
    parser.set_defaults(handler=run)


def execute_bench(request: BenchRequest, args: argparse.Namespace) -> BenchResponse:
    """``run_bench(request)`` in-process, or the ``Simulate`` RPC on the planner service."""
    if planner_address(args):
        with planner_client(args) as client:
            return client.simulate(request)
    from planner_service.api import run_bench

    return run_bench(request)


def run(args: argparse.Namespace) -> int:
    """Exit 0 with the simulated result, 1 when vLLM would not start with the plan."""
    profile = profile_from_args(args)
    request = BenchRequest(plan=profile.to_request(), load=load_from_args(args))
    result = execute_bench(request, args)
    if not result.plan.feasibility.fits:
        render_report(result.plan, explain=False)
        return 1
    if args.json:
        sys.stdout.write(json.dumps(result.save_result(), indent=2) + "\n")
    else:
        render_bench(result, sys.stdout)
    return 0
