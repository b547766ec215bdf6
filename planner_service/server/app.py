"""Settings and bootstrap of the planner gRPC server, separate from the servicer.

``build_planner_server(settings)`` starts a ``grpc.aio`` server (health, reflection, TLS, token and
graceful shutdown come from ``vllm_planner.transport.server``) with ``PlannerService`` registered;
other services (the fleet service) join the same server through ``extra_services``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import grpc
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from planner_service.fleet.runtime import FleetFlags
from planner_service.server.interceptor import ErrorMappingInterceptor
from planner_service.server.servicer import SERVICE_FULL_NAME, PlannerServicer
from vllm_planner.transport.config import ServerSettings
from vllm_planner.transport.server import RunningServer, start_server
from vllm_planner.v1 import planner_pb2_grpc


class PlannerServiceSettings(ServerSettings, FleetFlags):
    """``vllm-planner-service`` settings: flags > ``VLLM_PLANNER_*`` env > YAML (--config) > defaults."""

    model_config = SettingsConfigDict(env_prefix="VLLM_PLANNER_", extra="forbid", protected_namespaces=())

    model_root: list[Path] = Field(
        default_factory=list,
        description="Directory under which clients may name local model folders (none = no local paths).",
    )
    hub_timeout_seconds: float = Field(default=10.0, gt=0, le=600, description="Timeout of each Hugging Face Hub request.")
    cache_max_entries: int = Field(default=256, ge=1, description="Resolved model metadata kept in memory.")
    cache_ttl_seconds: float = Field(default=3600.0, gt=0, description="How long resolved metadata stays cached.")
    max_workers: int = Field(default=4, ge=1, le=256, description="Threads that run plans concurrently.")


@dataclass(frozen=True)
class ExtraService:
    """Another servicer to host on the same server (e.g. the fleet service)."""

    register: Callable[[grpc.aio.Server], None]
    full_name: str  # for health and reflection, e.g. "vllm_planner.v1.FleetService"


def build_resolver(settings: PlannerServiceSettings):  # noqa: ANN201  (ModelResolver)
    """The service's resolver: local folders only under the model roots, a shared bounded TTL cache."""
    from planner_service.metadata.cache import MetadataCache
    from planner_service.metadata.resolver import ModelResolver

    roots = [Path(root).expanduser().resolve() for root in settings.model_root]
    return ModelResolver(
        model_roots=roots,
        allow_local_paths=bool(roots),
        cache=MetadataCache(max_entries=settings.cache_max_entries, ttl_seconds=settings.cache_ttl_seconds),
        hub_timeout_seconds=settings.hub_timeout_seconds,
    )


async def build_planner_server(
    settings: PlannerServiceSettings,
    *,
    resolver=None,  # noqa: ANN001  (ModelResolver; default: build_resolver(settings))
    extra_services: Sequence[ExtraService] = (),
) -> RunningServer:
    """Start the planner server (must be awaited inside a running event loop)."""
    executor = ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="planner")
    servicer = PlannerServicer(resolver or build_resolver(settings), executor)

    def register(server: grpc.aio.Server) -> None:
        planner_pb2_grpc.add_PlannerServiceServicer_to_server(servicer, server)
        for extra in extra_services:
            extra.register(server)

    options = settings.server_options()
    options.interceptors = (*options.interceptors, ErrorMappingInterceptor())
    return await start_server(
        options,
        register=register,
        service_full_names=[SERVICE_FULL_NAME, *(extra.full_name for extra in extra_services)],
    )
