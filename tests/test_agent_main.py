"""The ``gpu-agent`` console entry as a real subprocess: address first on stdout, clean SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from clients.sdk.agent_client import AgentClient

H100 = Path("/work/shared/fixtures/nvidia/h100-80gb-hbm3")
if not H100.is_dir():
    H100 = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "nvidia" / "h100-80gb-hbm3"


def _command() -> list[str]:
    script = Path(sys.executable).parent / "gpu-agent"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gpu_agent.main"]


def test_console_entry_prints_address_first_and_stops_on_sigterm():
    assert shutil.which("gpu-agent", path=str(Path(sys.executable).parent)), "pip install -e . declares gpu-agent"
    proc = subprocess.Popen(
        [*_command(), "--listen", "127.0.0.1:0", "--replay", str(H100), "--replay-variant", "busy",
         "--interval-seconds", "0.2", "--heartbeat-seconds", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        address = proc.stdout.readline().strip()
        host, _, port = address.rpartition(":")
        assert host == "127.0.0.1" and port.isdigit() and int(port) > 0
        with AgentClient(address) as client:
            assert [p.pid for p in client.get_inventory().processes] == [425, 450]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_replay_folder_fails_in_one_line(tmp_path):
    result = subprocess.run([*_command(), "--listen", "127.0.0.1:0", "--replay", str(tmp_path / "nope")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "does not exist" in result.stderr and result.stdout == ""


def test_register_with_an_absent_planner_keeps_serving_and_stops_cleanly():
    proc = subprocess.Popen(
        [*_command(), "--listen", "127.0.0.1:0", "--backend", "none", "--register-with", "127.0.0.1:9"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )
    try:
        address = proc.stdout.readline().strip()
        with AgentClient(address) as client:
            assert client.get_inventory().gpus == ()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
            raise AssertionError(proc.communicate()[1][-8000:]) from None
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_unusable_planner_tls_files_stop_the_agent_at_start_in_one_line(tmp_path):
    """--register-tls-*: a file that is not PEM, or half a client pair, is a start-up error naming the
    flag (exit 2, nothing served), not a warning every heartbeat."""
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("just text\n")
    cases = [
        (["--register-tls-ca-file", str(not_pem)], "--register-tls-ca-file"),
        (["--register-tls-cert-file", str(not_pem)], "--register-tls-key-file"),
    ]
    for flags, named in cases:
        result = subprocess.run(
            [*_command(), "--listen", "127.0.0.1:0", "--backend", "none", "--register-with", "planner.example:50051", *flags],
            capture_output=True, text=True, timeout=30)
        assert result.returncode == 2 and result.stdout == "", result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and named in lines[0] and "Traceback" not in result.stderr, lines
