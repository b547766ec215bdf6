"""Accuracy of the memory twin against real vLLM startup logs (the calibration table).

Run: ``.venv/bin/python benchmarks/accuracy.py``. How to read the output: one row per included case with
predicted vs reported weights ("Model loading took", GiB), available KV memory (GiB), KV-cache tokens and
max concurrency, and whether vLLM started; ``err`` columns are predicted - reported (GiB) or relative
error (%). The summary gives median / worst absolute errors; acceptance is weights within 2 %, KV memory
within 0.5 GiB median / 1.5 GiB worst, tokens and concurrency within 3 % median, and every start /
refusal predicted right. Excluded cases are listed with the reason. Nothing here is fitted per case:
each case only supplies what its log states (or its ``assumed_defaults``), plus, where a version rule
needs it, what the log implies about the machine (the ``why`` column says so: the interconnect between
TP ranks, which decides whether 0.10.x counts NCCL's NVLink buffers).

How vLLM was installed is an input (``engine.vllm_install``, ``--vllm-install``): on 0.10-0.11 the V1
sampler uses FlashInfer whenever the ``flashinfer`` package imports - the vllm/vllm-openai image builds it
in (its Dockerfile), ``pip install vllm`` of those releases does not - about 1 GiB less activation at
256 x 152k logits. No log here states its install, so the table runs the default (pip), as the H100 logs
behave (llm-d 0.11, gpt-oss 0.10.1); the four Qwen2-7B A100 runs of one Kubernetes source behave like the
image and are the worst rows for that reason: the "install what-if" lines after the table rerun them
with ``vllm_install=image``.
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from planner_service.engine.models import (  # noqa: E402
    GIB, EngineOptions, HardwareOptions, Interconnect, ModelOptions, PlanRequest, PlanResponse, PolicyOptions,
    VllmInstall,
)
from planner_service.engine.gpus import lookup_gpu  # noqa: E402
from planner_service.engine.plan import build_plan  # noqa: E402
from planner_service.engine.profiles import resolve_profile  # noqa: E402
from planner_service.engine.source import ModelSource  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures" / "engine"


def load_config(name: str) -> dict:
    return json.loads((FIXTURES / "model-configs" / name / "config.json").read_text())


def _awq(bits: int = 4, group: int = 128) -> dict:
    return {"quant_method": "awq", "bits": bits, "group_size": group, "zero_point": True, "version": "gemm"}


def _ct_w4a16(group: int, symmetric: bool, ignore: list[str]) -> dict:
    return {
        "quant_method": "compressed-tensors", "format": "pack-quantized", "ignore": ignore,
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
            "num_bits": 4, "type": "int", "strategy": "group", "group_size": group, "symmetric": symmetric}}},
    }


def _with(base: str, **updates) -> dict:
    cfg = load_config(base)
    cfg.update(updates)
    return cfg


# Configs built from the cases' notes where no verified config.json exists (sizes are the published ones).
def _qwen25_14b_awq() -> dict:
    return {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 5120,
            "intermediate_size": 13824, "num_hidden_layers": 48, "num_attention_heads": 40,
            "num_key_value_heads": 8, "vocab_size": 152064, "max_position_embeddings": 32768,
            "torch_dtype": "float16", "tie_word_embeddings": False, "quantization_config": _awq()}


def _llava15_7b_awq() -> dict:
    return {"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
            "text_config": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
                            "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
                            "vocab_size": 32064, "max_position_embeddings": 4096},
            "vision_config": {"hidden_size": 1024, "num_hidden_layers": 24, "intermediate_size": 4096},
            "torch_dtype": "float16", "quantization_config": _awq()}


@dataclass(frozen=True)
class Case:
    id: str
    config: dict
    gpu: str
    version: str
    why: str  # how the case maps onto the twin's inputs
    request: dict = field(default_factory=dict)  # extra PlanRequest settings (stated or assumed defaults)


def included_cases() -> list[Case]:
    """Every case the acceptance table uses, with the settings its log states (or its assumed defaults)."""
    q2 = load_config("Qwen/Qwen2-7B-Instruct")
    llama = load_config("meta-llama/Llama-3.1-8B-Instruct")
    # The dl22 runs (one Kubernetes cluster) do not say whether their A100s are SXM (NVLink) or PCIe cards.
    # On 0.10.x NCCL's buffers count in the profile; over NVLink they take ~1.6 GiB per rank, while these
    # TP2 runs use 0.12 GiB more than TP1 in all: their ranks did not talk over NVLink, so PCIe is stated.
    pcie = {"interconnect": Interconnect.PCIE}
    return [
        Case("dl22-qwen2-7b-a100-80g-tp1-gmu025", q2, "A100 80GB", "0.10.1", "as logged"),
        Case("dl22-qwen2-7b-a100-80g-tp1-gmu050", q2, "A100 80GB", "0.10.1", "as logged"),
        Case("dl22-qwen2-7b-a100-80g-tp2-gmu025", q2, "A100 80GB", "0.10.1",
             "as logged; PCIe between the two ranks (form factor not logged, see above)", pcie),
        Case("dl22-qwen2-7b-a100-80g-tp2-gmu050", q2, "A100 80GB", "0.10.1",
             "as logged; PCIe between the two ranks (form factor not logged, see above)", pcie),
        Case("dl22-qwen2-7b-a100-40g-tp2-2nodes-gmu050", q2, "A100 40GB", "0.10.1",
             "TP across two nodes (Ray): no NVLink between the ranks; the network transport's own non-torch "
             "memory is not modelled", pcie),
        Case("llmd-llama31-8b-h100", llama, "H100 80GB HBM3", "0.11.0", "as logged"),
        Case("llmd-qwen3-0.6b-h100", load_config("Qwen/Qwen3-0.6B"), "H100 80GB HBM3", "0.11.0", "as logged"),
        Case("vllm23278-gpt-oss-120b-h100-default", load_config("openai/gpt-oss-120b"), "H100 80GB HBM3", "0.10.1",
             "version from log line numbers (0.10.1); gmu 0.9 and max_model_len 131072 per assumed_defaults",
             {"gpu_memory_utilization": 0.9}),
        Case("duotalk-qwen25-14b-awq-a5000", _qwen25_14b_awq(), "RTX A5000", "0.13.0",
             "config built from Qwen2.5-14B sizes + AWQ 4-bit g128; gmu 0.9 per assumed_defaults",
             {"gpu_memory_utilization": 0.9}),
        Case("imageworks-llava15-7b-awq-4080-freemem-fail", _llava15_7b_awq(), "RTX 4080", "0.10.2",
             "free memory 13.58 GiB at startup (stated)", {"free_memory_bytes": int(13.58 * GIB)}),
        Case("imageworks-llava15-7b-awq-4080-gmu085", _llava15_7b_awq(), "RTX 4080", "0.10.2",
             "free memory 14.66 GiB at startup (stated)", {"free_memory_bytes": int(14.66 * GIB)}),
        Case("idx-qwen3-next-w4a16-2xl40s-tp2-fp8kv",
             _with("Qwen/Qwen3-Next-80B-A3B-Instruct", quantization_config=_ct_w4a16(
                 32, True, ["lm_head", "re:.*mlp.gate$", "re:.*shared_expert_gate$", "re:.*linear_attn.*",
                             "re:.*self_attn.*", "re:.*shared_expert.*"])),
             "L40S", "0.13.0",
             "W4A16 MoE checkpoint (exact repo not logged): experts 4-bit g32, attention/GDN/shared experts 16-bit "
             "(assumed format; the group size is the one consistent with the logged weights); "
             "prefix caching disabled by 0.13 for this hybrid"),
        Case("idx-qwen25-7b-awq-rtx4080-v026",
             _with("Qwen/Qwen2.5-7B-Instruct", torch_dtype="float16", quantization_config=_awq()),
             "RTX 4080", "0.26.0", "Qwen2.5-7B config + the AWQ repo's quantization_config (4-bit g128, fp16)",
             {"free_memory_bytes": int(14.69 * GIB)}),
        Case("idx-qwen3-8b-rtx5090-len32768-gmu092", load_config("Qwen/Qwen3-8B"), "RTX 5090", "0.25.1",
             "version not stated; log line numbers match the 0.25.1 logs (CUDA-graph profiling era)"),
        Case("anton-qwen3-30b-a3b-thinking-awq-3090-len2048",
             _with("Qwen/Qwen3-30B-A3B", quantization_config=_ct_w4a16(
                 128, True, ["lm_head", "re:.*mlp.gate$"])),
             "RTX 3090", "0.10.0", "Qwen3-30B-A3B config + compressed-tensors AWQ int4 (assumed group 128, all linears; checkpoint "
             "config not available)"),
        Case("vllmpr20665-deepseek-v2-lite-4xl4-tp2-pp2", load_config("deepseek-ai/DeepSeek-V2-Lite"), "L4", "0.10.0",
             "main build of 2025-07-09 (V1, two weeks before 0.10.0) mapped to the 0.10 profile; gmu 0.9 assumed",
             {"gpu_memory_utilization": 0.9}),
        Case("vllm21348-qwen3-235b-fp8-4xh100-tp4", load_config("Qwen/Qwen3-235B-A22B-FP8"), "H100", "0.10.0",
             "version not logged (issue of 2025-07-22: 0.9.2 or 0.10.0, both V1 with the baseline snapshot taken "
             "before NCCL); gmu 0.9 and max_model_len 40960 per assumed_defaults; the LMCache connector's own "
             "memory is not modelled", {"gpu_memory_utilization": 0.9, "max_model_len": 40960}),
    ]


EXCLUDED: dict[str, str] = {
    "llmd-mistral-small-3.2-24b-h100": (
        "no verified config.json, and vLLM did not read one: the run used the Mistral-format loader "
        "(--config-format/--load-format mistral: params.json + consolidated weights) of the multimodal "
        "Mistral3 model; its printed activation peak (2.12 GiB) is under half of what the same build "
        "printed for text models at the same batch settings"
    ),
    "vllm10517-llama31-8b-3090-20k": "V0 engine (log format of v0.6.4)",
    "vllm10517-llama31-8b-3090-29k": "V0 engine",
    "vllm10517-llama31-8b-3090-35k": "V0 engine, partial log",
    "vllmpr12569-llama31-70b-w8a8-len2048": "pre-0.10 dev build (~0.7.1), GPU not named",
    "vllmpr10511-llama3-8b-80g-tp1": "pre-0.10 dev build (0.6.4-0.6.5)",
    "vllmpr10511-llama3-8b-80g-tp2": "pre-0.10 dev build (0.6.4-0.6.5)",
    "vllm13061-r1-distill-qwen14b-2x4090-tp2": "V0 engine (~v0.7.2)",
    "lmcache1739-qwen3-14b-1gpu-32k": "GPU and gpu_memory_utilization not stated",
    "vllmpr29796-olmo3-7b-len6144": "GPU, version and gmu not stated; no verified Olmo-3 config",
    "vllmpr29796-olmo3-7b-len34048": "GPU, version and gmu not stated; no verified Olmo-3 config",
    "vllm6746-llama31-405b-fp8-8xh100": "0.5.3 (V0)",
    "armlp-mistral7b-gptq-dgxspark-gb10": "unified-memory GB10 (DGX Spark)",
    "orbit-gemma3-4b-mi300x": "AMD ROCm",
    "dgxspark-gemma4-26b-a4b-awq-int4-len262k": "unified-memory GB10 (DGX Spark)",
    "dgxspark-gemma4-26b-a4b-nvfp4-len262k": "unified-memory GB10 (DGX Spark)",
    "dgxspark-qwen36-35b-a3b-nvfp4-mtp-len262k": "unified-memory GB10 (DGX Spark)",
    "dgxspark-qwen38-27b-int4-mtp-len262k": "unified-memory GB10 (DGX Spark)",
    "dgxspark-laguna-s21-int4-dflash-len65536": "unified-memory GB10 (DGX Spark)",
    "dgxspark-laguna-s21-int4-dflash-len262k-fail": "unified-memory GB10 (DGX Spark)",
    "t4-qwen3vl-embedding-2b-pooling-flexattn": "pooling (embedding) run, custom build",
    "t4-qwen3vl-embedding-2b-pooling-xformers-nochunk": "pooling (embedding) run, custom build",
    "arno-qwen25-7b-rocm-len4096": "AMD ROCm",
    "vllmrouter-gptoss20b-abliterated-gb10-gmu025": "unified-memory GB10",
    "apollo-r1-distill-qwen14b-awq-rx9070xt": "AMD Radeon (ROCm)",
    "vca-qwen3-vl-30b-a3b-2xh100-tp2-len65536": "multimodal encoder profile (vision tower activation) not modelled; "
                                                 "no verified Qwen3-VL config",
    "meetingtranslator-qwen36-27b-fp8-h100-eager": "no config for Qwen3.6-27B (hybrid GDN layout unknown)",
    "idx-gemma3-27b-rocm-len4096": "AMD ROCm",
    "idx-gemma3-1b-it-offline-len2048": "GPU not named",
    "idx-qwen3-30b-a3b-fp8-gb10-gmu03-fp8kv": "unified-memory GB10",
    "idx-glm51-fp8-8xh200-tp8-eager": "no config for GLM-5.1 (MLA + DSA indexer)",
}


def load_log_cases() -> dict[str, dict]:
    data = json.loads((FIXTURES / "vllm-startup-logs.json").read_text())
    return {c["id"]: c for c in data["cases"]}


def vllm_default_max_num_seqs(gpu_name: str, version: str | None) -> int:
    """What ``vllm serve`` runs without --max-num-seqs (the planner's own recommendation follows the KV
    capacity instead, so a run that set nothing must say so explicitly)."""
    gpu = lookup_gpu(gpu_name)
    return resolve_profile(version).batch_defaults(gpu.name, gpu.memory_total_bytes).max_num_seqs


def request_for(case: Case, log: dict) -> PlanRequest:
    extra = dict(case.request)
    gmu = log.get("gpu_memory_utilization") or extra.pop("gpu_memory_utilization", None)
    extra.pop("gpu_memory_utilization", None)
    free = extra.pop("free_memory_bytes", None)
    interconnect = extra.pop("interconnect", None)
    max_len = log.get("max_model_len") or extra.pop("max_model_len", None)
    extra.pop("max_model_len", None)
    dtype = log.get("dtype")
    dtype = "float16" if dtype and "float16" in dtype else ("bfloat16" if dtype == "bfloat16" else "auto")
    kv = log.get("kv_cache_dtype")
    # A log without max_num_seqs ran vLLM's default: say so, rather than leave it to the planner, whose
    # recommendation is sized to the KV capacity (recommend_batching) and need not be vLLM's default.
    default_mns = vllm_default_max_num_seqs(case.gpu, case.version)
    return PlanRequest(
        model=ModelOptions(model=case.id, dtype=dtype, kv_cache_dtype=kv if kv else None,
                           max_model_len=max_len),
        hardware=HardwareOptions(gpu=case.gpu, tensor_parallel_size=log.get("tp") or 1,
                                 pipeline_parallel_size=log.get("pp") or 1, free_memory_bytes=free,
                                 interconnect=interconnect),
        policy=PolicyOptions(gpu_memory_utilization=gmu),
        engine=EngineOptions(
            vllm_version=case.version, max_num_seqs=log.get("max_num_seqs") or default_mns,
            max_num_batched_tokens=log.get("max_num_batched_tokens"),
            enable_prefix_caching=log.get("enable_prefix_caching"), enforce_eager=bool(log.get("enforce_eager")),
            block_size=log.get("block_size_setting"),
        ),
    )


@dataclass
class Row:
    id: str
    started: bool
    predicted_fits: bool
    weights: tuple[float, float | None]  # (predicted GiB, reported GiB)
    kv: tuple[float, float | None]
    tokens: tuple[int, int | None]
    concurrency: tuple[float, float | None]
    error: str | None


def run_case(case: Case, log: dict) -> tuple[Row, PlanResponse]:
    plan = build_plan(ModelSource(model=case.id, source="inline", config=case.config), request_for(case, log))
    rep, f = log["reported"], plan.feasibility
    row = Row(
        id=case.id, started=bool(log["startup_ok"]), predicted_fits=f.fits,
        weights=(f.per_gpu.weights_bytes / GIB, rep.get("weights_gib")),
        kv=(f.per_gpu.kv_cache_bytes / GIB, rep.get("available_kv_cache_gib")),
        tokens=(f.kv_cache_tokens, rep.get("kv_cache_tokens")),
        concurrency=(f.max_concurrency, rep.get("max_concurrency")),
        error=f.error,
    )
    return row, plan


def recommend_for(case: Case, log: dict) -> PlanResponse:
    """What the planner recommends for the case's model, GPU type and GPU count when nothing else is set."""
    request = PlanRequest(
        model=ModelOptions(model=case.id),
        hardware=HardwareOptions(gpu=case.gpu, num_gpus=log.get("num_gpus") or 1,
                                 free_memory_bytes=case.request.get("free_memory_bytes")),
        engine=EngineOptions(vllm_version=case.version),
    )
    return build_plan(ModelSource(model=case.id, source="inline", config=case.config), request)


