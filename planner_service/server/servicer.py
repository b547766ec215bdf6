"""``PlannerService`` servicer: a thin adapter from protobuf to the embedded planner API.

Every method converts the request (``convert.from_proto``, which validates), calls the same code the
CLI's embedded mode calls (``planner_service.api.run_plan`` with the service's resolver), and converts
the answer back. Errors are not handled here: they propagate to ``ErrorMappingInterceptor``.

Planning is CPU-bound and metadata resolution may block on the Hub, so both run in a thread pool,
awaited under the call's remaining deadline: the event loop keeps serving health checks and other
calls meanwhile. (A thread that outlives its deadline finishes in the background; Python threads
cannot be cancelled.)
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import Executor
from typing import Callable, TypeVar

import grpc
from pydantic import BaseModel, ConfigDict

from planner_service.api import run_bench, run_capacity, run_plan
from planner_service.engine.bench_models import BenchRequest, CapacityRequest
from planner_service.engine.gpus import list_gpus
from planner_service.engine.models import ModelOptions, PlanRequest, PlanResponse
from planner_service.metadata.catalog import list_catalog
from planner_service.server import convert
from planner_service.server.describe import describe_model
from planner_service.server.interceptor import DeadlineExceededError
from vllm_planner.v1 import planner_pb2, planner_pb2_grpc

T = TypeVar("T")

SERVICE_FULL_NAME = planner_pb2.DESCRIPTOR.services_by_name["PlannerService"].full_name


class DescribeModelArgs(BaseModel):
    """Validation wrapper, so that violations read ``model.<field>`` like the proto request."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model: ModelOptions


class PlannerServicer(planner_pb2_grpc.PlannerServiceServicer):
    """Serves plans from ``resolver`` (confined to the service's model roots) on ``executor``."""

    def __init__(self, resolver, executor: Executor) -> None:  # noqa: ANN001  (ModelResolver)
        self._resolver = resolver
        self._executor = executor

    async def _offload(self, context: grpc.aio.ServicerContext, fn: Callable[..., T], *args, **kwargs) -> T:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))
        try:
            return await asyncio.wait_for(future, timeout=context.time_remaining())
        except TimeoutError:
            raise DeadlineExceededError("the deadline passed before the plan was ready") from None

    async def _plan(self, request, context: grpc.aio.ServicerContext) -> PlanResponse:  # noqa: ANN001
        """``run_plan`` with the service's resolver: the embedded engine's result, artifacts included."""
        plan_request = convert.from_proto(request, PlanRequest)
        return await self._offload(context, run_plan, plan_request, resolver=self._resolver)

    async def Plan(self, request: planner_pb2.PlanRequest, context: grpc.aio.ServicerContext) -> planner_pb2.PlanResponse:
        response = await self._plan(request, context)
        return convert.to_proto(response, planner_pb2.PlanResponse())

    async def GenerateArtifacts(
        self, request: planner_pb2.GenerateArtifactsRequest, context: grpc.aio.ServicerContext
    ) -> planner_pb2.GenerateArtifactsResponse:
        response = await self._plan(request, context)
        return convert.to_proto(response, planner_pb2.GenerateArtifactsResponse())

    async def ListGpuTypes(
        self, request: planner_pb2.ListGpuTypesRequest, context: grpc.aio.ServicerContext
    ) -> planner_pb2.ListGpuTypesResponse:
        response = planner_pb2.ListGpuTypesResponse()
        for gpu in list_gpus():
            convert.to_proto(gpu, response.gpu_types.add())
        return response

    async def ListCatalogModels(
        self, request: planner_pb2.ListCatalogModelsRequest, context: grpc.aio.ServicerContext
    ) -> planner_pb2.ListCatalogModelsResponse:
        response = planner_pb2.ListCatalogModelsResponse()
        for entry in list_catalog():
            convert.to_proto(entry, response.models.add())
        return response

    async def DescribeModel(
        self, request: planner_pb2.DescribeModelRequest, context: grpc.aio.ServicerContext
    ) -> planner_pb2.DescribeModelResponse:
        args = convert.from_proto(request, DescribeModelArgs)
        description = await self._offload(context, describe_model, args.model, self._resolver)
        response = planner_pb2.DescribeModelResponse()
        convert.to_proto(description, response.description)
        return response

    async def Simulate(
        self, request: planner_pb2.SimulateRequest, context: grpc.aio.ServicerContext
    ) -> planner_pb2.SimulateResponse:
        bench_request = convert.from_proto(request, BenchRequest)
        result = await self._offload(context, run_bench, bench_request, resolver=self._resolver)
        return convert.to_proto(result, planner_pb2.SimulateResponse())

    async def PlanCapacity(
        self, request: planner_pb2.PlanCapacityRequest, context: grpc.aio.ServicerContext
    ) -> planner_pb2.PlanCapacityResponse:
        capacity_request = convert.from_proto(request, CapacityRequest)
        result = await self._offload(context, run_capacity, capacity_request, resolver=self._resolver)
        return convert.to_proto(result, planner_pb2.PlanCapacityResponse())
