"""Accuracy of the performance twin against published vLLM serving runs (``vllm-benchmarks.json``).

Run: ``.venv/bin/python benchmarks/perf_accuracy.py [--case SUBSTRING] [--verbose]``.

Each run of ``shared/calibration/vllm-benchmarks.json`` is replayed through ``bench`` with the settings
it states (server flags, its ``assumed_defaults`` for the rest, its load: dataset lengths, prompts,
rate or concurrency, endpoint) and the predicted numbers are compared with what the client printed:

* **median TPOT** (ms): ``vllm bench serve`` runs as printed. inference-perf's printed TPOT is not
  ``(e2e - ttft)/(output - 1)`` of its own figures (Llama-2-7B stage 0: printed 4.07 ms, while
  (2050 - 27)/(249 - 1) = 8.2 ms from its median E2E, TTFT and output length); for those runs the
  reference is that derived value. guidellm's TPOT is unusable (VLLM-BENCHMARKS.md caveat 3) and is not
  compared;
* **median TTFT** (ms) and **output throughput** (tok/s), as printed, except:
* with ``ignore_eos`` and a fixed ``max_tokens`` (every inference-perf run) the server generates exactly that
  many tokens per request, and the replay generates them too. inference-perf counts output tokens by
  re-tokenizing the streamed text (``count_tokens(output_text)`` in ``apis/completion.py``), which drops what
  detokenizes to nothing (most likely the end-of-sequence tokens the base Llama-2-7B keeps emitting under
  ``ignore_eos``, printed as "" with ``skip_special_tokens``): the Llama-2-7B runs count 194-210 tokens per
  request where 247-251 were asked, while their E2E mean equals their median (every request ran as long, so
  none stopped early); the other models' medians are the requested length plus 1-2, the beginning-of-sequence
  token ``tokenizer(text).input_ids`` adds for Llama tokenizers plus re-tokenization. The derived TPOT
  therefore divides by the requested length, and the output-throughput reference is the printed request
  throughput times it.

Rows are grouped by GPU class and load shape (burst = rate inf or >= 1000 req/s, fixed rate,
concurrency). The summary gives median and p90 of |error| and the signed bias (median of
predicted/reported - 1). Acceptance (issue 10): median |error| <= 10 % TPOT, <= 25 % TTFT, <= 15 %
output throughput, and no completed run refused. Coverage runs (server flags or checkpoint not
recorded, an overloaded stage) are replayed and printed - they must not be refused - but stay out of
the summary; excluded runs (V0 engine, offline batch tools, table-only rows) are listed with the
reason. Nothing is fitted per case: a case only supplies what its source states.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from planner_service.engine.bench import PlannedEngine, simulate  # noqa: E402
from planner_service.engine.bench_models import LoadOptions  # noqa: E402
from planner_service.engine.models import (  # noqa: E402
    EngineOptions, HardwareOptions, ModelOptions, PlanRequest, PolicyOptions,
)
from planner_service.engine.plan import build_plan  # noqa: E402
from planner_service.metadata.resolver import ModelResolver  # noqa: E402

SHARED = next((p for p in (REPO.parent / "shared", Path("/work/shared")) if p.is_dir()), REPO.parent / "shared")
CASES_FILE = SHARED / "calibration" / "vllm-benchmarks.json"

GPU_NAMES = {
    "H100": "H100", "H100-PCIe": "H100 PCIe", "H200": "H200", "A100-80GB": "A100 SXM 80GB",
    "B200": "B200", "RTX4090": "RTX 4090",
}
# Checkpoints without a verified config in the bundled catalog: their architecture from package-registry
# copies (benchmarks/perf_models/README.md says what each holds), loaded as local model folders.
PERF_MODELS = Path(__file__).resolve().parent / "perf_models"
# The vLLM version a run used when its source did not record it (from its date, per assumed_defaults).
ASSUMED_VERSIONS = {
    "blis-training": "0.15.0",  # "an instrumented vLLM of Feb 2026": 0.15/0.16 were current then
    "gpu-conc": "0.10.1",  # "pip-installed vLLM of mid-Aug 2025 (gpt-oss support had just landed)"
}


# GPUStack's guidellm runner holds at most 512 requests in flight: every rate-1000 run reports exactly
# that peak (VLLM-BENCHMARKS.md caveat 3), so those runs are replayed with a client cap of 512.
GUIDELLM_RUNNER_CAP = 512


@dataclass
class Replay:
    case: dict
    request: PlanRequest
    load: LoadOptions
    tpot_reference: float | None  # ms
    tpot_source: str
    output_throughput_reference: float | None  # tok/s


def _exclusion(case: dict) -> str | None:
    """Why a run is not replayed at all (None: it is)."""
    b = case["benchmark"]
    if case["engine"] == "V0":
        return "V0 engine (vLLM 0.6): the old scheduler is not modelled"
    if (b["mode"] or "").startswith("offline") or "offline" in case["id"]:
        return "offline benchmark_throughput/latency (no HTTP server, batch tool)"
    if "-table-" in case["id"]:
        return "conclusion-table row only (no full result block)"
    return None


def _coverage_only(case: dict) -> str | None:
    """Why a replayed run stays out of the error summary (None: it counts). Coverage runs must still
    plan and simulate: a completed run the twin refuses is a failure either way."""
    if case["id"].startswith("gpustack-quant-ref"):
        return "vLLM 0.9.2 summary table: checkpoints not named, throughput column ambiguous (caveat 8)"
    if case["id"].startswith("gpu-conc"):
        return "server flags and vLLM build not recorded (caveat 9: low quality)"
    if case["id"].endswith("reasoning-stage0"):
        return "saturated/overloaded stage (caveat 6): 85 % failures or 120 s TTFT, not a steady run"
    return None


def _version(case: dict) -> str:
    if case["vllm_version"]:
        return case["vllm_version"].split()[0]
    for prefix, version in ASSUMED_VERSIONS.items():
        if case["id"].startswith(prefix):
            return version
    raise ValueError(f"{case['id']}: no vLLM version")


def replay_for(case: dict) -> Replay:
    b, r, extra = case["benchmark"], case["results"], case.get("results_extra") or {}
    generated = _generated_tokens(case)
    local = PERF_MODELS / case["model"]
    model = str(local) if (local / "config.json").is_file() else case["model"]
    quant = ((case["quantization"] or "").split() or [None])[0]
    # Unnamed quantized checkpoints of a bf16 model (the quant-ref table): sized as that quantization.
    what_if = quant if quant in ("awq", "fp8") and case["id"].startswith("gpustack-quant-ref") else None
    kv = ((case["kv_cache_dtype"] or "").split() or [None])[0]
    request = PlanRequest(
        model=ModelOptions(model=model, max_model_len=case["max_model_len"], kv_cache_dtype=kv, quantization=what_if),
        hardware=HardwareOptions(
            gpu=GPU_NAMES[case["gpu_class"]], num_gpus=case["num_gpus"], tensor_parallel_size=case["tp"],
            pipeline_parallel_size=case["pp"], enable_expert_parallel=bool(case["ep"]),
        ),
        policy=PolicyOptions(gpu_memory_utilization=case["gpu_memory_utilization"]),
        engine=EngineOptions(
            vllm_version=_version(case), max_num_seqs=case["max_num_seqs"],
            max_num_batched_tokens=case["max_num_batched_tokens"], enable_prefix_caching=case["enable_prefix_caching"],
        ),
    )
    completed = r["completed"] or b["num_prompts"]
    if b["input_len"] is None and b["dataset"] == "sharegpt" and not r["total_input_tokens"]:
        r = dict(r, total_input_tokens=215 * completed, total_output_tokens=200 * completed)  # summary rows
    tool = b["tool"] or ""
    constant = tool.startswith(("inference-perf", "guidellm"))
    rate = b["request_rate"]
    concurrency = b["max_concurrency"]
    if tool.startswith("guidellm") and extra.get("max_concurrency_reported") == GUIDELLM_RUNNER_CAP:
        concurrency = GUIDELLM_RUNNER_CAP  # the observed peak is the runner's cap (caveat 3)
    load_kwargs: dict = {
        "num_prompts": int(completed), "request_rate": float(rate) if rate else None,
        "max_concurrency": concurrency, "arrival_process": "constant" if constant else "gamma",
        "endpoint_type": "chat" if "chat" in (b["endpoint"] or "") else "completions",
    }
    if b["dataset"] == "sharegpt":
        load_kwargs.update(
            dataset_name="sharegpt",
            sharegpt_mean_input_len=r["total_input_tokens"] / completed,
            sharegpt_mean_output_len=r["total_output_tokens"] / completed,
        )
    else:
        input_len = round(extra.get("prompt_len_mean") or b["input_len"] or 1024)
        output_len = round(generated or extra.get("output_len_mean") or b["output_len"] or 128)
        prefix = 0
        if "shared_prefix" in (b["dataset"] or ""):
            prefix = int(json.loads(b["command"].split("profile.yaml: ", 1)[1])["data"]["shared_prefix"]["system_prompt_len"])
        load_kwargs.update(random_input_len=input_len - prefix, random_output_len=output_len, random_prefix_len=prefix)
    load = LoadOptions(**load_kwargs)
    tpot_ref, tpot_source = r["median_tpot_ms"], "printed"
    if tool.startswith("guidellm"):
        tpot_ref, tpot_source = None, "guidellm TPOT unusable"
    elif tool.startswith("inference-perf") and r["median_e2el_ms"] and r["median_ttft_ms"]:
        out = generated or extra.get("output_len_median")
        tpot_ref, tpot_source = (r["median_e2el_ms"] - r["median_ttft_ms"]) / (out - 1), "derived (e2e-ttft)/(out-1)"
    otp_ref = r["output_token_throughput"]
    if tool.startswith("inference-perf") and generated and r["request_throughput"]:
        otp_ref = r["request_throughput"] * generated  # tokens generated, not re-tokenized
    return Replay(case, request, load, tpot_ref, tpot_source, otp_ref)


def _generated_tokens(case: dict) -> int | None:
    """Output tokens the server generated per request when the run fixes them (``ignore_eos`` with one
    ``max_tokens``), else None."""
    b = case["benchmark"]
    return int(b["output_len"]) if b["ignore_eos"] and b["output_len"] and b["dataset"] != "sharegpt" else None


def load_shape(case: dict) -> str:
    b = case["benchmark"]
    if b["max_concurrency"]:
        return "concurrency"
    if b["request_rate"] is None or b["request_rate"] >= 1000:
        return "burst"
    return "fixed rate"


def _err(pred: float | None, ref: float | None) -> float | None:
    if pred is None or ref is None or ref == 0 or not math.isfinite(pred):
        return None
    return pred / ref - 1


def run(cases: list[dict], resolver: ModelResolver, verbose: bool) -> list[dict]:
    rows = []
    for case in cases:
        replay = replay_for(case)
        started = time.perf_counter()
        try:
            source = resolver.resolve(replay.request.model)
            plan = build_plan(source, replay.request)
        except Exception as exc:  # a row, not a crash: the summary counts refusals
            rows.append({"case": case, "error": f"{type(exc).__name__}: {exc}"})
            continue
        if not plan.feasibility.fits:
            rows.append({"case": case, "error": f"refused: {plan.feasibility.error}"})
            continue
        engine = PlannedEngine.from_plan(source, replay.request, plan)
        result = simulate(engine, replay.load)
        m, r = result.metrics, case["results"]
        rows.append({
            "case": case, "replay": replay, "seconds": time.perf_counter() - started, "result": result,
            "tpot": (m["median_tpot_ms"], replay.tpot_reference),
            "ttft": (m["median_ttft_ms"], r["median_ttft_ms"]) if r["median_ttft_ms"] is not None
            else (m["mean_ttft_ms"], r["mean_ttft_ms"]),
            "otp": (m["output_throughput"], replay.output_throughput_reference),
            "itl": (m["median_itl_ms"], r["median_itl_ms"] if replay.tpot_source == "printed" else None),
            "dur": (m["duration"], r["duration_s"]),
        })
        if verbose:
            print(case["id"], json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in m.items()}))
    return rows


def _fmt(pair: tuple[float | None, float | None]) -> str:
    pred, ref = pair
    if ref is None or pred is None:
        return f"{pred:9.1f} {'-':>9} {'':>6}"
    e = _err(pred, ref)
    return f"{pred:9.1f} {ref:9.1f} {e * 100:+5.0f}%"


def _summary(rows: list[dict], key: str) -> str:
    errs = [_err(*row[key]) for row in rows if key in row]
    errs = [e for e in errs if e is not None]
    if not errs:
        return "     -"
    absolute = sorted(abs(e) for e in errs)
    p90 = absolute[min(len(absolute) - 1, math.ceil(0.9 * len(absolute)) - 1)]
    return f"n={len(errs):2d} med {statistics.median(absolute) * 100:5.1f}% p90 {p90 * 100:5.1f}% bias {statistics.median(errs) * 100:+5.1f}%"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default=None, help="Only cases whose id contains this text.")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    cases = json.loads(CASES_FILE.read_text())["cases"]
    if args.case:
        cases = [c for c in cases if args.case in c["id"]]
    included, excluded = [], []
    for case in cases:
        reason = _exclusion(case)
        (excluded if reason else included).append((case, reason))
    resolver = ModelResolver()
    replayed = run([c for c, _ in included], resolver, args.verbose)
    rows = [row for row in replayed if not _coverage_only(row["case"])]
    coverage = [row for row in replayed if _coverage_only(row["case"])]
    print(f"# Performance twin vs {len(rows)} published vLLM serving runs ({CASES_FILE.name})\n")
    print(f"{'case':<62} {'shape':<11} | {'TPOT pred':>9} {'ref':>9} {'err':>6} | {'TTFT pred':>9} {'ref':>9} {'err':>6} "
          f"| {'out tok/s':>9} {'ref':>9} {'err':>6} | {'preempt':>7} {'sim s':>5}")
    ok_rows = []
    for row in rows:
        cid = row["case"]["id"][:62]
        if "error" in row:
            print(f"{cid:<62} REFUSED/ERROR: {row['error'][:150]}")
            continue
        ok_rows.append(row)
        print(f"{cid:<62} {load_shape(row['case']):<11} | {_fmt(row['tpot'])} | {_fmt(row['ttft'])} | {_fmt(row['otp'])} "
              f"| {row['result'].preemptions:7d} {row['seconds']:5.2f}")
    print("\n## Summary (|predicted/reported - 1|)\n")
    groups: dict[str, list[dict]] = {"all": ok_rows}
    for row in ok_rows:
        groups.setdefault(f"gpu {row['case']['gpu_class']}", []).append(row)
        groups.setdefault(f"load {load_shape(row['case'])}", []).append(row)
    for name, members in groups.items():
        print(f"{name:<18} TPOT {_summary(members, 'tpot')} | TTFT {_summary(members, 'ttft')} | out tok/s {_summary(members, 'otp')}")
    print(f"\n## Coverage runs (replayed, not in the summary: {len(coverage)})\n")
    for row in coverage:
        cid = row["case"]["id"][:62]
        if "error" in row:
            print(f"{cid:<62} REFUSED/ERROR: {row['error'][:150]}")
        else:
            print(f"{cid:<62} {load_shape(row['case']):<11} | TTFT {_fmt(row['ttft'])} | out tok/s {_fmt(row['otp'])} "
                  f"| {_coverage_only(row['case'])}")
    refused = [row for row in replayed if "error" in row]
    print(f"\nrefused or failed: {len(refused)} of {len(replayed)} replayed runs (summary and coverage)")
    print(f"\n## Excluded ({len(excluded)})\n")
    for case, reason in excluded:
        print(f"- {case['id']}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
