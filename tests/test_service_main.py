"""The ``vllm-planner-service`` console script, run as a real subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from planner_service.server.main import main
from vllm_planner.v1 import planner_pb2, planner_pb2_grpc

SCRIPT = Path(sys.executable).with_name("vllm-planner-service")


def _start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "planner_service.server.main"]
    return subprocess.Popen(
        [*command, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", **(env or {})},
    )


def _stop(process: subprocess.Popen) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return process.returncode, stderr


def test_prints_the_bound_address_first_serves_and_exits_cleanly_on_sigterm(tmp_path):
    process = _start("--listen", "127.0.0.1:0", "--model-root", str(tmp_path), "--log-level", "debug")
    try:
        first_line = process.stdout.readline().strip()
        host, _, port = first_line.rpartition(":")
        assert host == "127.0.0.1" and port.isdigit() and int(port) > 0, first_line
        with grpc.insecure_channel(first_line) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            models = planner_pb2_grpc.PlannerServiceStub(channel).ListCatalogModels(
                planner_pb2.ListCatalogModelsRequest(), timeout=10
            )
            assert len(models.models) > 0
    finally:
        code, stderr = _stop(process)
    assert code == 0, stderr
    assert str(tmp_path) in stderr  # the model roots are logged at startup


def test_settings_come_from_the_environment(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("env-token\n")
    process = _start(env={"VLLM_PLANNER_LISTEN": "127.0.0.1:0", "VLLM_PLANNER_AUTH_TOKEN_FILE": str(token_file)})
    try:
        address = process.stdout.readline().strip()
        with grpc.insecure_channel(address) as channel:
            stub = planner_pb2_grpc.PlannerServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.ListGpuTypes(planner_pb2.ListGpuTypesRequest(), timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            reply = stub.ListCatalogModels(
                planner_pb2.ListCatalogModelsRequest(),
                timeout=10,
                metadata=(("authorization", "Bearer env-token"),),
            )
            assert len(reply.models) > 0
    finally:
        code, stderr = _stop(process)
    assert code == 0, stderr


def test_bad_settings_exit_with_a_usage_error(capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["--listen", "127.0.0.1:0", "--auth-token-file", str(tmp_path / "missing")])
    assert info.value.code == 2
    assert "missing" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["--cache-max-entries", "0"])
    assert info.value.code == 2
