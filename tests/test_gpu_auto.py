"""``--gpu auto`` (the default with no --gpu/--vram-gb): the user's own GPUs, read as the gpu-agent reads them.

CI has no GPU, so detection is driven through the agent's recorded-capture replay backends (the same
nvidia-smi / NVML parsing and conversion as on a live host), through a real in-process gpu-agent
(``--agent``), and through the no-GPU path of this machine's own backends.
"""

from __future__ import annotations

import json

import pytest

from clients.cli.main import main
from clients.sdk.testing import FakeAgent
from gpu_agent.factory import live_backend
from gpu_agent.watchdog import CallGuard
from helpers.paths import CAPTURES, H100_CAPTURE

GIB = 1 << 30
MIB = 1 << 20
LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
H100_8X = CAPTURES / "h100-sxm-8x-nvswitch"
A100_MIG = CAPTURES / "a100-80gb-mig"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def plan_json(capsys, *argv: str) -> tuple[int, dict, str]:
    code = main(["plan", "-m", LLAMA_8B, "--json", *argv])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if captured.out else {}), captured.err


def _gpu_note(reply: dict) -> str:
    return next(e["reason"] for e in reply["explanations"] if e["setting"] == "gpu")


def _host_has_gpus() -> bool:
    return bool(live_backend("auto", call_timeout_seconds=5).collect(CallGuard(10)).gpus)


def test_replayed_idle_host_plans_for_all_its_gpus_with_their_real_memory(capsys):
    code, reply, err = plan_json(capsys, "--replay", str(H100_8X))
    assert code == 0, err
    assert reply["gpu"]["name"] == "H100 SXM" and reply["gpu"]["num_gpus"] == 8
    assert reply["gpu"]["memory_total_bytes"] == (81559 - 480) * MIB  # NVML total minus the reserve
    assert "detected 8 x NVIDIA H100 80GB HBM3" in _gpu_note(reply)
    assert "replay-nvidia-smi" in _gpu_note(reply)


def test_busy_gpus_are_left_out_and_free_memory_bounds_the_plan(capsys):
    code, reply, err = plan_json(capsys, "--replay", str(H100_8X), "--replay-variant", "busy")
    assert code == 0, err
    assert reply["gpu"]["num_gpus"] == 4  # GPUs 0-3 hold a TP=4 vLLM; 4-7 are free
    assert "4 x NVIDIA H100 80GB HBM3 in use" in err and "in use" in _gpu_note(reply)
    # Every GPU of the capture is in use in part: the plan runs with the capture's real free memory
    code, reply, _ = plan_json(capsys, "--replay", str(H100_8X), "--replay-variant", "busy", "--gpus", "4")
    assert code == 0 and reply["gpu"]["num_gpus"] == 4


def test_mig_slices_are_devices_and_the_whole_gpu_is_preferred(capsys):
    code, reply, err = plan_json(capsys, "--replay", str(A100_MIG))
    assert code == 0, err
    assert reply["gpu"]["name"] == "A100 SXM 80GB" and reply["gpu"]["num_gpus"] == 1
    assert reply["gpu"]["memory_total_bytes"] == 81229 * MIB
    assert "MIG 3g.40gb" in err  # the slices are named as present but not planned for


def test_nvml_replay_goes_through_the_nvml_conversion(capsys):
    if not (H100_CAPTURE / "nvml.json").is_file():
        pytest.skip("shared NVML capture not present")
    code, reply, err = plan_json(capsys, "--replay", str(H100_CAPTURE))
    assert code == 0, err
    assert reply["gpu"]["name"] == "H100 SXM" and reply["gpu"]["memory_total_bytes"] == 85017493504


def test_agent_plans_against_its_live_inventory(capsys):
    with FakeAgent.from_capture(A100_MIG, "busy", hostname="gpu-host-7") as address:
        code, reply, err = plan_json(capsys, "--agent", address, "--max-model-len", "8k")
    assert code == 0, err
    assert "gpu-host-7" in _gpu_note(reply)
    # the busy capture: another process holds 72000 MiB of the whole GPU 1, so the free 3g.40gb MIG slice
    # of GPU 0 (40192 MiB) offers the most memory and is what the plan is for
    assert reply["gpu"]["name"] == "A100 SXM 80GB MIG 3g.40gb"
    assert reply["gpu"]["memory_total_bytes"] == 40192 * MIB


def test_agent_or_replay_with_a_named_gpu_is_refused(capsys):
    code = main(["plan", "-m", LLAMA_8B, "--gpu", "L4", "--replay", str(H100_8X)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--replay" in err and err.startswith("error: --gpu:")


def test_more_gpus_than_detected_is_refused(capsys):
    code = main(["plan", "-m", LLAMA_8B, "--replay", str(A100_MIG), "--gpus", "4"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --gpus:") and err.count("\n") == 1


def test_a_named_gpu_skips_detection(capsys):
    code, reply, err = plan_json(capsys, "--gpu", "H100")
    assert code == 0, err
    assert reply["gpu"]["name"] == "H100 SXM" and "detected" not in _gpu_note(reply)


@pytest.mark.skipif(_host_has_gpus(), reason="this host has GPUs: the no-GPU path cannot be shown here")
@pytest.mark.parametrize("argv", [[], ["--gpu", "auto"]], ids=["no-gpu-flag", "gpu-auto"])
def test_no_gpu_given_and_none_found_is_one_clear_line(capsys, argv):
    code = main(["plan", "-m", LLAMA_8B, *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: --gpu: --gpu auto: no NVIDIA GPU found")
    assert "--gpu H100" in err and "--vram-gb" in err


def test_the_engine_has_no_default_gpu():
    from planner_service.api import run_plan
    from planner_service.engine.errors import InvalidRequestError
    from planner_service.engine.models import HardwareOptions, ModelOptions, PlanRequest

    with pytest.raises(InvalidRequestError) as info:
        run_plan(PlanRequest(model=ModelOptions(model=LLAMA_8B)))
    assert info.value.violations[0].field == "hardware.gpu"
    with pytest.raises(InvalidRequestError, match="resolved by the client"):
        run_plan(PlanRequest(model=ModelOptions(model=LLAMA_8B), hardware=HardwareOptions(gpu="auto")))
