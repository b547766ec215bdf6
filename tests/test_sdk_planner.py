"""The planner SDK (sync and asyncio) against a real in-process planner server."""

from __future__ import annotations

import asyncio
import socket

import pytest

import clients.sdk as sdk
from clients.sdk import (
    AsyncPlannerClient,
    InvalidArgument,
    PermissionDenied,
    PlannerClient,
    Unauthenticated,
    Unavailable,
)
from planner_service.engine.gpus import list_gpus
from planner_service.engine.models import ModelOptions, PlanRequest, PolicyOptions
from planner_service.metadata.catalog import list_catalog
from planner_service.server.app import PlannerServiceSettings
from planner_service.server.background import BackgroundPlannerServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    patch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    patch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf-home")))
    settings = PlannerServiceSettings(listen="127.0.0.1:0", auth_token="tok-123")
    with BackgroundPlannerServer(settings) as running:
        yield running
    patch.undo()


@pytest.fixture
def client(server):
    with PlannerClient(server.address, token="tok-123") as planner:
        yield planner


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _with_utilization(request: PlanRequest, value: float) -> PlanRequest:
    return request.model_copy(update={"policy": PolicyOptions.model_construct(gpu_memory_utilization=value)})


def test_public_surface():
    assert sorted(sdk.__all__) == sorted([
        "PlannerClient", "AsyncPlannerClient", "AgentClient", "AsyncAgentClient", "FakeAgent",
        "FleetClient", "AsyncFleetClient", "SdkError", "InvalidArgument", "NotFound", "PermissionDenied",
        "Unauthenticated", "Unavailable", "DeadlineExceeded", "ResourceExhausted", "from_rpc_error",
    ])
    assert sdk.PlannerClient is PlannerClient
    assert sdk.FleetClient.__name__ == "FleetClient"  # lazily imported, still the real class
    with pytest.raises(AttributeError):
        sdk.NoSuchThing  # noqa: B018


def test_list_catalog_models_returns_the_embedded_pydantic_objects(client):
    assert client.list_catalog_models() == list_catalog()


def test_list_gpu_types_returns_the_embedded_gpu_catalog(client):
    gpus = client.list_gpu_types()
    assert gpus == list_gpus()
    assert any(gpu.fp8_tflops is None for gpu in gpus)  # "no FP8" survives as None, not 0


def test_validation_errors_raise_invalid_argument_with_violations(client):
    # Unvalidated on purpose: the server must catch it (a non-Python client could send it).
    bad = _with_utilization(PlanRequest(model=ModelOptions(model="m")), 1.5)
    with pytest.raises(InvalidArgument) as info:
        client.plan(bad)
    assert info.value.code == "INVALID_ARGUMENT"
    assert [v.field for v in info.value.violations] == ["policy.gpu_memory_utilization"]


def test_paths_are_refused_when_the_service_has_no_model_roots(client):
    with pytest.raises(PermissionDenied):
        client.plan(PlanRequest(model=ModelOptions(model="/etc")))
    with pytest.raises(PermissionDenied):
        client.describe_model("/etc")


def test_a_wrong_token_raises_unauthenticated(server):
    with PlannerClient(server.address, token="nope") as planner, pytest.raises(Unauthenticated):
        planner.list_catalog_models()


def test_an_unreachable_service_raises_unavailable_quickly():
    with PlannerClient(f"127.0.0.1:{_free_port()}", timeout_seconds=5) as planner:
        with pytest.raises(Unavailable) as info:
            planner.list_catalog_models()
    assert info.value.unavailable


def test_async_client_matches_the_sync_client(server, client):
    async def scenario():
        async with AsyncPlannerClient(server.address, token="tok-123") as planner:
            models = await planner.list_catalog_models()
            with pytest.raises(PermissionDenied):
                await planner.plan(PlanRequest(model=ModelOptions(model="/etc/passwd")))
            return models

    assert asyncio.run(scenario()) == client.list_catalog_models()


def test_async_client_maps_errors_with_violations(server):
    async def scenario():
        async with AsyncPlannerClient(server.address, token="tok-123") as planner:
            await planner.plan(_with_utilization(PlanRequest(model=ModelOptions(model="x")), 2.0))

    with pytest.raises(InvalidArgument) as info:
        asyncio.run(scenario())
    assert [v.field for v in info.value.violations] == ["policy.gpu_memory_utilization"]
