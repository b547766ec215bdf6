"""What a vllm-wizard (the seed CLI) user already has works here: its flags, spellings and profile files.

The profiles are written by the real ``vllm-wizard generate`` (vllm-wizard 0.2.0 from PyPI, a test
dependency), not by a copy of its format made for the test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from clients.cli.main import build_parser, main
from clients.cli.options import profile_from_args
from planner_service.engine.models import PolicyOptions

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
SEED_BIN = Path(sys.executable).parent / "vllm-wizard"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def request_for(*argv: str):
    return profile_from_args(build_parser().parse_args(["plan", *argv])).to_request()


def plan_json(capsys, *argv: str) -> tuple[int, dict, str]:
    code = main(["plan", *argv, "--json"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if captured.out else {}), captured.err


@pytest.mark.parametrize(
    ("flags", "section", "field", "value"),
    [
        (["--dtype", "fp16"], "model", "dtype", "float16"),
        (["--dtype", "bf16"], "model", "dtype", "bfloat16"),
        (["--dtype", "fp32"], "model", "dtype", "float32"),
        (["--kv-cache-dtype", "fp16"], "model", "kv_cache_dtype", "float16"),
        (["--kv-cache-dtype", "bf16"], "model", "kv_cache_dtype", "bfloat16"),
        (["--kv-cache-dtype", "fp8_e4m3fn"], "model", "kv_cache_dtype", "fp8_e4m3"),
        (["--kv-cache-dtype", "fp8_e5m2"], "model", "kv_cache_dtype", "fp8_e5m2"),
        (["-q", "none"], "model", "quantization", None),
        (["--interconnect", "unknown"], "hardware", "interconnect", None),
    ],
)
def test_seed_spellings_are_aliases_of_vllms(flags, section, field, value):
    request = request_for("-m", LLAMA_8B, "--gpu", "H100", *flags)
    assert getattr(getattr(request, section), field) == value


def test_fragmentation_factor_accepts_the_seed_multiplier_unambiguously():
    assert PolicyOptions(fragmentation_factor=1.15).fragmentation_factor == pytest.approx(1 - 1 / 1.15)
    assert PolicyOptions(fragmentation_factor=1.0).fragmentation_factor == 0.0  # x1: nothing unusable
    assert PolicyOptions(fragmentation_factor=0.15).fragmentation_factor == 0.15  # below 1: our fraction
    with pytest.raises(ValueError):
        PolicyOptions(fragmentation_factor=-0.1)


def test_the_seed_multiplier_shrinks_the_kv_cache_by_that_factor(capsys):
    _, plain, _ = plan_json(capsys, "-m", LLAMA_8B, "--gpu", "H100", "--max-model-len", "8k")
    code, seed, err = plan_json(capsys, "-m", LLAMA_8B, "--gpu", "H100", "--max-model-len", "8k",
                                "--fragmentation-factor", "1.15")
    assert code == 0, err
    ratio = seed["feasibility"]["per_gpu"]["kv_cache_bytes"] / plain["feasibility"]["per_gpu"]["kv_cache_bytes"]
    assert ratio == pytest.approx(1 / 1.15, rel=1e-6)


def test_a_profile_written_by_vllm_wizard_generate_plans(capsys, tmp_path):
    done = subprocess.run(
        [str(SEED_BIN), "generate", "-o", str(tmp_path / "seed"), "-m", LLAMA_8B, "--gpu", "A100 80GB",
         "--max-model-len", "8192", "--concurrency", "4", "--dtype", "bf16", "--kv-cache-dtype", "fp8_e4m3fn",
         "--gpu-memory-utilization", "0.85"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    profile = tmp_path / "seed" / "profile.yaml"
    written = yaml.safe_load(profile.read_text())
    assert written["profile_version"] == 1 and written["hardware"]["gpu_name"] == "A100 80GB"  # the seed's format
    code, reply, err = plan_json(capsys, "--profile", str(profile))
    assert code == 0, err
    assert reply["gpu"]["name"] == "A100 SXM 80GB" and reply["gpu"]["num_gpus"] == 1
    config = reply["config"]
    assert (config["max_model_len"], config["dtype"], config["kv_cache_dtype"]) == (8192, "bfloat16", "fp8_e4m3")
    assert config["gpu_memory_utilization"] == 0.85 and config["quantization"] is None
    # flags still override a seed profile, as they do ours
    code, reply, _ = plan_json(capsys, "--profile", str(profile), "--max-model-len", "4096")
    assert code == 0 and reply["config"]["max_model_len"] == 4096


def test_a_seed_profile_with_gpu_auto_detects(capsys, tmp_path):
    from helpers.paths import CAPTURES

    profile = tmp_path / "auto.yaml"
    profile.write_text(yaml.safe_dump({
        "profile_version": 1, "model": {"id": LLAMA_8B, "quantization": "none"},
        "hardware": {"gpu_name": "auto", "gpus": 2, "interconnect": "unknown", "tp_size": None},
        "workload": {"concurrency": 2, "streaming": True, "mode": "latency"},
        "outputs": {"emit": ["command"], "vllm_args": {"max_num_seqs": 32}},
    }))
    code, reply, err = plan_json(capsys, "--profile", str(profile), "--replay", str(CAPTURES / "h100-sxm-8x-nvswitch"))
    assert code == 0, err
    assert reply["gpu"]["name"] == "H100 SXM" and reply["gpu"]["num_gpus"] == 2
    assert reply["config"]["max_num_seqs"] == 32


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"profile_version": 7, "model": {"id": LLAMA_8B}}, "profile_version"),
        ({"profile_version": 1, "model": {"id": LLAMA_8B}, "outputs": {"vllm_args": {"swap_space": 4}}},
         "outputs.vllm_args.swap_space"),
        ({"profile_version": 1, "model": {"id": LLAMA_8B}, "hardware": {"gpu_nam": "H100"}}, "hardware.gpu_nam"),
    ],
)
def test_bad_seed_profiles_name_the_field(capsys, tmp_path, doc, field):
    profile = tmp_path / "p.yaml"
    profile.write_text(yaml.safe_dump(doc))
    code = main(["plan", "--profile", str(profile), "--gpu", "H100"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and field in err


def test_max_context_at_concurrency_in_json_and_report(capsys):
    code, reply, _ = plan_json(capsys, "-m", LLAMA_8B, "--gpu", "L4", "-c", "8", "--max-model-len", "32k")
    assert code == 0
    f = reply["feasibility"]
    # 8 requests of that length fit the KV blocks; one block more each would not
    per_request = -(-f["max_context_at_concurrency"] // f["block_size"])
    assert 8 * per_request <= f["num_gpu_blocks"] - 1 < 8 * (per_request + 1)
    assert 0 < f["max_context_at_concurrency"] <= 32000
    code = main(["plan", "-m", LLAMA_8B, "--gpu", "L4", "-c", "8", "--max-model-len", "32k"])
    line = next(x for x in capsys.readouterr().out.splitlines() if "max context at target concurrency" in x)
    assert line.split()[-1] == f"{f['max_context_at_concurrency']:,}"


def test_headroom_below_the_requested_headroom_warns(capsys):
    code, reply, _ = plan_json(capsys, "-m", LLAMA_8B, "--gpu", "L4", "--max-model-len", "32k", "-c", "4",
                               "--headroom-gb", "40")
    assert code == 0
    assert any("below the requested --headroom-gb 40" in w for w in reply["feasibility"]["warnings"])
    _, reply, _ = plan_json(capsys, "-m", LLAMA_8B, "--gpu", "L4", "--max-model-len", "32k", "-c", "4",
                            "--headroom-gb", "0.1")
    assert not any("--headroom-gb" in w for w in reply["feasibility"]["warnings"])


def test_generate_prints_the_plan_report_then_the_files(capsys, tmp_path):
    code = main(["generate", "-m", LLAMA_8B, "--gpu", "H100", "-o", str(tmp_path), "--emit", "command"])
    out = capsys.readouterr().out
    assert code == 0
    assert "will start" in out and "KV cache tokens" in out and "Launch command" in out
    assert out.rstrip().splitlines()[-1] == f"wrote {tmp_path / 'serve_command.sh'}"


@pytest.mark.parametrize(("program", "argv"), [("vllm-planner", []), ("vllm-planner-service", []),
                                               ("gpu-agent", [])])
def test_version_on_all_three_commands(program, argv):
    done = subprocess.run([str(Path(sys.executable).parent / program), "--version", *argv], capture_output=True,
                          text=True, timeout=60)
    from importlib.metadata import version

    assert done.returncode == 0 and done.stdout.strip() == f"{program} {version('vllm-fleet-planner')}"
