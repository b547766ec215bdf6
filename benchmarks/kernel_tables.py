"""The step model's per-kernel costs against measured vLLM kernel timings (aiconfigurator's tables).

Run: ``.venv/bin/python benchmarks/kernel_tables.py --aiconfigurator PATH [--gpu h100_sxm ...]`` where PATH is
the ``aiconfigurator`` wheel (``pip download --no-deps aiconfigurator==0.8.0``; Apache-2.0) or its unpacked
folder. Nothing is bundled: the tables stay in that package.

aiconfigurator ships timings of vLLM's own kernels per GPU and vLLM release
(``aiconfigurator/systems/data/<gpu>/vllm/<version>/*.txt``, CSV with latency in ms). For each table this prints
measured vs modelled microseconds, computed by ``planner_service.engine.simulation.step_cost``'s own functions
(``linear_seconds``, ``decode_attention_seconds``, ``HardwareFacts.allreduce_seconds``, the fused-MoE term), plus
the per-kernel graph cost the step model adds to every kernel:

* dense GEMMs (bf16/fp16) at decode and prefill sizes, and the fraction of the bandwidth the large decode GEMMs
  stream weights at (``step_cost.WEIGHT_STREAM_EFFICIENCY_BY_GPU``);
* decode attention (vLLM FlashAttention, fp16 KV), grouped by KV bytes per call;
* vLLM's custom all-reduce, CUDA-graph rows only;
* the fused Triton MoE (fp16, power-law routing rows), with tuned or default tiles as the release's shipped
  configs decide (``moe_configs.has_tuned_config``, the step model's own lookup).

A ratio above 1 means the model is slower than the kernel. The measured rows are single operations timed by
aiconfigurator's collector (its timing method is not in the wheel; its GEMM rows bottom out at 2.5 us, a CUDA-graph
node, and its all-reduce table keeps graph and eager rows apart).

It also prints the fit the step model's decode-attention constants come from
(``step_cost.DECODE_ATTENTION_BY_GPU``): ``t = max(floor, KV bytes / (bandwidth x efficiency(KV bytes)))`` with
the floor the median call under 2 MiB (batch <= 32) and the efficiency, at each power of two from 4 MiB, the
median achieved fraction of the bandwidth over the serving-shaped rows (batch >= 16, context 128-4095, fp16 KV)
within half an octave, in the form the constants are written.
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import sys
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from planner_service.engine.gpus import lookup_gpu  # noqa: E402
from planner_service.engine.pipeline import default_interconnect  # noqa: E402
from planner_service.engine.simulation.moe_configs import has_tuned_config  # noqa: E402
from planner_service.engine.simulation.shape import hardware_facts  # noqa: E402
from planner_service.engine.simulation.step_cost import (  # noqa: E402
    GRAPH_KERNEL_SECONDS, MIB, EngineShape, HardwareFacts, StageShape, StepCostModel, decode_attention_call_seconds,
    decode_attention_seconds, linear_seconds,
)

# aiconfigurator's folder name -> this planner's GPU catalog name.
GPUS = {"h100_sxm": "H100 SXM", "h200_sxm": "H200", "a100_sxm": "A100 SXM 80GB", "l40s": "L40S", "b200_sxm": "B200"}
DATA = "aiconfigurator/systems/data"


class Tables:
    """Read-only access to the CSV tables of an aiconfigurator wheel or unpacked folder."""

    def __init__(self, path: Path) -> None:
        self.zip = zipfile.ZipFile(path) if path.is_file() else None
        self.root = path
        names = self.zip.namelist() if self.zip else [str(p.relative_to(path)) for p in path.rglob("*.txt")]
        self.names = [n for n in names if n.startswith(DATA + "/") and "/vllm/" in n]

    def versions(self, gpu: str) -> list[str]:
        found = {n.split("/")[5] for n in self.names if n.split("/")[3] == gpu}
        return sorted(found, key=lambda v: tuple(int(p) for p in v.split(".")))

    def rows(self, gpu: str, version: str, table: str) -> list[dict]:
        name = f"{DATA}/{gpu}/vllm/{version}/{table}.txt"
        if name not in self.names:
            return []
        text = self.zip.read(name).decode() if self.zip else (self.root / name).read_text()
        return list(csv.DictReader(io.StringIO(text)))


def hardware(gpu_name: str) -> HardwareFacts:
    """The step model's facts for a catalog GPU and its usual link, as ``bench`` builds them."""
    spec = lookup_gpu(gpu_name)
    return hardware_facts(spec, default_interconnect(spec.name))


def _ratio_line(label: str, pairs: list[tuple[float, float]]) -> str:
    """Median and spread of model/measured over (measured, model) pairs."""
    ratios = sorted(model / measured for measured, model in pairs)
    if not ratios:
        return f"  {label:<34} no rows"
    q = lambda f: ratios[min(len(ratios) - 1, int(f * len(ratios)))]  # noqa: E731
    return (f"  {label:<34} n={len(ratios):5d}  model/measured median {statistics.median(ratios):5.2f}"
            f"  p10 {q(0.1):5.2f}  p90 {q(0.9):5.2f}")


