"""``vllm-planner plan`` driven through ``clients.cli.main.main`` (real parser, real twin, real report)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clients.cli.main import build_parser, main
from clients.cli.options import parse_human_int, parse_max_model_len, profile_from_args
from planner_service.engine.models import PlanRequest

ROOT = Path(__file__).resolve().parents[1]
LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
LLAMA_70B = "meta-llama/Llama-3.1-70B-Instruct"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def request_for(*argv: str) -> PlanRequest:
    args = build_parser().parse_args(["plan", *argv])
    return profile_from_args(args).to_request()


@pytest.mark.parametrize(
    ("text", "value"),
    [("32768", 32768), ("32k", 32000), ("32K", 32768), ("128K", 131072), ("25.6k", 25600), ("1m", 10**6)],
)
def test_human_readable_ints_like_vllm(text, value):
    assert parse_human_int(text) == value
    assert parse_max_model_len(text) == value


def test_max_model_len_auto_and_bad_values():
    assert parse_max_model_len("auto") == "auto"
    assert parse_max_model_len("-1") == "auto"
    for bad in ("1.5K", "12x", "", "k"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_human_int(bad)


def test_every_flag_reaches_the_request_as_given():
    request = request_for(
        "-m", LLAMA_8B, "--revision", "main", "--trust-remote-code", "--dtype", "float16", "-q", "fp8",
        "--kv-cache-dtype", "fp8_e4m3", "--max-model-len", "32K", "--params-b", "8.1",
        "--gpu", "H100", "--gpus", "8", "--vram-gb", "79.2", "--interconnect", "pcie", "--tp", "2", "--pp", "2",
        "--dp", "2", "--enable-expert-parallel", "--free-memory-gb", "70",
        "--prompt-tokens", "4000", "--gen-tokens", "300", "-c", "12", "--batching-mode", "latency",
        "--gpu-memory-utilization", "0.85", "--overhead-gb", "0.5", "--fragmentation-factor", "0.05",
        "--headroom-gb", "2",
        "--no-enable-prefix-caching", "--max-num-seqs", "64", "--max-num-batched-tokens", "16k", "--enforce-eager",
        "--kv-cache-memory-bytes", "20g", "--vllm-version", "0.33.0", "--block-size", "32", "--vllm-install", "image",
    )
    assert request.model_dump(mode="json") == {
        "model": {"model": LLAMA_8B, "revision": "main", "trust_remote_code": True, "dtype": "float16",
                  "quantization": "fp8", "kv_cache_dtype": "fp8_e4m3", "max_model_len": 32768, "params_b": 8.1,
                  "config_json": None},
        "hardware": {"gpu": "H100", "num_gpus": 8, "vram_gb": 79.2, "interconnect": "pcie",
                     "tensor_parallel_size": 2, "pipeline_parallel_size": 2, "data_parallel_size": 2,
                     "enable_expert_parallel": True,
                     "free_memory_bytes": 70 << 30},
        "workload": {"prompt_tokens": 4000, "gen_tokens": 300, "concurrency": 12, "batching_mode": "latency"},
        "policy": {"gpu_memory_utilization": 0.85, "overhead_gb": 0.5, "fragmentation_factor": 0.05,
                   "headroom_gb": 2.0},
        "engine": {"vllm_version": "0.33.0", "max_num_seqs": 64, "max_num_batched_tokens": 16000,
                   "enable_prefix_caching": False, "enforce_eager": True, "kv_cache_memory_bytes": 20 * 10**9,
                   "block_size": 32, "vllm_install": "image"},
    }


def test_unset_flags_stay_none():
    request = request_for("-m", LLAMA_8B)
    assert request == PlanRequest.model_validate({"model": {"model": LLAMA_8B}})
    assert request.hardware.tensor_parallel_size is None and request.engine.enable_prefix_caching is None


def test_json_is_exactly_one_object(capsys):
    code, out, err = run_cli(capsys, "plan", "-m", LLAMA_8B, "--gpu", "H100", "--max-model-len", "32k", "--json")
    assert code == 0, err
    plan = json.loads(out)  # the whole of stdout is one JSON document
    assert plan["config"]["max_model_len"] == 32000
    feasibility = plan["feasibility"]
    assert feasibility["fits"] is True and feasibility["error"] is None
    assert set(feasibility["per_gpu"]) == {
        "total_bytes", "budget_bytes", "weights_bytes", "activation_peak_bytes", "non_torch_bytes",
        "cuda_graph_bytes", "kv_cache_bytes",
    }
    for key in ("oom_risk", "warnings", "kv_cache_tokens", "num_gpu_blocks", "block_size", "max_concurrency",
                "max_concurrency_at_tokens", "estimated_max_model_len"):
        assert key in feasibility
    assert set(plan["artifacts"]) == {"serve_command", "docker_run", "docker_compose", "kubernetes", "helm_values"}
    assert plan["performance"]["itl_seconds"]["expected"] > 0
    assert "--max-model-len 32000" in plan["artifacts"]["serve_command"]


def test_kv_cache_memory_bytes_binary_suffix_reaches_the_plan(capsys):
    code, out, _ = run_cli(capsys, "plan", "-m", LLAMA_8B, "--gpu", "H100", "--kv-cache-memory-bytes", "20G", "--json")
    plan = json.loads(out)
    assert code == 0
    assert plan["config"]["kv_cache_memory_bytes"] == 20 * 2**30
    assert f"--kv-cache-memory-bytes {20 * 2**30}" in plan["artifacts"]["serve_command"]


def test_validation_error_is_one_line_naming_the_field(capsys):
    code, out, err = run_cli(capsys, "plan", "-m", LLAMA_8B, "--gpu-memory-utilization", "1.5")
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert err.startswith("error: --gpu-memory-utilization:")  # the flag the user typed, not the field path


def test_bad_vllm_install_is_one_line_naming_the_flag(capsys):
    code, out, err = run_cli(capsys, "plan", "-m", LLAMA_8B, "--gpu", "H100", "--vllm-install", "docker")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: --vllm-install:") and "image" in err


def test_profile_unknown_key_names_the_dotted_path(capsys, tmp_path):
    profile = tmp_path / "p.yaml"
    profile.write_text(f"model:\n  model: {LLAMA_8B}\nhardware:\n  tensor_paralel_size: 2\n")
    code, _, err = run_cli(capsys, "plan", "--profile", str(profile))
    assert code == 2
    assert err == f"error: {profile}: hardware.tensor_paralel_size: unknown key\n"


def test_missing_profile_file_is_one_line(capsys, tmp_path):
    code, _, err = run_cli(capsys, "plan", "-p", str(tmp_path / "nope.yaml"))
    assert code == 2 and "nope.yaml" in err and err.count("\n") == 1


def test_flags_override_the_profile(capsys, tmp_path):
    profile = tmp_path / "p.yaml"
    profile.write_text(
        f"model: {{model: {LLAMA_70B}, max_model_len: 8192}}\n"
        "hardware: {gpu: H100, num_gpus: 4, tensor_parallel_size: 4}\n"
        "outputs: {json: true}\n"
    )
    code, out, _ = run_cli(capsys, "plan", "-p", str(profile), "--tp", "2")
    plan = json.loads(out)  # outputs.json from the profile applies
    assert code == 0
    assert plan["config"]["tensor_parallel_size"] == 2
    assert plan["config"]["max_model_len"] == 8192


def test_report_renders_without_a_terminal(capsys):
    code, out, _ = run_cli(capsys, "plan", "-m", LLAMA_8B, "--gpu", "H100", "-c", "8")
    assert code == 0
    assert "will start" in out
    assert "Per-GPU memory" in out and "█" in out and "weights" in out and "KV cache" in out
    assert "Performance at concurrency 8" in out and "ITL (ms)" in out
    assert f"vllm serve {LLAMA_8B}" in out
    assert max(len(line) for line in out.splitlines() if not line.startswith("vllm serve")) <= 100


def test_explain_shows_the_reasons(capsys):
    _, plain, _ = run_cli(capsys, "plan", "-m", LLAMA_8B, "--gpu", "H100")
    _, explained, _ = run_cli(capsys, "plan", "-m", LLAMA_8B, "--gpu", "H100", "--explain")
    assert "why" not in plain
    assert "why" in explained and "derived from config.json" in explained
    assert "steady state of a closed loop" in explained  # performance assumptions are listed


def test_plan_that_does_not_fit_exits_1_with_vllms_error(capsys):
    code, out, _ = run_cli(capsys, "plan", "-m", LLAMA_70B, "--gpu", "H100", "--tp", "1")
    assert code == 1
    assert "will not start" in out and "No available memory for the cache blocks" in out
    code, out, _ = run_cli(capsys, "plan", "-m", LLAMA_70B, "--gpu", "H100", "--tp", "1", "--json")
    assert code == 1 and json.loads(out)["feasibility"]["fits"] is False


def test_installed_entry_point_in_a_subprocess():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("VLLM_PLANNER_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "clients.cli.main", "plan", "-m", LLAMA_8B, "--gpu", "H100", "--json"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model"]["model"] == LLAMA_8B
