"""``vllm bench serve``'s metrics, computed from a simulated run exactly as ``calculate_metrics`` does.

Reference ``vllm-engine-and-bench.md`` §4.5-§4.7 (``vllm/benchmarks/serve.py``, 0.11-0.33):
TTFT = first token-carrying message - POST; E2EL = last token message - POST; TPOT per request =
(E2EL - TTFT)/(output - 1) for outputs > 1 (0 for goodput otherwise); ITL pools every inter-token gap of
every request; statistics are ``np.mean/median/std/percentile`` (linear interpolation) in ms; duration
runs from the start of the arrival loop to the last response; goodput counts requests meeting every
given SLO; peak figures use 1-s buckets from the first request's start.
"""

from __future__ import annotations

import math

import numpy as np

from planner_service.engine.simulation.engine_loop import RunTrace

METRICS = ("ttft", "tpot", "itl", "e2el")


def weighted_stats(values: np.ndarray, weights: np.ndarray, percentiles: tuple[float, ...]) -> dict[str, float]:
    """mean/median/std/percentiles of the array in which ``values[i]`` appears ``weights[i]`` times,
    identical to numpy's on that expanded array (population std, linear-interpolated percentiles)."""
    if values.size == 0 or weights.sum() <= 0:
        return {"mean": 0.0, "median": 0.0, "std": 0.0, **{f"p{p}": 0.0 for p in percentiles}}
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order]
    total = float(w.sum())
    mean = float((v * w).sum() / total)
    std = math.sqrt(max(0.0, float((w * (v - mean) ** 2).sum() / total)))
    ends = np.cumsum(w)  # expanded indices [ends[j]-w[j], ends[j]) hold v[j]

    def at(position: float) -> float:
        return float(v[min(int(np.searchsorted(ends, position, side="right")), v.size - 1)])

    def percentile(p: float) -> float:
        h = (total - 1) * p / 100.0
        lo = math.floor(h)
        return at(lo) + (h - lo) * (at(min(lo + 1, total - 1)) - at(lo))

    return {"mean": mean, "median": percentile(50), "std": std, **{f"p{p}": percentile(p) for p in percentiles}}


def _stats(values: np.ndarray, percentiles: tuple[float, ...]) -> dict[str, float]:
    return weighted_stats(values, np.ones(values.size), percentiles)


def percentile_key(p: float) -> str:
    return str(int(p)) if int(p) == p else str(p)


def bench_metrics(
    trace: RunTrace,
    *,
    percentiles: tuple[float, ...] = (99.0,),
    goodput_ms: dict[str, float] | None = None,
) -> dict[str, float | int | None]:
    """The result keys of ``vllm bench serve --save-result`` that a simulation can produce."""
    ok = ~trace.failed & np.isfinite(trace.finished)
    sent, first, end = trace.sent[ok], trace.first_token[ok], trace.finished[ok]
    out = trace.output_tokens[ok]
    ttft, e2el = first - sent, end - sent
    multi = out > 1
    tpot = (e2el[multi] - ttft[multi]) / (out[multi] - 1)
    duration = float(np.nanmax(trace.finished)) if ok.any() else 0.0
    completed = int(ok.sum())
    total_in, total_out = int(trace.input_tokens[ok].sum()), int(out.sum())
    result: dict[str, float | int | None] = {
        "duration": duration,
        "completed": completed,
        "failed": int(trace.failed.sum()),
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": completed / duration if duration else 0.0,
        "request_goodput": None,
        "output_throughput": total_out / duration if duration else 0.0,
        "total_token_throughput": (total_in + total_out) / duration if duration else 0.0,
    }
    if goodput_ms:
        all_tpot = np.zeros(completed)
        all_tpot[multi] = tpot
        good = np.ones(completed, bool)
        for name, series in (("ttft", ttft), ("tpot", all_tpot), ("e2el", e2el)):
            if name in goodput_ms:
                good &= series <= goodput_ms[name] / 1000.0
        result["request_goodput"] = int(good.sum()) / duration if duration else 0.0
    peak_tokens, peak_concurrency = _peaks(sent, end, (trace.token_times, trace.token_counts))
    result["max_output_tokens_per_s"] = peak_tokens
    result["max_concurrent_requests"] = peak_concurrency
    series = {
        "ttft": _stats(ttft, percentiles),
        "tpot": _stats(tpot, percentiles),
        "itl": weighted_stats(trace.itl_values, trace.itl_weights, percentiles),
        "e2el": _stats(e2el, percentiles),
    }
    for name in METRICS:
        stats = series[name]
        result[f"mean_{name}_ms"] = stats["mean"] * 1000
        result[f"median_{name}_ms"] = stats["median"] * 1000
        result[f"std_{name}_ms"] = stats["std"] * 1000
        for p in percentiles:
            result[f"p{percentile_key(p)}_{name}_ms"] = stats[f"p{p}"] * 1000
    return result


def _peaks(sent: np.ndarray, end: np.ndarray, token_times: tuple[np.ndarray, np.ndarray] | None) -> tuple[float, int]:
    """Peak output tokens in a 1-s bucket and peak requests active in a 1-s bucket (from the first start)."""
    if sent.size == 0:
        return 0.0, 0
    start0 = float(sent.min())
    buckets = int(math.ceil(float(end.max()) - start0)) + 1
    first_second = (sent - start0).astype(np.int64)
    last_second = (end - start0).astype(np.int64)
    active = np.zeros(buckets + 1, np.int64)
    np.add.at(active, first_second, 1)
    np.add.at(active, np.minimum(last_second + 1, buckets), -1)
    peak_concurrency = int(np.cumsum(active)[:buckets].max())
    peak_tokens = 0.0
    if token_times is not None and token_times[0].size:
        times, counts = token_times
        bucket = (times - start0).astype(np.int64)
        keep = (bucket >= 0) & (bucket < buckets)
        peak_tokens = float(np.bincount(bucket[keep], weights=counts[keep], minlength=1).max())
    return peak_tokens, peak_concurrency