def gemms(rows: list[dict], hw: HardwareFacts) -> list[str]:
    out = []
    buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    streamed: list[float] = []  # achieved fraction of the bandwidth of the large decode GEMMs
    bandwidth = hw.memory_bandwidth_bytes_per_second
    for r in rows:
        if r["gemm_dtype"] != "float16":
            continue
        m, n, k = int(r["m"]), int(r["n"]), int(r["k"])
        if n * k < 4096 * 1024:  # smaller than any decoder layer's matrix
            continue
        model = linear_seconds(2 * n * k, n * k, m, bandwidth, hw.bf16_flops_per_second,
                               stream_efficiency=hw.weight_stream_efficiency) + GRAPH_KERNEL_SECONDS
        measured = float(r["latency"]) * 1e-3
        key = "M <= 64 (decode)" if m <= 64 else "M 128-512" if m <= 512 else "M >= 1024 (prefill)"
        buckets[key].append((measured, model))
        if m <= 64 and 8192 * 8192 <= n * k <= 32768 * 16384:
            streamed.append(2 * n * k / (measured * bandwidth))
    for key in ("M <= 64 (decode)", "M 128-512", "M >= 1024 (prefill)"):
        out.append(_ratio_line(f"GEMM fp16, {key}", buckets[key]))
    if streamed:
        out.append(f"  decode GEMM weight streaming, M <= 64, 8192x8192 to 32768x16384: median {statistics.median(streamed):.2f}"
                   f" of the bandwidth (n={len(streamed)}; the step model uses {hw.weight_stream_efficiency:.2f})")
    return out


def attention(rows: list[dict], hw: HardwareFacts) -> list[str]:
    """One layer's decode attention as the step model prices it (graph node + floor beyond it + KV bytes)."""
    buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    serving: list[tuple[float, float]] = []  # (KV bytes, measured seconds) of the rows the curve is fitted on
    small_calls: list[float] = []  # seconds of the calls the floor is taken from
    for r in rows:
        if r["kv_cache_dtype"] not in ("float16", "bfloat16"):
            continue
        batch, ctx = int(r["batch_size"]), int(r["step"])
        heads, kv_heads, dim = int(r["num_heads"]), int(r["num_key_value_heads"]), int(r["head_dim"])
        kv_bytes = batch * ctx * kv_heads * dim * 2 * 2
        flops = batch * ctx * heads * dim * 4
        model = decode_attention_seconds(kv_bytes, flops, hw.memory_bandwidth_bytes_per_second,
                                         hw.bf16_flops_per_second, hw.decode_attention_kernel, 1) + GRAPH_KERNEL_SECONDS
        measured = float(r["latency"]) * 1e-3
        size = ("< 10 MB" if kv_bytes < 10e6 else "10-100 MB" if kv_bytes < 100e6 else "100-500 MB"
                if kv_bytes < 500e6 else ">= 500 MB")
        buckets[size].append((measured, model))
        if batch >= 16 and 128 <= ctx <= 4095:
            buckets["serving-shaped"].append((measured, model))
            serving.append((kv_bytes, measured))
        if kv_bytes < 2 * MIB and batch <= 32:
            small_calls.append(measured)
    lines = [_ratio_line(f"decode attention, KV {size}", buckets[size])
             for size in ("< 10 MB", "10-100 MB", "100-500 MB", ">= 500 MB", "serving-shaped")]
    if len(serving) >= 2:
        floor, curve, error = fit_attention(serving, small_calls, hw.memory_bandwidth_bytes_per_second)
        knots = ", ".join(f"({b // MIB} * MIB, {e:.2f})" for b, e in curve)
        lines.append(f"  decode attention fit, batch >= 16, context 128-4095: floor {floor * 1e6:.1f} us, "
                     f"median |error| {error * 100:.0f}%; efficiency by KV bytes per call: ({knots})")
    return lines


def fit_attention(points: list[tuple[float, float]], small_calls: list[float],
                  bandwidth: float) -> tuple[float, tuple, float]:
    """(floor seconds, efficiency curve, median relative error over ``points``) of ``t = max(floor, bytes /
    (bandwidth * efficiency(bytes)))``: the floor is the median of ``small_calls`` (seconds of calls too small
    to stream: under 2 MiB of KV at batch <= 32; the fastest point when there are none), and the curve holds,
    at each power-of-two byte count from 4 MiB with at least 5 of the (KV bytes, seconds) ``points`` within
    half an octave, their median achieved fraction of ``bandwidth``; ``decode_attention_call_seconds``
    interpolates it in log bytes."""
    kv_bytes, seconds = np.array(points).T
    floor = float(np.median(small_calls)) if small_calls else float(seconds.min())
    curve = []
    knot = 4 * MIB
    while knot <= kv_bytes.max() * 2 ** 0.5:
        near = (kv_bytes >= knot / 2 ** 0.5) & (kv_bytes < knot * 2 ** 0.5)
        if near.sum() >= 5:
            curve.append((knot, round(float(np.median(kv_bytes[near] / (seconds[near] * bandwidth))), 2)))
        knot *= 2
    curve_t = tuple(curve) or ((4 * MIB, float(np.median(kv_bytes / (seconds * bandwidth)))),)
    model = np.array([decode_attention_call_seconds(b, bandwidth, (floor, curve_t)) for b in kv_bytes])
    return floor, curve_t, float(np.median(np.abs(model / seconds - 1)))


