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

from pathlib import Path
from typing import Any

import grpc

from clients.sdk.errors import from_rpc_error
from planner_service.engine.gpus import GpuSpec
from planner_service.engine.models import ModelOptions, PlanRequest, PlanResponse
from planner_service.metadata.catalog import CatalogEntry
from planner_service.server import convert
from planner_service.server.describe import ModelDescription
from vllm_planner.transport.channel import ChannelOptions, create_aio_channel, create_channel
from vllm_planner.v1 import planner_pb2, planner_pb2_grpc

SERVICE_FULL_NAME = planner_pb2.DESCRIPTOR.services_by_name["PlannerService"].full_name

# Planning may resolve metadata from the Hub first; listing is local and instant.
DEFAULT_TIMEOUTS_SECONDS: dict[str, float] = {
    "Plan": 60.0,
    "GenerateArtifacts": 60.0,
    "ListGpuTypes": 10.0,
    "ListCatalogModels": 10.0,
    "DescribeModel": 30.0,
}


def _channel_options(
    target: str,
    tls: bool,
    tls_ca_file: str | Path | None,
    tls_cert_file: str | Path | None,
    tls_key_file: str | Path | None,
    tls_server_name: str | None,
    token: str | None,
) -> ChannelOptions:
    return ChannelOptions(
        target=target,
        tls=tls,
        tls_ca_file=Path(tls_ca_file) if tls_ca_file else None,
        tls_cert_file=Path(tls_cert_file) if tls_cert_file else None,
        tls_key_file=Path(tls_key_file) if tls_key_file else None,
        tls_server_name=tls_server_name,
        auth_token=token,
        retry_methods=(SERVICE_FULL_NAME,),
    )


def _model_options(model: str | ModelOptions) -> ModelOptions:
    return model if isinstance(model, ModelOptions) else ModelOptions(model=model)


class _Base:
    def __init__(
        self,
        target: str,
        *,
        tls: bool = False,
        tls_ca_file: str | Path | None = None,
        tls_cert_file: str | Path | None = None,
        tls_key_file: str | Path | None = None,
        tls_server_name: str | None = None,
        token: str | None = None,
        timeout_seconds: float | None = None,
    ) -> None:
        """Args:
        target: ``HOST:PORT`` of the planner service.
        tls: use TLS (implied by any ``tls_*_file``); ``tls_ca_file`` None = the system roots.
        tls_cert_file, tls_key_file: client certificate and key for mutual TLS.
        tls_server_name: name to check the server certificate against, when it differs from the host.
        token: bearer token the service was started with (``--auth-token``).
        timeout_seconds: deadline of every call; None = the per-method defaults.
        """
        self._options = _channel_options(
            target, tls, tls_ca_file, tls_cert_file, tls_key_file, tls_server_name, token
        )
        self._timeout_seconds = timeout_seconds

    def _call_kwargs(self, method: str, timeout_seconds: float | None) -> dict[str, Any]:
        timeout = timeout_seconds or self._timeout_seconds or DEFAULT_TIMEOUTS_SECONDS[method]
        return {"timeout": timeout, "metadata": self._options.auth_metadata() or None}


class PlannerClient(_Base):
    """Synchronous client. Thread-safe; reuse one per process and ``close()`` it (or use ``with``)."""

    def __init__(self, target: str, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        self._channel = create_channel(self._options)
        self._stub = planner_pb2_grpc.PlannerServiceStub(self._channel)

    def _call(self, method: str, request: Any, timeout_seconds: float | None) -> Any:
        try:
            return getattr(self._stub, method)(request, **self._call_kwargs(method, timeout_seconds))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

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

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "PlannerClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncPlannerClient(_Base):
    """asyncio twin of ``PlannerClient`` (create it inside the event loop that uses it)."""

    def __init__(self, target: str, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        self._channel = create_aio_channel(self._options)
        self._stub = planner_pb2_grpc.PlannerServiceStub(self._channel)

    async def _call(self, method: str, request: Any, timeout_seconds: float | None) -> Any:
        try:
            return await getattr(self._stub, method)(request, **self._call_kwargs(method, timeout_seconds))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

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

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncPlannerClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
