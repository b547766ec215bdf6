"""``vllm-planner plan``: will it fit, with which settings, how fast (report, or one JSON object)."""

from __future__ import annotations

import argparse
import json
import sys

from clients.cli.backend import add_remote_arguments, execute_plan
from clients.cli.gpu_auto import annotate, resolve_auto
from clients.cli.options import add_plan_arguments, profile_from_args
from clients.cli.report import render_report
from planner_service.engine.models import PlanRequest, PlanResponse
from planner_service.engine.profile_yaml import OutputOptions


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="Predict vLLM's startup memory, recommend settings and estimate performance.",
        description="Predict what vLLM will print at startup, recommend settings, estimate speed.",
    )
    add_plan_arguments(parser)
    out = parser.add_argument_group("plan output")
    out.add_argument("--json", action="store_true", default=None, help="Print the plan as one JSON object.")
    out.add_argument("--explain", action="store_true", default=None, help="Show why each setting has its value.")
    add_remote_arguments(parser)
    parser.set_defaults(handler=run)


def plan_from_args(args: argparse.Namespace) -> tuple[PlanRequest, PlanResponse, OutputOptions]:
    """Shared by plan and generate: (request, completed response, output options)."""
    profile, detected = resolve_auto(profile_from_args(args), args)
    request = profile.to_request()
    response = annotate(execute_plan(request, args), detected)
    return request, response, profile.outputs


def run(args: argparse.Namespace) -> int:
    """Exit 0 when vLLM would start with the plan, 1 when it would not (the report says why)."""
    _, response, outputs = plan_from_args(args)
    if outputs.json_output:
        sys.stdout.write(json.dumps(response.model_dump(mode="json"), indent=2) + "\n")
    else:
        render_report(response, explain=outputs.explain)
    return 0 if response.feasibility.fits else 1
