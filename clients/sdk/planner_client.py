"""Clients of ``vllm_planner.v1.PlannerService``: ``PlannerClient`` (sync) and ``AsyncPlannerClient``.

Both return the same pydantic objects the embedded engine returns (``PlanResponse``, ``CatalogEntry``,
...), never protobuf, and raise ``clients.sdk.errors`` exceptions (mapped in ``from_rpc_error``).
Every call has a deadline (per-method defaults below, or ``timeout_seconds``); all of the service's
methods are idempotent, so the channel retries them on UNAVAILABLE (gRPC retry service config),
except when the service itself says not to: its own UNAVAILABLE (the Hub unreachable, after it
already waited ``hub_timeout_seconds``) carries ``grpc-retry-pushback-ms: -1`` and fails at once.

    with PlannerClient("planner.internal:50051", token="...") as client:
        response = client.plan(PlanRequest(model=ModelOptions(model="Qwen/Qwen3-8B"), ...))
"""

from __future__ import annotations

from clients.sdk._base import AsyncClient, SyncClient
from planner_service.engine.bench_models import BenchRequest, BenchResponse, CapacityRequest, CapacityResponse
from planner_service.engine.gpus import GpuSpec
from planner_service.engine.models import ModelOptions, PlanRequest, PlanResponse
from planner_service.metadata.catalog import CatalogEntry
from planner_service.server import convert
from planner_service.server.describe import ModelDescription
from vllm_planner.v1 import planner_pb2, planner_pb2_grpc

SERVICE_FULL_NAME = planner_pb2.DESCRIPTOR.services_by_name["PlannerService"].full_name

# Planning may resolve metadata from the Hub first; listing is local and instant.
DEFAULT_TIMEOUTS_SECONDS: dict[str, float] = {
    "Plan": 60.0,
    "GenerateArtifacts": 60.0,
    "ListGpuTypes": 10.0,
    "ListCatalogModels": 10.0,
    "DescribeModel": 30.0,
    # A simulation of 1,000-10,000 requests takes 0.1-5 s; a capacity search runs hundreds of them.
    "Simulate": 120.0,
    "PlanCapacity": 600.0,
}


def _model_options(model: str | ModelOptions) -> ModelOptions:
    return model if isinstance(model, ModelOptions) else ModelOptions(model=model)


class _Planner:
    stub_class = planner_pb2_grpc.PlannerServiceStub
    service_name = SERVICE_FULL_NAME
    retry_methods = (SERVICE_FULL_NAME,)
    default_timeouts_seconds = DEFAULT_TIMEOUTS_SECONDS


