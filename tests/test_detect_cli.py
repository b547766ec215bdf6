"""``vllm-planner detect`` driven through ``clients.cli.main.main([...])``: replay, --agent, errors."""

from __future__ import annotations

import json

import pytest

from helpers.paths import CAPTURES, MIB
from helpers.paths import H100_CAPTURE as H100
from helpers.paths import H100_UUID as UUID
from clients.cli.main import main
from clients.sdk.testing import FakeAgent


def run_json(capsys, *argv: str) -> dict:
    assert main(["detect", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("variant,used_mib,free_mib", [("idle", 0, 81079), ("busy", 12967, 68113)])
def test_detect_json_replay(capsys, variant, used_mib, free_mib):
    out = run_json(capsys, "--replay", str(H100), "--replay-variant", variant)
    assert out["host"]["driver_version"] == "580.159.04" and out["host"]["cuda_driver_version"] == "13.0"
    (gpu,) = out["gpus"]
    assert gpu["name"] == "NVIDIA H100 80GB HBM3" and gpu["uuid"] == UUID
    assert gpu["memory_total_bytes"] == 81559 * MIB and gpu["memory_reserved_bytes"] == 480 * MIB
    assert gpu["memory_used_bytes"] == used_mib * MIB and gpu["memory_free_bytes"] == free_mib * MIB
    assert gpu["compute_capability"] == "9.0" and gpu["memory_cuda_total_bytes"] == 81079 * MIB


def test_detect_json_replay_nvml_source(capsys):
    out = run_json(capsys, "--replay", str(H100), "--replay-source", "nvml")
    assert out["source"] == "replay-nvml" and out["gpus"][0]["memory_total_bytes"] == 85520809984


def test_detect_json_from_agent(capsys):
    with FakeAgent.from_capture(CAPTURES / "a100-80gb-mig", "busy") as address:
        out = run_json(capsys, "--agent", address)
    assert [g["name"] for g in out["gpus"]] == ["NVIDIA A100-SXM4-80GB"] * 2
    assert [m["profile"] for m in out["gpus"][0]["mig_devices"]] == ["3g.40gb", "2g.20gb", "1g.10gb"]
    assert out["host"]["driver_version"] == "550.127.05" and out["host"]["cuda_driver_version"] == "12.4"


def test_detect_table(capsys):
    assert main(["detect", "--replay", str(CAPTURES / "h100-sxm-8x-nvswitch"), "--replay-variant", "busy"]) == 0
    out = capsys.readouterr().out
    assert "NVIDIA H100 80GB HBM3" in out and "GPU-5e1f0c3a-8b2d-4c6e-9f10-a1b2c3d4e507" in out
    assert "28/28 pairs over NVLink" in out and "91234" in out


def test_detect_errors_are_one_line(capsys, tmp_path):
    assert main(["detect", "--replay", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --replay:") and err.count("\n") == 1
    # Nothing listens on port 9: the agent is unavailable (exit 3), not a crash.
    assert main(["detect", "--agent", "127.0.0.1:9", "--timeout-seconds", "1"]) == 3
    assert capsys.readouterr().err.startswith("error:")


def test_detect_local_without_driver_reports_zero_gpus(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi either
    out = run_json(capsys, "--backend", "none")
    assert out["gpus"] == [] and out["source"] == "none" and out["status_reason"]
