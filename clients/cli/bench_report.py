"""Text output of ``bench`` and ``capacity``: bench's result block as ``vllm bench serve`` prints it.

The block between the ``=`` rules has the labels and number formats of ``vllm/benchmarks/serve.py``
(``{:<40} {:<10.2f}``), so a simulated and a measured run diff line by line; the lines above and below it
say what was simulated and what the engine did (preemptions, the plan's KV cache).
"""

from __future__ import annotations

from typing import TextIO

from planner_service.engine.bench_models import BenchResponse, CapacityResponse
from planner_service.engine.simulation.metrics import percentile_key

_HEADERS = (
    ("ttft", "TTFT", "Time to First Token"),
    ("tpot", "TPOT", "Time per Output Token (excl. 1st token)"),
    ("itl", "ITL", "Inter-token Latency"),
    ("e2el", "E2EL", "End-to-end Latency"),
)


def _row(out: TextIO, label: str, value: float | int) -> None:
    if isinstance(value, int):
        out.write("{:<40} {:<10}\n".format(label, value))
    else:
        out.write("{:<40} {:<10.2f}\n".format(label, value))


def render_bench(result: BenchResponse, out: TextIO) -> None:
    plan, load, m = result.plan, result.load, result.metrics
    cfg = plan.config
    rate = "inf" if load.request_rate is None else f"{load.request_rate:g}"
    out.write(
        f"Simulated vllm bench serve: {plan.model.model} on {cfg.tensor_parallel_size * cfg.pipeline_parallel_size}x "
        f"{plan.gpu.name} (TP {cfg.tensor_parallel_size}, PP {cfg.pipeline_parallel_size}), vLLM {plan.vllm_version}\n"
        f"load: {load.num_prompts} prompts, {load.dataset_name} "
        + (f"{load.random_input_len}/{load.random_output_len} tokens" if load.dataset_name == "random"
           else f"~{load.sharegpt_mean_input_len:g}/{load.sharegpt_mean_output_len:g} tokens")
        + f", request rate {rate}, endpoint /v1/{'chat/completions' if load.endpoint_type == 'chat' else 'completions'}, "
        f"seed {load.seed}\n"
    )
    out.write("{s:{c}^{n}}\n".format(s=" Serving Benchmark Result ", n=50, c="="))
    _row(out, "Successful requests:", int(m["completed"]))
    if load.max_concurrency is not None:
        _row(out, "Maximum request concurrency:", load.max_concurrency)
    if load.request_rate is not None:
        _row(out, "Request rate configured (RPS):", float(load.request_rate))
    _row(out, "Benchmark duration (s):", float(m["duration"]))
    _row(out, "Total input tokens:", int(m["total_input_tokens"]))
    _row(out, "Total generated tokens:", int(m["total_output_tokens"]))
    _row(out, "Request throughput (req/s):", float(m["request_throughput"]))
    if load.goodput:
        _row(out, "Request goodput (req/s):", float(m["request_goodput"] or 0.0))
    _row(out, "Output token throughput (tok/s):", float(m["output_throughput"]))
    _row(out, "Peak output token throughput (tok/s):", float(m["max_output_tokens_per_s"]))
    _row(out, "Peak concurrent requests:", float(m["max_concurrent_requests"]))
    _row(out, "Total Token throughput (tok/s):", float(m["total_token_throughput"]))
    for key, name, header in _HEADERS:
        out.write("{s:{c}^{n}}\n".format(s=header, n=50, c="-"))
        _row(out, f"Mean {name} (ms):", float(m[f"mean_{key}_ms"]))
        _row(out, f"Median {name} (ms):", float(m[f"median_{key}_ms"]))
        for p in load.metric_percentiles:
            word = percentile_key(p)
            _row(out, f"P{word} {name} (ms):", float(m[f"p{word}_{key}_ms"]))
    out.write("=" * 50 + "\n")
    failed = int(m.get("failed") or 0)
    out.write(
        f"engine: {result.engine_steps:,} steps, at most {result.max_running_requests} requests running, "
        f"{result.preemptions} preemptions; KV cache {plan.feasibility.kv_cache_tokens:,} tokens "
        f"({plan.feasibility.num_gpu_blocks:,} blocks x {plan.feasibility.block_size})"
        + (f"; {failed} requests longer than max_model_len {cfg.max_model_len} failed" if failed else "")
        + "\n"
    )


def render_capacity(result: CapacityResponse, out: TextIO) -> None:
    slos = ", ".join(f"p{percentile_key(result.percentile)} {s.metric.upper()} <= {s.milliseconds:g} ms" for s in result.slos)
    out.write(f"Capacity for {result.request_rate:g} req/s with {slos}\n\n")
    if not result.options:
        out.write("No configuration tried meets the SLOs.\n")
    else:
        header = ("#", "GPU", "GPUs/replica", "TP", "quant", "KV", "max_num_seqs", "req/s/replica", "replicas", "total GPUs",
                  *[k.replace("_ms", "").replace("_", " ").upper() + " ms" for k in result.options[0].predicted])
        rows = []
        for i, o in enumerate(result.options, 1):
            rows.append((str(i), o.gpu, str(o.gpus_per_replica), str(o.tensor_parallel_size), o.quantization or "-",
                         o.kv_cache_dtype, str(o.max_num_seqs), f"{o.max_rate_per_replica:.2f}", str(o.replicas),
                         str(o.total_gpus), *[f"{v:.0f}" for v in o.predicted.values()]))
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        out.write("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip() + "\n")
        for r in rows:
            out.write("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n")
        out.write(f"\nBest: {result.options[0].serve_command}\n")
    if result.rejected:
        out.write("\nCannot meet the SLOs:\n")
        for line in result.rejected:
            out.write(f"  - {line}\n")
    for note in result.assumptions:
        out.write(f"note: {note}\n")
