"""The planner gRPC service end to end: a real grpc.aio server on 127.0.0.1:0, real channels.

Status codes are asserted on the raw stub (what grpcurl or a Go client sees) and through the SDK.
The Hub is pointed at a refused local port and the HF cache at an empty folder: no network, ever.
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status

from helpers.offline import offline_hub
from helpers.paths import MODEL_CONFIGS
from helpers.paths import QWEN3_8B_CONFIG as QWEN3_8B
from planner_service.engine.models import (
    BatchingMode,
    HardwareOptions,
    ModelOptions,
    PlanRequest,
    PlanResponse,
    WorkloadOptions,
)
from planner_service.server.app import PlannerServiceSettings
from planner_service.server.convert import from_proto, to_proto
from planner_service.server.background import BackgroundPlannerServer
from planner_service.server.servicer import SERVICE_FULL_NAME
from vllm_planner.v1 import planner_pb2, planner_pb2_grpc

@pytest.fixture(scope="module")
def offline_env(tmp_path_factory):
    """A refused Hub endpoint and an empty HF cache for the whole module."""
    with offline_hub(tmp_path_factory.mktemp("hf-home")):
        yield


@pytest.fixture(scope="module")
def model_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    (root / "qwen3-8b").mkdir()
    shutil.copy(QWEN3_8B, root / "qwen3-8b" / "config.json")
    return root


@pytest.fixture(scope="module")
def server(offline_env, model_root):
    settings = PlannerServiceSettings(listen="127.0.0.1:0", model_root=[model_root], hub_timeout_seconds=2)
    with BackgroundPlannerServer(settings) as running:
        yield running


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.address) as chan:
        yield chan


@pytest.fixture
def stub(channel):
    return planner_pb2_grpc.PlannerServiceStub(channel)


def _request(model: str = "m", **sections) -> planner_pb2.PlanRequest:
    return planner_pb2.PlanRequest(model=planner_pb2.ModelOptions(model=model), **sections)


def _inline(config_path: Path = QWEN3_8B, **sections) -> planner_pb2.PlanRequest:
    options = planner_pb2.ModelOptions(model="inline-model", config_json=config_path.read_text())
    return planner_pb2.PlanRequest(model=options, **sections)


def _violations(error: grpc.RpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)
    assert status is not None, "no google.rpc.Status in the trailers"
    found = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found.update({v.field: v.description for v in bad.field_violations})
    return found


def _error_reason(error: grpc.RpcError) -> str:
    for detail in rpc_status.from_call(error).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    raise AssertionError("no ErrorInfo detail")


def _assert_still_serving(channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_FULL_NAME), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    models = planner_pb2_grpc.PlannerServiceStub(channel).ListCatalogModels(
        planner_pb2.ListCatalogModelsRequest(), timeout=5
    )
    assert len(models.models) > 0


def test_health_is_serving_for_the_server_and_the_service(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_FULL_NAME):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_planner_service(channel):
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    assert SERVICE_FULL_NAME in services
    assert "grpc.health.v1.Health" in services
    described = database.FindFileContainingSymbol(SERVICE_FULL_NAME)
    assert described.name == "vllm_planner/v1/planner.proto"


def test_list_catalog_models_matches_the_bundled_catalog(stub):
    from planner_service.metadata.catalog import list_catalog

    reply = stub.ListCatalogModels(planner_pb2.ListCatalogModelsRequest(), timeout=5)
    assert [m.id for m in reply.models] == [entry.id for entry in list_catalog()]
    assert "meta-llama/Llama-3.1-8B-Instruct" in {m.id for m in reply.models}


def test_list_gpu_types_serves_the_gpu_catalog(stub):
    from planner_service.engine.gpus import list_gpus

    reply = stub.ListGpuTypes(planner_pb2.ListGpuTypesRequest(), timeout=5)
    assert [g.name for g in reply.gpu_types] == [g.name for g in list_gpus()]
    h100 = next(g for g in reply.gpu_types if "H100" in g.name)
    assert h100.memory_total_bytes > 79 * 2**30 and h100.HasField("fp8_tflops")


EMBEDDED_CASES = [
    PlanRequest(model=ModelOptions(model="meta-llama/Llama-3.1-8B-Instruct"), hardware=HardwareOptions(gpu="H100")),
    PlanRequest(
        model=ModelOptions(model="Qwen/Qwen3-32B", max_model_len=32768),
        hardware=HardwareOptions(gpu="A100-80GB", num_gpus=2, tensor_parallel_size=2),
        workload=WorkloadOptions(concurrency=16, batching_mode=BatchingMode.THROUGHPUT),
    ),
    PlanRequest(model=ModelOptions(model="meta-llama/Llama-3.1-70B-Instruct"), hardware=HardwareOptions(gpu="L4")),
]


@pytest.mark.parametrize("request_model", EMBEDDED_CASES, ids=lambda r: r.model.model)
def test_plan_equals_the_embedded_run_plan(stub, request_model):
    from planner_service.api import run_plan
    from planner_service.engine.pipeline import complete_plan

    embedded = run_plan(request_model)
    reply = stub.Plan(to_proto(request_model, planner_pb2.PlanRequest()), timeout=30)
    assert from_proto(reply, PlanResponse) == embedded

    # GenerateArtifacts = what the CLI's plan/generate use: the plan, completed when it lacks artifacts.
    with_artifacts = embedded if embedded.artifacts else complete_plan(embedded, request_model)
    reply = stub.GenerateArtifacts(to_proto(request_model, planner_pb2.GenerateArtifactsRequest()), timeout=30)
    assert from_proto(reply, PlanResponse) == with_artifacts
    assert "vllm serve" in reply.artifacts.serve_command


@pytest.mark.parametrize("config", ["Qwen/Qwen3-8B", "deepseek-ai/DeepSeek-V2-Lite", "openai/gpt-oss-20b"])
def test_plan_with_an_inline_config_equals_the_embedded_run_plan(stub, config):
    from planner_service.api import run_plan

    request_model = PlanRequest(
        model=ModelOptions(model="private", config_json=json.loads((MODEL_CONFIGS / config / "config.json").read_text())),
        hardware=HardwareOptions(gpu="H100", num_gpus=1),
    )
    reply = stub.Plan(to_proto(request_model, planner_pb2.PlanRequest()), timeout=30)
    assert from_proto(reply, PlanResponse) == run_plan(request_model)


def test_a_local_folder_under_the_model_root_is_planned(stub):
    reply = stub.Plan(_request("qwen3-8b", hardware=planner_pb2.HardwareOptions(gpu="H100")), timeout=30)
    assert reply.model.source == "local"
    assert reply.feasibility.kv_cache_tokens > 0


def test_unknown_gpu_is_not_found(stub, channel):
    request = _request("meta-llama/Llama-3.1-8B-Instruct", hardware=planner_pb2.HardwareOptions(gpu="NoSuchGPU-9000"))
    with pytest.raises(grpc.RpcError) as info:
        stub.Plan(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "NoSuchGPU-9000" in info.value.details()
    assert _error_reason(info.value) == "GPU_NOT_FOUND"
    _assert_still_serving(channel)


def test_tensor_parallel_not_dividing_the_heads_is_invalid_argument(stub, channel):
    # Llama-3.1-8B has 32 attention heads and 8 KV heads: TP=3 divides neither.
    request = _request(
        "meta-llama/Llama-3.1-8B-Instruct",
        hardware=planner_pb2.HardwareOptions(gpu="H100", num_gpus=3, tensor_parallel_size=3),
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.Plan(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "hardware.tensor_parallel_size" in _violations(info.value)
    _assert_still_serving(channel)


def test_utilization_above_one_is_invalid_argument_with_a_field_violation(stub, channel):
    request = _request(policy=planner_pb2.PolicyOptions(gpu_memory_utilization=1.5))
    with pytest.raises(grpc.RpcError) as info:
        stub.Plan(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = _violations(info.value)
    assert list(violations) == ["policy.gpu_memory_utilization"]
    assert "1" in violations["policy.gpu_memory_utilization"]
    assert _error_reason(info.value) == "INVALID_REQUEST"
    _assert_still_serving(channel)


def test_several_validation_errors_give_one_violation_each(stub):
    request = _request(
        hardware=planner_pb2.HardwareOptions(tensor_parallel_size=0, num_gpus=5000),
        workload=planner_pb2.WorkloadOptions(prompt_tokens=0),
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.Plan(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(_violations(info.value)) == {
        "hardware.tensor_parallel_size",
        "hardware.num_gpus",
        "workload.prompt_tokens",
    }


def test_malformed_inline_config_json_is_invalid_argument(stub):
    request = planner_pb2.PlanRequest(model=planner_pb2.ModelOptions(model="x", config_json="{oops"))
    with pytest.raises(grpc.RpcError) as info:
        stub.Plan(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(_violations(info.value)) == ["model.config_json"]


@pytest.mark.parametrize("path", ["/etc", "/etc/passwd", "../../etc"])
def test_paths_outside_the_model_roots_are_permission_denied(stub, channel, path):
    with pytest.raises(grpc.RpcError) as info:
        stub.Plan(_request(path), timeout=10)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _error_reason(info.value) == "PERMISSION_DENIED"
    _assert_still_serving(channel)


def test_describe_model_reports_the_parsed_metadata(stub):
    request = planner_pb2.DescribeModelRequest(model=planner_pb2.ModelOptions(model="meta-llama/Llama-3.1-8B-Instruct"))
    reply = stub.DescribeModel(request, timeout=10).description
    assert (reply.source, reply.architecture, reply.model_type) == ("catalog", "LlamaForCausalLM", "llama")
    assert (reply.num_layers, reply.num_attention_heads, reply.num_kv_heads, reply.head_dim) == (32, 32, 8, 128)
    # K and V, 32 layers, 8 KV heads of 128 dims, 2 bytes (bf16) = 128 KiB per token.
    assert reply.kv_cache_dtype in ("auto", "bfloat16") and reply.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2
    assert reply.derived_max_model_len == 131072
    assert 7.9e9 < reply.num_params < 8.1e9 and not reply.HasField("quantization")
    assert [(k.key, k.value) for k in reply.layer_kinds] == [("full", 32)]


def test_describe_model_of_an_inline_moe_config(stub):
    config = (MODEL_CONFIGS / "Qwen" / "Qwen3-30B-A3B" / "config.json").read_text()
    request = planner_pb2.DescribeModelRequest(model=planner_pb2.ModelOptions(model="private", config_json=config))
    reply = stub.DescribeModel(request, timeout=10).description
    assert reply.source == "inline" and reply.num_experts == 128 and reply.experts_per_token == 8
    assert reply.num_active_params < reply.num_params


@pytest.mark.parametrize(
    "model",
    ["meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen3-30B-A3B", "google/gemma-2-9b-it",
     "deepseek-ai/DeepSeek-V2-Lite", "openai/gpt-oss-20b"],
)
@pytest.mark.parametrize("kv_cache_dtype", [None, "auto", "fp8"])
def test_describe_model_agrees_with_a_plan_of_the_same_model(server, model, kv_cache_dtype):
    """Same metadata, same parsers: a description never contradicts a single-GPU plan."""
    from clients.sdk import PlannerClient
    from planner_service.api import run_plan

    options = ModelOptions(model=model, kv_cache_dtype=kv_cache_dtype)
    plan = run_plan(PlanRequest(model=options, hardware=HardwareOptions(gpu="H200", num_gpus=1)))
    with PlannerClient(server.address) as client:
        described = client.describe_model(options)
    summary = plan.model
    assert (described.model, described.source, described.architecture, described.model_type) == (
        summary.model, summary.source, summary.architecture, summary.model_type)
    assert (described.num_params, described.num_active_params, described.params_source) == (
        summary.num_params, summary.num_active_params, summary.params_source)
    assert (described.checkpoint_dtype, described.quantization, described.derived_max_model_len) == (
        summary.checkpoint_dtype, summary.quantization, summary.derived_max_model_len)
    assert plan.config.tensor_parallel_size == 1 and plan.config.pipeline_parallel_size == 1
    assert described.kv_bytes_per_token == plan.feasibility.kv_bytes_per_token


def test_describe_model_outside_the_roots_is_permission_denied(stub):
    request = planner_pb2.DescribeModelRequest(model=planner_pb2.ModelOptions(model="/etc"))
    with pytest.raises(grpc.RpcError) as info:
        stub.DescribeModel(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_unknown_model_with_the_hub_unreachable_is_unavailable_or_not_found(stub, channel):
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        stub.Plan(_request("no-such-org/no-such-model-xyz"), timeout=30)
    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND)
    assert time.monotonic() - started < 25, "a refused Hub must fail fast"
    _assert_still_serving(channel)


def test_a_token_protected_server_rejects_calls_without_the_token(offline_env):
    settings = PlannerServiceSettings(listen="127.0.0.1:0", auth_token="s3cret")
    with BackgroundPlannerServer(settings) as running, grpc.insecure_channel(running.address) as chan:
        stub = planner_pb2_grpc.PlannerServiceStub(chan)
        request = planner_pb2.ListCatalogModelsRequest()
        with pytest.raises(grpc.RpcError) as info:
            stub.ListCatalogModels(request, timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as info:
            stub.ListCatalogModels(request, timeout=5, metadata=(("authorization", "Bearer wrong"),))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = stub.ListCatalogModels(request, timeout=5, metadata=(("authorization", "Bearer s3cret"),))
        assert len(reply.models) > 0
        health = health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


@contextmanager
def _serve_with(resolver) -> Iterator[tuple[grpc.Channel, planner_pb2_grpc.PlannerServiceStub]]:  # noqa: ANN001
    """A planner of its own on 127.0.0.1:0 with ``resolver``, and a plaintext channel + stub to it."""
    with BackgroundPlannerServer(PlannerServiceSettings(listen="127.0.0.1:0"), resolver=resolver) as running:
        with grpc.insecure_channel(running.address) as chan:
            yield chan, planner_pb2_grpc.PlannerServiceStub(chan)


class _ExplodingResolver:
    """A resolver with a bug: the server must answer INTERNAL without leaking the message."""

    def resolve(self, options):  # noqa: ANN001, ANN201
        raise RuntimeError("secret internal detail /srv/models")


def test_an_unexpected_exception_is_internal_with_a_generic_message(offline_env):
    with _serve_with(_ExplodingResolver()) as (chan, stub):
        for _ in range(2):  # and again: the server is still there
            with pytest.raises(grpc.RpcError) as info:
                stub.Plan(_inline(), timeout=10)
            assert info.value.code() == grpc.StatusCode.INTERNAL
            assert "secret" not in info.value.details()
        _assert_still_serving(chan)


class _SlowResolver:
    """Metadata that takes longer than the caller's deadline (a slow Hub)."""

    def resolve(self, options):  # noqa: ANN001, ANN201
        time.sleep(1.5)
        raise AssertionError("the deadline should have passed first")


def test_the_engine_is_abandoned_at_the_deadline_and_the_loop_keeps_serving(offline_env):
    with _serve_with(_SlowResolver()) as (chan, stub):
        future = stub.Plan.future(_inline(), timeout=0.5)
        _assert_still_serving(chan)  # answered while the slow plan runs in its thread
        with pytest.raises(grpc.RpcError) as info:
            future.result()
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        _assert_still_serving(chan)


def test_inline_config_is_json_text_on_the_wire(stub):
    # The inline config travels as a JSON string; a non-object is refused with the field named.
    request = planner_pb2.PlanRequest(model=planner_pb2.ModelOptions(model="x", config_json=json.dumps([1, 2])))
    with pytest.raises(grpc.RpcError) as info:
        stub.Plan(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(_violations(info.value)) == ["model.config_json"]