class PlannerClient(_Planner, SyncClient):
    """Synchronous client. Thread-safe; reuse one per process and ``close()`` it (or use ``with``)."""

    def plan(self, request: PlanRequest, *, timeout_seconds: float | None = None) -> PlanResponse:
        """The plan the embedded ``run_plan(request)`` would return, computed by the service."""
        message = convert.to_proto(request, planner_pb2.PlanRequest())
        return convert.from_proto(self._call("Plan", message, timeout_seconds), PlanResponse)

    def generate_artifacts(self, request: PlanRequest, *, timeout_seconds: float | None = None) -> PlanResponse:
        """The plan with its deployment artifacts (``response.artifacts``)."""
        message = convert.to_proto(request, planner_pb2.GenerateArtifactsRequest())
        return convert.from_proto(self._call("GenerateArtifacts", message, timeout_seconds), PlanResponse)

    def list_gpu_types(self, *, timeout_seconds: float | None = None) -> list[GpuSpec]:
        """The GPU catalog, as ``planner_service.engine.gpus.list_gpus()`` returns it."""
        response = self._call("ListGpuTypes", planner_pb2.ListGpuTypesRequest(), timeout_seconds)
        return [convert.from_proto(item, GpuSpec) for item in response.gpu_types]

    def list_catalog_models(self, *, timeout_seconds: float | None = None) -> list[CatalogEntry]:
        """The bundled model catalog, as ``planner_service.metadata.catalog.list_catalog()`` returns it."""
        response = self._call("ListCatalogModels", planner_pb2.ListCatalogModelsRequest(), timeout_seconds)
        return [convert.from_proto(item, CatalogEntry) for item in response.models]

    def describe_model(self, model: str | ModelOptions, *, timeout_seconds: float | None = None) -> ModelDescription:
        """Parsed metadata of a model id / catalog name / inline config (``ModelDescription``)."""
        message = planner_pb2.DescribeModelRequest()
        convert.to_proto(_model_options(model), message.model)
        response = self._call("DescribeModel", message, timeout_seconds)
        return convert.from_proto(response.description, ModelDescription)


    def simulate(self, request: BenchRequest, *, timeout_seconds: float | None = None) -> BenchResponse:
        """What ``vllm bench serve`` would print: the embedded ``run_bench(request)``, on the service."""
        message = convert.to_proto(request, planner_pb2.SimulateRequest())
        return convert.from_proto(self._call("Simulate", message, timeout_seconds), BenchResponse)

    def plan_capacity(self, request: CapacityRequest, *, timeout_seconds: float | None = None) -> CapacityResponse:
        """Configurations and replicas for a rate under SLOs: the embedded ``run_capacity(request)``."""
        message = convert.to_proto(request, planner_pb2.PlanCapacityRequest())
        return convert.from_proto(self._call("PlanCapacity", message, timeout_seconds), CapacityResponse)


class AsyncPlannerClient(_Planner, AsyncClient):
    """asyncio twin of ``PlannerClient`` (create it inside the event loop that uses it)."""

    async def plan(self, request: PlanRequest, *, timeout_seconds: float | None = None) -> PlanResponse:
        message = convert.to_proto(request, planner_pb2.PlanRequest())
        return convert.from_proto(await self._call("Plan", message, timeout_seconds), PlanResponse)

    async def generate_artifacts(self, request: PlanRequest, *, timeout_seconds: float | None = None) -> PlanResponse:
        message = convert.to_proto(request, planner_pb2.GenerateArtifactsRequest())
        return convert.from_proto(await self._call("GenerateArtifacts", message, timeout_seconds), PlanResponse)

    async def list_gpu_types(self, *, timeout_seconds: float | None = None) -> list[GpuSpec]:
        response = await self._call("ListGpuTypes", planner_pb2.ListGpuTypesRequest(), timeout_seconds)
        return [convert.from_proto(item, GpuSpec) for item in response.gpu_types]

    async def list_catalog_models(self, *, timeout_seconds: float | None = None) -> list[CatalogEntry]:
        response = await self._call("ListCatalogModels", planner_pb2.ListCatalogModelsRequest(), timeout_seconds)
        return [convert.from_proto(item, CatalogEntry) for item in response.models]

    async def describe_model(
        self, model: str | ModelOptions, *, timeout_seconds: float | None = None
    ) -> ModelDescription:
        message = planner_pb2.DescribeModelRequest()
        convert.to_proto(_model_options(model), message.model)
        response = await self._call("DescribeModel", message, timeout_seconds)
        return convert.from_proto(response.description, ModelDescription)

    async def simulate(self, request: BenchRequest, *, timeout_seconds: float | None = None) -> BenchResponse:
        message = convert.to_proto(request, planner_pb2.SimulateRequest())
        return convert.from_proto(await self._call("Simulate", message, timeout_seconds), BenchResponse)

    async def plan_capacity(
        self, request: CapacityRequest, *, timeout_seconds: float | None = None
    ) -> CapacityResponse:
        message = convert.to_proto(request, planner_pb2.PlanCapacityRequest())
        return convert.from_proto(await self._call("PlanCapacity", message, timeout_seconds), CapacityResponse)
