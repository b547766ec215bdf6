"""``vllm-planner bench`` and ``capacity``, driven as a user would, embedded and through ``--planner``."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from clients.cli.main import main
from clients.sdk.errors import InvalidArgument
from clients.sdk.planner_client import AsyncPlannerClient, PlannerClient
from helpers.offline import offline_planner, run_cli
from planner_service.engine.bench_models import BenchRequest, CapacityRequest, LoadOptions, SloTarget
from planner_service.engine.models import HardwareOptions, ModelOptions, PlanRequest

SMALL = ["--model", "Qwen/Qwen3-0.6B", "--gpu", "H100"]
# The result keys `vllm bench serve --save-result` writes (0.33, without --save-detailed), in order.
SAVE_RESULT_KEYS = [
    "endpoint_type", "backend", "model_id", "num_prompts", "request_rate", "burstiness", "max_concurrency",
    "duration", "completed", "failed", "total_input_tokens", "total_output_tokens", "request_throughput",
    "output_throughput", "total_token_throughput", "max_output_tokens_per_s", "max_concurrent_requests",
]
METRIC_KEYS = [f"{stat}_{m}_ms" for m in ("ttft", "tpot", "itl", "e2el") for stat in ("mean", "median", "std", "p99")]


@pytest.fixture(scope="module")
def address(tmp_path_factory):
    with offline_planner(tmp_path_factory.mktemp("hf-home"), token="t0k") as address:
        yield address


def _run(argv: list[str], capsys) -> tuple[int, str, str]:  # noqa: ANN001
    return run_cli(main, argv, capsys)


def test_json_has_the_keys_of_vllm_bench_serve_save_result(capsys):
    code, out, err = _run(["bench", *SMALL, "--num-prompts", "60", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert list(result)[: len(SAVE_RESULT_KEYS)] == SAVE_RESULT_KEYS
    assert set(METRIC_KEYS) <= set(result)
    assert list(result)[-3:] == ["preemptions", "plan", "assumptions"]
    assert "request_goodput" not in result  # written only with --goodput
    assert result["completed"] == 60 and result["request_rate"] == "inf"
    assert result["plan"]["feasibility"]["fits"] is True
    assert result["total_input_tokens"] == 60 * 1024 and result["total_output_tokens"] == 60 * 128


def test_goodput_and_percentiles_as_vllm_bench_names_them(capsys):
    code, out, _ = _run(["bench", *SMALL, "--num-prompts", "40", "--request-rate", "20", "--goodput", "ttft:200",
                         "tpot:50", "--metric-percentiles", "50,90,99.9", "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    assert 0 < result["request_goodput"] <= result["request_throughput"]
    assert {"p50_ttft_ms", "p90_itl_ms", "p99.9_tpot_ms"} <= set(result)
    assert result["request_rate"] == 20.0


def test_the_report_has_vllm_bench_serves_result_block(capsys):
    code, out, _ = _run(["bench", *SMALL, "--num-prompts", "30", "--request-rate", "10", "--endpoint-type", "chat"],
                        capsys)
    assert code == 0
    lines = out.splitlines()
    assert "============ Serving Benchmark Result ============" in lines
    for label in ("Successful requests:", "Request rate configured (RPS):", "Benchmark duration (s):",
                  "Output token throughput (tok/s):", "Median TTFT (ms):", "P99 ITL (ms):", "Mean TPOT (ms):"):
        assert any(line.startswith(label) for line in lines), label
    assert any(line.startswith("Successful requests:") and line.split()[-1] == "30" for line in lines)
    assert "endpoint /v1/chat/completions" in out and "preemptions" in out


def test_a_configuration_that_would_not_start_exits_1_with_the_plans_error(capsys):
    code, out, _ = _run(["bench", "--model", "meta-llama/Llama-3.1-70B-Instruct", "--gpu", "L4", "--tp", "1"], capsys)
    assert code == 1
    assert "Serving Benchmark Result" not in out


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--request-rate", "-1"], "--request-rate"),
        (["--request-rate", "fast"], "--request-rate"),
        (["--num-prompts", "0"], "--num-prompts"),
        (["--goodput", "ttft:abc"], "--goodput"),
        (["--goodput", "tpt:100"], "--goodput"),
        (["--random-range-ratio", "1"], "--random-range-ratio"),
        (["--burstiness", "0"], "--burstiness"),
        (["--metric-percentiles", "100"], "--metric-percentiles"),
        (["--endpoint-type", "grpc"], "--endpoint-type"),
    ],
)
def test_bad_load_flags_are_one_line_and_exit_2(capsys, flags, named):
    assert main(["bench", *SMALL, *flags]) == 2  # the CLI's one error path returns, it does not exit
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err and err.count("\n") == 1 and err.startswith("error: ")


def test_remote_bench_json_and_report_equal_the_embedded_ones(address, capsys):
    argv = ["bench", *SMALL, "--num-prompts", "50", "--request-rate", "25", "--random-range-ratio", "0.5"]
    for extra in (["--json"], []):
        embedded = _run([*argv, *extra], capsys)
        remote = _run([*argv, *extra, "--planner", address, "--token", "t0k"], capsys)
        assert remote == embedded and remote[0] == 0


def test_capacity_ranks_options_by_total_gpus_and_each_meets_the_slos(address, capsys):
    argv = ["capacity", "--model", "Qwen/Qwen3-0.6B", "--gpu", "H100", "--gpu", "L4", "--request-rate", "40",
            "--slo", "ttft:300", "--slo", "tpot:30", "--random-input-len", "512", "--random-output-len", "128",
            "--max-gpus-per-replica", "1", "--max-options", "2", "--json"]
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    result = json.loads(out)
    options = result["options"]
    assert options
    totals = [o["total_gpus"] for o in options]
    assert totals == sorted(totals)
    for option in options:
        assert option["replicas"] * option["max_rate_per_replica"] >= 40
        assert option["predicted"]["p99_ttft_ms"] <= 300 and option["predicted"]["p99_tpot_ms"] <= 30
        assert option["serve_command"].startswith("vllm serve Qwen/Qwen3-0.6B")
    remote = _run([*argv, "--planner", address, "--token", "t0k"], capsys)
    assert remote == (code, out, err)


def test_capacity_needs_an_slo(capsys):
    code, _, err = _run(["capacity", *SMALL, "--request-rate", "5"], capsys)
    assert code == 2 and "--slo" in err


def test_sdk_simulate_and_plan_capacity_sync_and_async(address):
    plan = PlanRequest(model=ModelOptions(model="Qwen/Qwen3-0.6B"), hardware=HardwareOptions(gpu="H100"))
    request = BenchRequest(plan=plan, load=LoadOptions(num_prompts=30, request_rate=10))
    with PlannerClient(address, token="t0k") as client:
        result = client.simulate(request)
        assert result.metrics["completed"] == 30 and result.plan.feasibility.fits
        with pytest.raises(InvalidArgument):  # pydantic would refuse it too: the service checks the same
            client.plan_capacity(CapacityRequest.model_construct(
                plan=plan, request_rate=-1.0, slos=[SloTarget(metric="ttft", milliseconds=100)],
                percentile=99.0, load=LoadOptions(), gpus=[], max_gpus_per_replica=1, max_options=3))

    async def call() -> None:
        async with AsyncPlannerClient(address, token="t0k") as client:
            again = await client.simulate(request)
            assert again.metrics == result.metrics

    asyncio.run(call())


def test_the_service_refuses_a_bad_load_with_invalid_argument(address):
    from vllm_planner.v1 import planner_pb2, planner_pb2_grpc

    channel = grpc.insecure_channel(address)
    stub = planner_pb2_grpc.PlannerServiceStub(channel)
    message = planner_pb2.SimulateRequest()
    message.plan.model.model = "Qwen/Qwen3-0.6B"
    message.plan.hardware.gpu = "H100"
    message.load.num_prompts = 0
    with pytest.raises(grpc.RpcError) as error:
        stub.Simulate(message, metadata=[("authorization", "Bearer t0k")], timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "num_prompts" in error.value.details()
    channel.close()
