"""``vllm-planner capacity``: how many replicas of which configuration serve a request rate within SLOs.

``--slo ttft:MS --slo tpot:MS`` at ``--percentile`` (default 99); ``--gpu`` may be repeated (default: the
catalog's data-centre GPUs); lengths and endpoint as ``bench`` takes them. Prints the ranked options (or
``--json``); exits 1 when no configuration tried meets the SLOs.
"""

from __future__ import annotations

import argparse
import json
import sys

from clients.cli.backend import add_remote_arguments, planner_address, planner_client
from clients.cli.bench_report import render_capacity
from clients.cli.load_options import add_load_arguments, load_from_args, parse_metric_ms, parse_positive_rate, slos_from_args
from clients.cli.options import add_plan_arguments, parse_positive_int, profile_from_args
from planner_service.engine.bench_models import CapacityRequest, CapacityResponse


def _percentile(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 100:
        raise argparse.ArgumentTypeError(f"{text!r} must be in (0, 100)")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "capacity",
        help="Size a deployment: configurations and replicas for a request rate under latency SLOs.",
        description="Search configurations; find each one's highest rate per replica within the SLOs.",
        conflict_handler="resolve",
    )
    add_plan_arguments(parser)
    parser.add_argument("--gpu", action="append", default=None, metavar="GPU",
                        help="GPU type to consider; repeat for several (default: the catalog's data-centre GPUs).")
    add_load_arguments(parser, capacity=True)
    target = parser.add_argument_group("target")
    target.add_argument("--request-rate", type=parse_positive_rate, required=True, metavar="RATE",
                        help="Total requests per second to serve.")
    target.add_argument("--slo", action="append", type=parse_metric_ms, default=None, metavar="METRIC:MS",
                        help="Latency objective, repeatable: ttft:MS, tpot:MS, e2el:MS.")
    target.add_argument("--percentile", type=_percentile, default=99.0, help="Percentile the SLOs hold at (default 99).")
    target.add_argument("--max-gpus-per-replica", type=parse_positive_int, default=8)
    target.add_argument("--max-options", type=parse_positive_int, default=5, help="Options to list (default 5).")
    parser.add_argument("--json", action="store_true", default=None, help="Print the answer as one JSON object.")
    add_remote_arguments(parser)
    parser.set_defaults(handler=run)


def execute_capacity(request: CapacityRequest, args: argparse.Namespace) -> CapacityResponse:
    if planner_address(args):
        with planner_client(args) as client:
            return client.plan_capacity(request)
    from planner_service.api import run_capacity

    return run_capacity(request)


def run(args: argparse.Namespace) -> int:
    gpus = list(args.gpu or [])
    args.gpu = None  # the plan request holds no single GPU: capacity tries each
    plan = profile_from_args(args).to_request()
    request = CapacityRequest(
        plan=plan, request_rate=args.request_rate, slos=slos_from_args(args.slo), percentile=args.percentile,
        load=load_from_args(args), gpus=gpus, max_gpus_per_replica=args.max_gpus_per_replica,
        max_options=args.max_options,
    )
    result = execute_capacity(request, args)
    if args.json:
        sys.stdout.write(json.dumps(result.model_dump(mode="json"), indent=2) + "\n")
    else:
        render_capacity(result, sys.stdout)
    return 0 if result.options else 1
