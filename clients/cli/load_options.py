"""Load flags of ``bench`` and ``capacity``, spelled and defaulted as ``vllm bench serve`` spells them.

``--request-rate inf`` (the default) releases every prompt at t=0; ``--goodput ttft:MS tpot:MS e2el:MS``
and ``--slo`` take the same ``metric:milliseconds`` pairs; ``--metric-percentiles`` is a comma list
(``50,90,99``). Every value is checked here so a typo is one ``error:`` line naming the flag.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from clients.cli.options import parse_int_at_least, parse_positive_int
from pydantic import ValidationError

from planner_service.engine.bench_models import LoadOptions, SloTarget
from planner_service.engine.errors import FieldViolation, InvalidRequestError

SLO_METRICS = ("ttft", "tpot", "e2el")
_ENDPOINTS = {"completions": "completions", "openai": "completions", "chat": "chat", "openai-chat": "chat"}


def parse_rate(text: str) -> float | None:
    """``inf`` (None: every request at t=0) or a finite rate > 0, req/s."""
    value = text.strip().lower()
    if value in ("inf", "infinity"):
        return None
    try:
        rate = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of requests per second or 'inf'") from None
    if not math.isfinite(rate) or rate <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0 (or 'inf')")
    return rate


def parse_positive_rate(text: str) -> float:
    rate = parse_rate(text)
    if rate is None:
        raise argparse.ArgumentTypeError("must be a finite rate in requests per second")
    return rate


def _finite(text: str, *, low: float, high: float, low_open: bool = False, high_open: bool = False) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if not math.isfinite(value) or below or above:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise argparse.ArgumentTypeError(f"{text!r} must be in {lo}{low:g}, {high:g}{hi}")
    return value


def parse_burstiness(text: str) -> float:
    return _finite(text, low=0, high=1000, low_open=True)


def parse_range_ratio(text: str) -> float:
    return _finite(text, low=0, high=1, high_open=True)


def parse_non_negative_int(text: str) -> int:
    return parse_int_at_least(text, 0)


def parse_endpoint(text: str) -> str:
    key = text.strip().lower()
    if key not in _ENDPOINTS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of completions, chat")
    return _ENDPOINTS[key]


def parse_metric_ms(text: str) -> tuple[str, float]:
    """``ttft:500`` -> ("ttft", 500.0); the metric must be one of ttft, tpot, e2el."""
    name, sep, value = text.partition(":")
    name = name.strip().lower()
    if not sep or name not in SLO_METRICS:
        raise argparse.ArgumentTypeError(f"{text!r} is not METRIC:MS with METRIC one of {', '.join(SLO_METRICS)}")
    return name, _finite(value, low=0, high=1e9, low_open=True)


def parse_percentiles(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of percentiles such as 50,90,99") from None
    if not values or any(not (math.isfinite(p) and 0 < p < 100) for p in values):
        raise argparse.ArgumentTypeError(f"{text!r}: each percentile must be in (0, 100)")
    return values


def add_load_arguments(parser: argparse.ArgumentParser, *, capacity: bool = False) -> None:
    """The ``vllm bench serve`` load flags (capacity searches the rate itself, so it omits the rate flags)."""
    load = parser.add_argument_group("load (as vllm bench serve)")
    if not capacity:
        load.add_argument("--num-prompts", type=parse_positive_int, default=1000, help="Requests to send (default 1000).")
        load.add_argument("--request-rate", type=parse_rate, default=None, metavar="RATE|inf",
                          help="Arrival rate, req/s; inf (default) releases every request at t=0.")
        load.add_argument("--burstiness", type=parse_burstiness, default=1.0,
                          help="Gamma shape of the arrival gaps: 1 = Poisson (default), <1 burstier.")
        load.add_argument("--max-concurrency", type=parse_positive_int, default=None,
                          help="Client-side cap on requests in flight.")
        load.add_argument("--arrival-process", choices=("gamma", "constant"), default="gamma",
                          help="gamma (vllm bench) or constant: evenly spaced, as guidellm/inference-perf send.")
        load.add_argument("--goodput", nargs="+", type=parse_metric_ms, default=None, metavar="METRIC:MS",
                          help="SLOs for request_goodput: ttft:MS tpot:MS e2el:MS (any subset).")
        load.add_argument("--metric-percentiles", type=parse_percentiles, default=(99.0,), metavar="P[,P...]",
                          help="Percentiles to report (default 99).")
    load.add_argument("--dataset-name", choices=("random", "sharegpt"), default="random",
                      help="random (default) or sharegpt (its length distribution, modelled).")
    load.add_argument("--random-input-len", type=parse_positive_int, default=1024)
    load.add_argument("--random-output-len", type=parse_positive_int, default=128)
    load.add_argument("--random-range-ratio", type=parse_range_ratio, default=0.0,
                      help="Lengths uniform in [len*(1-r), len*(1+r)]; 0 <= r < 1 (default 0).")
    load.add_argument("--random-prefix-len", type=parse_non_negative_int, default=0,
                      help="Tokens of one shared prefix in front of every prompt (prefix-cache hits).")
    load.add_argument("--sharegpt-mean-input-len", type=parse_positive_int, default=215)
    load.add_argument("--sharegpt-mean-output-len", type=parse_positive_int, default=200)
    load.add_argument("--endpoint-type", type=parse_endpoint, default="completions", metavar="completions|chat",
                      help="/v1/completions (default) or /v1/chat/completions: the API server's cost differs.")
    load.add_argument("--seed", type=parse_non_negative_int, default=0)


def load_from_args(args: argparse.Namespace) -> LoadOptions:
    values: dict[str, Any] = {
        "dataset_name": args.dataset_name,
        "random_input_len": args.random_input_len,
        "random_output_len": args.random_output_len,
        "random_range_ratio": args.random_range_ratio,
        "random_prefix_len": args.random_prefix_len,
        "sharegpt_mean_input_len": args.sharegpt_mean_input_len,
        "sharegpt_mean_output_len": args.sharegpt_mean_output_len,
        "endpoint_type": args.endpoint_type,
        "seed": args.seed,
    }
    if hasattr(args, "num_prompts"):
        goodput = None
        if args.goodput:
            goodput = {}
            for name, ms in args.goodput:
                if name in goodput:
                    raise InvalidRequestError(f"--goodput: names {name} twice",
                                              [FieldViolation("--goodput", f"names {name} twice")])
                goodput[name] = ms
        values.update(
            num_prompts=args.num_prompts, request_rate=args.request_rate, burstiness=args.burstiness,
            max_concurrency=args.max_concurrency, arrival_process=args.arrival_process, goodput=goodput,
            metric_percentiles=args.metric_percentiles,
        )
    try:
        return LoadOptions(**values)
    except ValidationError as exc:  # a value the flag parsers let through but the model bounds: name the flag
        violations = [FieldViolation("--" + str(err["loc"][0]).replace("_", "-"), err["msg"]) for err in exc.errors()]
        raise InvalidRequestError("; ".join(f"{v.field}: {v.description}" for v in violations), violations) from None


def slos_from_args(pairs: list[tuple[str, float]] | None) -> list[SloTarget]:
    if not pairs:
        raise InvalidRequestError("--slo: required; give at least one of ttft:MS, tpot:MS, e2el:MS",
                                  [FieldViolation("--slo", "required; give at least one of ttft:MS, tpot:MS, e2el:MS")])
    seen: set[str] = set()
    slos = []
    for name, ms in pairs:
        if name in seen:
            raise InvalidRequestError(f"--slo: names {name} twice", [FieldViolation("--slo", f"names {name} twice")])
        seen.add(name)
        slos.append(SloTarget(metric=name, milliseconds=ms))
    return slos