def recommendation_table() -> list[tuple[str, PlanResponse]]:
    logs = load_log_cases()
    return [(case.id, recommend_for(case, logs[case.id])) for case in included_cases()]


def run_table() -> list[Row]:
    logs = load_log_cases()
    return [run_case(case, logs[case.id])[0] for case in included_cases()]


def install_what_if() -> list[tuple[str, float, float]]:
    """(case, KV error with pip, KV error with the image) for the started 0.10-0.11 rows that print KV."""
    logs, out = load_log_cases(), []
    for case in included_cases():
        log = logs[case.id]
        reported = log["reported"].get("available_kv_cache_gib")
        if not case.version.startswith(("0.10.", "0.11.")) or reported is None or not log["startup_ok"]:
            continue
        errors = []
        for install in (VllmInstall.PIP, VllmInstall.IMAGE):
            request = request_for(case, log)
            request = request.model_copy(update={"engine": request.engine.model_copy(update={"vllm_install": install})})
            plan = build_plan(ModelSource(model=case.id, source="inline", config=case.config), request)
            errors.append(plan.feasibility.per_gpu.kv_cache_bytes / GIB - reported)
        out.append((case.id, errors[0], errors[1]))
    return out


def _rel(pair) -> float | None:
    pred, rep = pair
    return None if rep in (None, 0) else (pred - rep) / rep


