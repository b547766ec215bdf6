"""benchmarks/kernel_tables.py reads aiconfigurator's table layout and prices each row with the step model.

The real tables live in the aiconfigurator wheel (not in the repository, not fetched at test time); these tests
write one row per table in the same layout and check the printed ratio against the step model's own functions.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from planner_service.engine.gpus import lookup_gpu
from planner_service.engine.simulation.step_cost import (
    GRAPH_KERNEL_SECONDS, MIB, HardwareFacts, decode_attention_seconds, linear_seconds,
)

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "kernel_tables.py"
HEADERS = {
    "gemm_perf": "framework,version,device,op_name,kernel_source,gemm_dtype,m,n,k,latency",
    "generation_attention_perf": ("framework,version,device,op_name,kernel_source,batch_size,isl,num_heads,"
                                  "num_key_value_heads,head_dim,beam_width,attn_dtype,kv_cache_dtype,step,latency"),
    "custom_allreduce_perf": ("framework,version,device,op_name,kernel_source,allreduce_dtype,num_gpus,message_size,"
                              "latency,backend"),
}
DEVICE = "NVIDIA H100 80GB HBM3"


def _tables(root: Path, rows: dict[str, str]) -> Path:
    folder = root / "aiconfigurator" / "systems" / "data" / "h100_sxm" / "vllm" / "0.14.0"
    folder.mkdir(parents=True)
    for table, row in rows.items():
        (folder / f"{table}.txt").write_text(HEADERS[table] + "\n" + row + "\n")
    return root


def _ratio(output: str, label: str) -> float:
    match = re.search(re.escape(label) + r"\s+n=\s*1\s+model/measured median\s+([0-9.]+)", output)
    assert match, output
    return float(match.group(1))


def test_each_row_is_priced_by_the_step_models_own_functions(tmp_path):
    spec = lookup_gpu("H100 SXM")
    bw, peak = spec.memory_bandwidth_bytes_per_second, spec.bf16_tflops * 1e12
    hw = HardwareFacts(memory_bandwidth_bytes_per_second=bw, bf16_flops_per_second=peak, fp8_flops_per_second=None,
                       compute_capability_major=9, interconnect="nvlink", gpu_name="H100 SXM")
    root = _tables(tmp_path, {
        "gemm_perf": f"VLLM,0.14.0,{DEVICE},gemm,vllm_default,float16,16,8192,8192,0.050",
        "generation_attention_perf": f"VLLM,0.14.0,{DEVICE},generation_attention,vllm_flash_attn,32,1,32,8,128,1,"
                                     "float16,float16,2047,0.200",
        "custom_allreduce_perf": f"vLLM,0.14.0,{DEVICE},all_reduce,vLLM_custom_graph,float16,4,1024,0.005,vllm_graph",
    })
    result = subprocess.run([sys.executable, str(SCRIPT), "--aiconfigurator", str(root), "--gpu", "h100_sxm"],
                            capture_output=True, text=True, timeout=120, check=True)
    gemm = linear_seconds(2 * 8192 * 8192, 8192 * 8192, 16, bw, peak) + GRAPH_KERNEL_SECONDS
    assert _ratio(result.stdout, "GEMM fp16, M <= 64 (decode)") == pytest.approx(gemm / 50e-6, abs=0.006)
    kv_bytes = 32 * 2047 * 8 * 128 * 4  # 268 MB
    attention = decode_attention_seconds(kv_bytes, 32 * 2047 * 32 * 128 * 4, bw, peak, hw.decode_attention_kernel,
                                         1) + GRAPH_KERNEL_SECONDS
    assert _ratio(result.stdout, "decode attention, KV 100-500 MB") == pytest.approx(attention / 200e-6, abs=0.006)
    assert _ratio(result.stdout, "custom all-reduce, tp 4, <= 64 KB") == pytest.approx(
        hw.allreduce_seconds(2048, 4) / 5e-6, abs=0.006)


def test_the_attention_fit_recovers_the_floor_and_efficiency_curve_of_its_rows(tmp_path):
    """Serving-shaped rows (batch >= 16, context 128-4095) whose calls stream at 0.5 of the bandwidth below
    128 MiB and at 0.8 from there, over a 5 us floor, come back as those knots, and the floor as the median of the
    small calls (batch <= 32, under 2 MiB)."""
    bw = lookup_gpu("H100 SXM").memory_bandwidth_bytes_per_second
    rows = []

    def row(batch: int, kv_heads: int, ctx: int, seconds: float) -> str:
        return (f"VLLM,0.14.0,{DEVICE},generation_attention,vllm_flash_attn,{batch},1,32,{kv_heads},128,1,float16,"
                f"float16,{ctx},{seconds * 1e3}")

    for kv_heads in (1, 2, 4, 8):
        for batch in (16, 32, 64, 128, 256):
            for ctx in (128, 256, 512, 1024, 2048, 4095):
                kv_bytes = batch * ctx * kv_heads * 128 * 4
                efficiency = 0.5 if kv_bytes < 128 * MIB else 0.8
                rows.append(row(batch, kv_heads, ctx, max(5e-6, kv_bytes / (bw * efficiency))))
    root = _tables(tmp_path, {"generation_attention_perf": "\n".join(rows)})
    result = subprocess.run([sys.executable, str(SCRIPT), "--aiconfigurator", str(root), "--gpu", "h100_sxm"],
                            capture_output=True, text=True, timeout=120, check=True)
    fit = re.search(r"decode attention fit, batch >= 16, context 128-4095: floor ([0-9.]+) us, median \|error\| "
                    r"([0-9]+)%; efficiency by KV bytes per call: \((.*)\)$", result.stdout, re.MULTILINE)
    assert fit, result.stdout
    assert float(fit.group(1)) == pytest.approx(5.0, abs=0.05)
    assert fit.group(2) == "0"
    knots = {int(m): float(e) for m, e in re.findall(r"\(([0-9]+) \* MIB, ([0-9.]+)\)", fit.group(3))}
    assert knots[16] == knots[32] == 0.5 and knots[256] == knots[1024] == 0.8
    assert min(knots) == 4 and max(knots) == 1024  # from 4 MiB, every octave with >= 5 rows (3 near 2 GiB)


def test_a_missing_path_is_one_error_line(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--aiconfigurator", str(tmp_path / "none.whl")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--aiconfigurator" in result.stderr
