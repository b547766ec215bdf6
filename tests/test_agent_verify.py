"""scripts/verify_agent_nvml.py: its comparison logic over the recorded capture (no GPU here)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from gpu_agent.factory import replay_backend
from gpu_agent.watchdog import CallGuard

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "verify_agent_nvml.py"
H100 = Path("/work/shared/fixtures/nvidia/h100-80gb-hbm3")
if not H100.is_dir():
    H100 = ROOT.parent / "shared" / "fixtures" / "nvidia" / "h100-80gb-hbm3"

spec = importlib.util.spec_from_file_location("verify_agent_nvml", SCRIPT)
verify = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = verify  # dataclasses look their module up while executing it
spec.loader.exec_module(verify)


def recorded_rows(variant: str) -> list[dict[str, str]]:
    name, fields = verify.RECORDED[variant]
    return verify.parse_smi_rows((H100 / name).read_text(), fields)


@pytest.mark.parametrize("variant", ["idle", "busy"])
def test_recorded_nvml_matches_recorded_nvidia_smi(variant):
    inventory = replay_backend(H100, variant, "nvml").collect(CallGuard(5))
    checks = verify.compare(inventory, recorded_rows(variant))
    assert checks and all(c.ok for c in checks), [c for c in checks if not c.ok]
    fields = {c.field for c in checks}
    assert {"uuid", "name", "memory.total [MiB]", "memory.used [MiB]", "memory.free [MiB]"} <= fields
    if variant == "idle":
        assert {"driver_version", "compute_cap"} <= fields


def test_mismatches_are_caught():
    inventory = replay_backend(H100, "idle", "nvml").collect(CallGuard(5))
    # The busy nvidia-smi reading against the idle NVML one: used/free differ by ~12967 MiB.
    bad = {c.field for c in verify.compare(inventory, recorded_rows("busy")) if not c.ok}
    assert bad == {"memory.used [MiB]", "memory.free [MiB]"}
    wrong_uuid = [dict(recorded_rows("idle")[0], uuid="GPU-other")]
    assert [c.field for c in verify.compare(inventory, wrong_uuid) if not c.ok] == ["uuid"]
    assert not all(c.ok for c in verify.compare(inventory, recorded_rows("idle") * 2))  # count differs


def test_script_exit_codes():
    ok = subprocess.run([sys.executable, str(SCRIPT), "--replay", str(H100), "--variant", "busy"],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "5/5 checks ok" in ok.stdout
    cannot = subprocess.run([sys.executable, str(SCRIPT), "--replay", "/nonexistent"], capture_output=True, text=True, timeout=60)
    assert cannot.returncode == 2 and "cannot compare" in cannot.stdout