def summarize(rows: list[Row]) -> dict[str, float]:
    w = [abs(_rel(r.weights)) for r in rows if r.weights[1] is not None]
    kv = [abs(r.kv[0] - r.kv[1]) for r in rows if r.kv[1] is not None and r.started]
    tok = [abs(_rel(r.tokens)) for r in rows if r.tokens[1] and r.started]
    conc = [abs(_rel(r.concurrency)) for r in rows if r.concurrency[1] and r.started]
    return {
        "weights_rel_median": statistics.median(w), "weights_rel_worst": max(w),
        "kv_gib_median": statistics.median(kv), "kv_gib_worst": max(kv),
        "tokens_rel_median": statistics.median(tok), "tokens_rel_worst": max(tok),
        "concurrency_rel_median": statistics.median(conc), "concurrency_rel_worst": max(conc),
        "start_mismatches": sum(r.started != r.predicted_fits for r in rows),
        "cases": len(rows),
    }


def _fmt(pair, spec: str) -> str:
    pred, rep = pair
    return f"{pred:{spec}} / " + ("-" if rep is None else f"{rep:{spec}}")


def main() -> None:
    rows = run_table()
    print(__doc__.split("\n\n")[1])
    print()
    print(f"{'case':48} {'start p/r':9} {'weights GiB p/r':>17} {'KV GiB p/r':>15} {'errKV':>6} "
          f"{'tokens p/r':>21} {'conc p/r':>17}")
    for r in rows:
        err = "" if r.kv[1] is None else f"{r.kv[0] - r.kv[1]:+.2f}"
        print(f"{r.id[:48]:48} {int(r.predicted_fits)}/{int(r.started):7} {_fmt(r.weights, '.2f'):>17} "
              f"{_fmt(r.kv, '.2f'):>15} {err:>6} {_fmt(r.tokens, 'd'):>21} {_fmt(r.concurrency, '.2f'):>17}")
        if r.error:
            print(f"{'':48}   error: {r.error[:150]}")
    s = summarize(rows)
    print()
    print(f"weights: median {s['weights_rel_median']:.2%}, worst {s['weights_rel_worst']:.2%} (bound 2%)")
    print(f"available KV: median {s['kv_gib_median']:.2f} GiB, worst {s['kv_gib_worst']:.2f} GiB (bounds 0.5 / 1.5)")
    print(f"KV tokens: median {s['tokens_rel_median']:.2%}, worst {s['tokens_rel_worst']:.2%} (median bound 3%)")
    print(f"concurrency: median {s['concurrency_rel_median']:.2%}, worst {s['concurrency_rel_worst']:.2%}")
    print(f"start/refuse mismatches: {s['start_mismatches']} of {s['cases']} cases")
    print("\ninstall what-if (0.10-0.11 rows rerun with --vllm-install image: FlashInfer's sampler warm-up):")
    for cid, pip_err, image_err in install_what_if():
        print(f"  {cid[:48]:48} errKV pip {pip_err:+.2f}  image {image_err:+.2f}")
    print("\nRecommended configuration per case (same model, GPU type, GPU count and vLLM version; every other")
    print("setting left to the planner). 'fits' and the KV figures are the twin's prediction for that configuration.")
    print(f"{'case':48} {'TP':>3} {'PP':>3} {'max_len':>8} {'kv dtype':>9} {'util':>5} {'MNS':>5} {'MNBT':>6} "
          f"{'fits':>5} {'KV tokens':>10} {'conc':>8}")
    for cid, plan in recommendation_table():
        c, f = plan.config, plan.feasibility
        print(f"{cid[:48]:48} {c.tensor_parallel_size:>3} {c.pipeline_parallel_size:>3} {c.max_model_len:>8} "
              f"{c.kv_cache_dtype:>9} {c.gpu_memory_utilization:>5.2f} {c.max_num_seqs:>5} "
              f"{c.max_num_batched_tokens:>6} {str(f.fits):>5} {f.kv_cache_tokens:>10} {f.max_concurrency:>8.2f}")
    print(f"\nexcluded ({len(EXCLUDED)}):")
    for cid, why in EXCLUDED.items():
        print(f"  {cid}: {why}")


if __name__ == "__main__":
    main()
