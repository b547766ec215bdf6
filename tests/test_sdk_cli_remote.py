"""``vllm-planner plan --planner ADDR`` prints exactly what the embedded mode prints."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from clients.cli.errors import EXIT_UNAVAILABLE, EXIT_USER_ERROR
from clients.cli.main import main
from helpers.offline import offline_planner, run_cli
from helpers.paths import QWEN3_8B_CONFIG

@pytest.fixture(scope="module")
def address(tmp_path_factory):
    with offline_planner(tmp_path_factory.mktemp("hf-home"), token="cli-token") as address:
        yield address


def _run(argv: list[str], capsys) -> tuple[int, str, str]:  # noqa: ANN001
    return run_cli(main, argv, capsys)


def _profile(tmp_path: Path, config: Path) -> str:
    """A YAML profile with an inline config.json (the way private models are planned remotely)."""
    profile = tmp_path / "profile.yaml"
    profile.write_text(json.dumps({"model": {"model": "private-model", "config_json": json.loads(config.read_text())},
                                   "hardware": {"gpu": "H100", "num_gpus": 2}}))
    return str(profile)


@pytest.mark.parametrize(
    "argv",
    [
        ["--model", "meta-llama/Llama-3.1-8B-Instruct", "--gpu", "H100"],
        ["--model", "Qwen/Qwen3-32B", "--gpu", "A100-40GB", "--tp", "2", "--max-model-len", "32k", "--explain"],
        ["--model", "meta-llama/Llama-3.1-70B-Instruct", "--gpu", "L4"],  # does not fit: exit 1, fixes
        # the install enum crosses the wire (0.10-0.11: the image's FlashInfer sampler leaves more KV cache)
        ["--model", "Qwen/Qwen2.5-7B-Instruct", "--gpu", "L40S", "--vllm-version", "0.10.1", "--vllm-install", "image"],
    ],
)
def test_remote_json_output_equals_the_embedded_output(address, capsys, argv):
    embedded = _run(["plan", *argv, "--json"], capsys)
    remote = _run(["plan", *argv, "--json", "--planner", address, "--token", "cli-token"], capsys)
    assert remote == embedded
    assert json.loads(remote[1])["model"]["model"]


def test_remote_plan_answers_for_the_install_it_is_given(address, capsys):
    argv = ["plan", "--model", "Qwen/Qwen2.5-7B-Instruct", "--gpu", "L40S", "--vllm-version", "0.10.1", "--json",
            "--planner", address, "--token", "cli-token"]
    kv = {}
    for install in ("pip", "image"):
        code, out, _ = _run([*argv, "--vllm-install", install], capsys)
        assert code == 0
        kv[install] = json.loads(out)["feasibility"]["per_gpu"]["kv_cache_bytes"]
    # 256 x 152,064 logits warmed up with the PyTorch sort (38.5 B each) or FlashInfer's sampler (14 B)
    assert kv["image"] - kv["pip"] == pytest.approx((38.5 - 14.0) * 256 * 152064, abs=16)


def test_remote_report_equals_the_embedded_report(address, capsys, monkeypatch):
    argv = ["plan", "--model", "meta-llama/Llama-3.1-8B-Instruct", "--gpu", "H100", "--explain"]
    embedded = _run(argv, capsys)
    monkeypatch.setenv("VLLM_PLANNER_ADDRESS", address)  # the env twin of --planner
    monkeypatch.setenv("VLLM_PLANNER_TOKEN", "cli-token")
    remote = _run(argv, capsys)
    assert remote == embedded and remote[1]


def test_inline_config_from_a_profile_plans_remotely(address, capsys, tmp_path):
    argv = ["plan", "--profile", _profile(tmp_path, QWEN3_8B_CONFIG), "--json"]
    embedded = _run(argv, capsys)
    remote = _run([*argv, "--planner", address, "--token", "cli-token"], capsys)
    assert remote == embedded
    assert json.loads(remote[1])["model"]["source"] == "inline"


def test_remote_errors_are_one_line_and_a_non_zero_exit(address, capsys):
    code, out, err = _run(
        ["plan", "--model", "meta-llama/Llama-3.1-8B-Instruct", "--gpu", "NoSuchGPU-9000",
         "--planner", address, "--token", "cli-token"],
        capsys,
    )
    assert code == EXIT_USER_ERROR and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "NoSuchGPU-9000" in err

    code, _, err = _run(["plan", "--model", "/etc", "--gpu", "H100", "--planner", address, "--token", "cli-token"],
                        capsys)
    assert code == EXIT_USER_ERROR and err.startswith("error: ")

    code, _, err = _run(["plan", "--model", "meta-llama/Llama-3.1-8B-Instruct", "--gpu", "H100", "--planner", address],
                        capsys)
    assert code == EXIT_USER_ERROR and "token" in err  # no token: UNAUTHENTICATED


def test_an_unreachable_planner_exits_unavailable(capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, out, err = _run(["plan", "--model", "meta-llama/Llama-3.1-8B-Instruct", "--gpu", "H100",
                           "--planner", f"127.0.0.1:{port}"], capsys)
    assert code == EXIT_UNAVAILABLE and out == "" and err.startswith("error: ")


def test_remote_generate_writes_the_same_files_as_the_embedded_one(address, capsys, tmp_path):
    argv = ["generate", "--model", "Qwen/Qwen3-8B", "--gpu", "H100", "--gpus", "2"]
    here, there = tmp_path / "out-a", tmp_path / "out-b"
    embedded = _run([*argv, "--output-dir", str(here)], capsys)
    remote = _run([*argv, "--output-dir", str(there), "--planner", address, "--token", "cli-token"], capsys)
    assert remote[0] == embedded[0] == 0
    assert remote[1].replace("out-b", "out-a") == embedded[1] and remote[2] == embedded[2]
    written = sorted(p.name for p in here.iterdir())
    assert written and written == sorted(p.name for p in there.iterdir())
    for name in written:
        # profile.yaml records its own --output-dir; everything else must be byte-identical.
        assert (there / name).read_text().replace("out-b", "out-a") == (here / name).read_text(), name