def allreduce(rows: list[dict], hw: HardwareFacts) -> list[str]:
    buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        if r.get("backend") != "vllm_graph":
            continue
        tp, size = int(r["num_gpus"]), int(r["message_size"]) * 2  # fp16 elements
        if tp < 2:
            continue
        key = f"tp {tp}, " + ("<= 64 KB" if size <= 65536 else "64 KB-2 MB" if size <= 2 << 20 else "> 2 MB")
        buckets[key].append((float(r["latency"]) * 1e-3, hw.allreduce_seconds(size, tp)))
    sizes = ("<= 64 KB", "64 KB-2 MB", "> 2 MB")
    order = sorted(buckets, key=lambda key: (int(key.split(",")[0][3:]), sizes.index(key.split(", ")[1])))
    return [_ratio_line(f"custom all-reduce, {key}", buckets[key]) for key in order]


def _moe_stage(hidden: int, inter: int, experts: int, topk: int, tp: int, tuned: bool) -> StageShape:
    """One fused-MoE layer on one TP rank (bf16/fp16 weights), tuned or default tiles as vLLM would pick."""
    per_expert = 3 * hidden * (inter // tp)
    return StageShape(
        layers=1, full_attention_layers=0, sliding_attention_layers=0, sliding_window=0, linear_attention_layers=0,
        kv_bytes_per_token_per_layer=0.0, attention_flops_per_pair_per_layer=0.0,
        linear_state_bytes_per_request_per_layer=0.0, dense_weight_bytes=0.0, dense_params=0.0, moe_layers=1,
        experts_on_rank=experts, num_experts=experts, experts_per_token=topk, expert_weight_bytes=2.0 * per_expert,
        expert_params=float(per_expert), shared_expert_layers=0, lm_head_bytes=0.0, lm_head_params=0.0,
        vocab_per_rank=0, hidden_size=hidden, mla_backend=None, fp8_compute=False, moe_tuned_config=tuned,
    )


def moe(rows: list[dict], hw: HardwareFacts, version: str) -> list[str]:
    """The fused-MoE term vs measured; tuned or default tiles by the configs the vLLM release ships."""
    buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        if r["moe_dtype"] != "float16" or r["moe_ep_size"] != "1" or r["distribution"] != "power_law_1.01":
            continue
        hidden, inter, topk, experts = (int(r[k]) for k in ("hidden_size", "inter_size", "topk", "num_experts"))
        tp, tokens = int(r["moe_tp_size"]), int(r["num_tokens"])
        if inter % tp:
            continue
        tuned = has_tuned_config(tuple(int(p) for p in version.split(".")), experts, inter // tp, (r["device"],), None)
        shape = EngineShape(stages=(_moe_stage(hidden, inter, experts, topk, tp, tuned),), tensor_parallel_size=tp,
                            hardware=hw, cuda_graphs=True, max_capture_size=512, async_scheduling=True)
        model = StepCostModel(shape)._moe_layer_seconds(shape.stages[0], float(tokens), hw.bf16_flops_per_second, False)
        size = "tokens <= 128" if tokens <= 128 else "tokens 256-1024" if tokens <= 1024 else "tokens >= 2048"
        buckets[f"{'tuned' if tuned else 'default'} tiles, {size}"].append((float(r["latency"]) * 1e-3, model))
    order = [f"{tiles} tiles, {size}" for tiles in ("default", "tuned")
             for size in ("tokens <= 128", "tokens 256-1024", "tokens >= 2048")]
    return [_ratio_line(f"fused MoE fp16, {key}", buckets[key]) for key in order if key in buckets]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aiconfigurator", type=Path, required=True, help="aiconfigurator wheel or unpacked folder")
    parser.add_argument("--gpu", action="append", choices=sorted(GPUS), help="aiconfigurator GPU folder (repeatable)")
    args = parser.parse_args()
    if not args.aiconfigurator.exists():
        parser.error(f"--aiconfigurator: {args.aiconfigurator} does not exist")
    tables = Tables(args.aiconfigurator)
    for gpu in args.gpu or sorted(GPUS):
        versions = tables.versions(gpu)
        if not versions:
            continue
        version, hw = versions[-1], hardware(GPUS[gpu])
        print(f"\n{GPUS[gpu]} (aiconfigurator {gpu}, vLLM {version}); ratio = step model / measured kernel")
        for section in (gemms(tables.rows(gpu, version, "gemm_perf"), hw),
                        attention(tables.rows(gpu, version, "generation_attention_perf"), hw),
                        allreduce(tables.rows(gpu, version, "custom_allreduce_perf"), hw),
                        moe(tables.rows(gpu, version, "moe_perf"), hw, version)):
            for line in section:
                print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
