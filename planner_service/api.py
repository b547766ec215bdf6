"""The embedded planner API: ``run_plan(PlanRequest) -> PlanResponse``.

Data flows one way: request -> model metadata (adapters) + hardware -> memory twin ->
recommendation -> performance -> artifacts -> response. Only the metadata step does I/O, and it is
done here, before the pure engine runs; pass your own ``resolver`` to control where metadata comes
from (the gRPC service passes one confined to its ``--model-root`` directories).
"""

from __future__ import annotations

from planner_service.engine.models import PlanRequest, PlanResponse
from planner_service.engine.pipeline import complete_plan
from planner_service.engine.plan import build_plan
from planner_service.metadata.resolver import ModelResolver

_default_resolver: ModelResolver | None = None


def default_resolver() -> ModelResolver:
    global _default_resolver
    if _default_resolver is None:
        _default_resolver = ModelResolver()
    return _default_resolver


def run_plan(request: PlanRequest, *, resolver: ModelResolver | None = None) -> PlanResponse:
    """Resolve the model's metadata, then run the pure planning engine on it."""
    source = (resolver or default_resolver()).resolve(request.model)
    return complete_plan(build_plan(source, request), request, source=source)
