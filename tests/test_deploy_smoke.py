"""The shipped config files boot the real console scripts: both services start from
deploy/config/*.yaml (ports overridden by flags, the token from a file through the environment, as
in compose and Kubernetes), answer health, require the token, expose /metrics, log JSON, and exit 0
on SIGTERM.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "smoke-test-token"

SERVICES = {
    "planner": ("planner_service.server.main", "VLLM_PLANNER_", "planner.yaml", []),
    "agent": ("gpu_agent.main", "GPU_AGENT_", "gpu-agent.yaml", ["--backend", "none"]),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _first_line(proc: subprocess.Popen, timeout_seconds: float) -> str:
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    if not selector.select(timeout_seconds):
        proc.kill()
        pytest.fail(f"no address printed within {timeout_seconds} s: {proc.stderr.read()}")
    return proc.stdout.readline().strip()


@pytest.mark.parametrize("service", list(SERVICES))
def test_service_boots_from_the_shipped_config(service, tmp_path):
    module, prefix, config, extra = SERVICES[service]
    pytest.importorskip(module)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    metrics_port = _free_port()
    env = {**os.environ, f"{prefix}AUTH_TOKEN_FILE": str(token_file), "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable, "-m", module, "--config", str(ROOT / "deploy" / "config" / config),
        "--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0", "--metrics-listen", f"127.0.0.1:{metrics_port}",
        *extra,
    ]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        address = _first_line(proc, 30)
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            # Reflection is not exempt from the token.
            from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            with pytest.raises(grpc.RpcError) as denied:
                list(stub.ServerReflectionInfo(iter([request]), timeout=10))
            assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
            metadata = (("authorization", f"Bearer {TOKEN}"),)
            answers = list(stub.ServerReflectionInfo(iter([request]), timeout=10, metadata=metadata))
            assert answers[0].list_services_response.service
        exposition = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        assert 'grpc_code="UNAUTHENTICATED"' in exposition and "grpc_server_handling_seconds_bucket" in exposition
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert records, f"log_format json gave no JSON lines: {stderr[:500]}"
    assert any("token required" in r["message"] for r in records)
    assert any(r.get("grpc_code") == "UNAUTHENTICATED" and r.get("request_id") for r in records)
