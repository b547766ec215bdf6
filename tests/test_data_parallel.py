"""--data-parallel-size through plan, artifacts and serve command; TP x PP x DP larger than the GPUs is refused."""

from __future__ import annotations

import json
import shlex

import grpc
import pytest
import yaml
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from clients.cli.main import main
from helpers.engine import config, request, source
from planner_service.engine.errors import InvalidRequestError
from planner_service.engine.pipeline import complete_plan
from planner_service.engine.plan import build_plan
from planner_service.engine.weights import weights_per_rank
from planner_service.engine.architecture import parse_architecture
from planner_service.server.app import PlannerServiceSettings
from planner_service.server.background import BackgroundPlannerServer
from vllm_planner.v1 import planner_pb2, planner_pb2_grpc

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
MIXTRAL = "mistralai/Mixtral-8x7B-Instruct-v0.1"


def plan(name=LLAMA_8B, **hardware):
    req = request(name, hardware={"gpu": "H100", **hardware}, model={"max_model_len": 8192})
    return req, complete_plan(build_plan(source(name), req), req, source=source(name))


def test_dp_replicates_the_engine_and_reaches_every_artifact():
    req, one = plan()
    _, dp = plan(data_parallel_size=4, num_gpus=4)
    assert dp.config.data_parallel_size == 4 and dp.config.tensor_parallel_size == 1
    # each replica is the single-GPU engine: the same memory and KV cache per replica
    assert dp.feasibility.per_gpu == one.feasibility.per_gpu and dp.feasibility.kv_cache_tokens == one.feasibility.kv_cache_tokens
    argv = shlex.split(dp.artifacts.serve_command)
    assert argv[argv.index("--data-parallel-size") + 1] == "4"
    assert "--data-parallel-size" not in one.artifacts.serve_command
    k8s = [d for d in yaml.safe_load_all(dp.artifacts.kubernetes) if d and d["kind"] == "Deployment"][0]
    limits = k8s["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] in ("4", 4)
    compose = yaml.safe_load(dp.artifacts.docker_compose)
    device = next(iter(compose["services"].values()))["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["count"] == 4
    assert yaml.safe_load(dp.artifacts.helm_values)["servingEngineSpec"]["modelSpec"][0]["requestGPU"] == 4


def test_recommended_tp_fits_within_the_gpus_each_replica_gets():
    _, dp = plan(data_parallel_size=4, num_gpus=8)
    assert dp.config.tensor_parallel_size * dp.config.pipeline_parallel_size * 4 <= 8


def test_expert_parallel_spreads_experts_over_tp_x_dp():
    arch = parse_architecture(config(MIXTRAL))
    layers = range(arch.num_layers)
    ep2 = weights_per_rank(arch, 2, 2, layers, True, True, True, ep_size=2).bytes
    ep4 = weights_per_rank(arch, 2, 2, layers, True, True, True, ep_size=4).bytes
    # 8 experts over 4 ranks instead of 2: each rank holds half the expert bytes it held
    expert = 3 * arch.hidden_size * arch.moe.moe_intermediate_size * 2 * arch.num_layers
    assert ep2 - ep4 == pytest.approx(2 * expert, rel=1e-9)


@pytest.mark.parametrize(
    ("hardware", "fields"),
    [
        ({"num_gpus": 1, "tensor_parallel_size": 8}, ["hardware.tensor_parallel_size", "hardware.num_gpus"]),
        ({"num_gpus": 2, "tensor_parallel_size": 2, "pipeline_parallel_size": 2},
         ["hardware.tensor_parallel_size", "hardware.pipeline_parallel_size", "hardware.num_gpus"]),
        ({"num_gpus": 4, "tensor_parallel_size": 2, "data_parallel_size": 4},
         ["hardware.tensor_parallel_size", "hardware.data_parallel_size", "hardware.num_gpus"]),
        ({"num_gpus": 2, "data_parallel_size": 4}, ["hardware.data_parallel_size", "hardware.num_gpus"]),
    ],
)
def test_more_gpus_than_available_is_refused_naming_the_fields(hardware, fields):
    req = request(LLAMA_8B, hardware={"gpu": "H100", **hardware})
    with pytest.raises(InvalidRequestError) as info:
        build_plan(source(LLAMA_8B), req)
    assert [v.field for v in info.value.violations] == fields


@pytest.mark.parametrize("argv", [["--gpus", "1", "--tp", "8"], ["--tp", "2", "--pp", "2", "--gpus", "2"],
                                  ["--gpus", "4", "--tp", "2", "--dp", "4"]])
def test_cli_refuses_with_exit_2_and_one_line(capsys, monkeypatch, argv):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["plan", "-m", LLAMA_8B, "--gpu", "H100", *argv])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.count("\n") == 1 and "hardware.num_gpus" in captured.err and "tensor" in captured.err


def test_cli_dp_flag_reaches_the_serve_command(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["plan", "-m", LLAMA_8B, "--gpu", "H100", "--gpus", "8", "--dp", "8", "--tp", "1", "--json"])
    reply = json.loads(capsys.readouterr().out)
    assert code == 0 and reply["config"]["data_parallel_size"] == 8 and reply["gpu"]["num_gpus"] == 8
    assert "--data-parallel-size 8" in reply["artifacts"]["serve_command"]


def test_grpc_refuses_with_invalid_argument_and_field_violations(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = PlannerServiceSettings(listen="127.0.0.1:0", model_root=[tmp_path])
    with BackgroundPlannerServer(settings) as server, grpc.insecure_channel(server.address) as channel:
        stub = planner_pb2_grpc.PlannerServiceStub(channel)
        message = planner_pb2.PlanRequest(
            model=planner_pb2.ModelOptions(model=LLAMA_8B),
            hardware=planner_pb2.HardwareOptions(gpu="H100", num_gpus=2, tensor_parallel_size=2,
                                                 pipeline_parallel_size=2))
        with pytest.raises(grpc.RpcError) as info:
            stub.Plan(message, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status: status_pb2.Status = rpc_status.from_call(info.value)
        bad = error_details_pb2.BadRequest()
        assert any(detail.Unpack(bad) for detail in status.details)
        assert [v.field for v in bad.field_violations] == [
            "hardware.tensor_parallel_size", "hardware.pipeline_parallel_size", "hardware.num_gpus"]
        ok = stub.Plan(planner_pb2.PlanRequest(
            model=planner_pb2.ModelOptions(model=LLAMA_8B, max_model_len=8192),
            hardware=planner_pb2.HardwareOptions(gpu="H100", num_gpus=4, data_parallel_size=4)), timeout=30)
        assert ok.config.data_parallel_size == 4
