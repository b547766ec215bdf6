"""The embedded planner API: ``run_plan``, ``run_bench`` and ``run_capacity``.

Data flows one way: request -> model metadata (adapters) + hardware -> memory twin ->
recommendation -> performance -> artifacts -> response. Only the metadata step does I/O, and it is
done here, before the pure engine runs; pass your own ``resolver`` to control where metadata comes
from (the gRPC service passes one confined to its ``--model-root`` directories).
"""

from __future__ import annotations

from planner_service.engine.bench import PlannedEngine, simulate
from planner_service.engine.bench_models import BenchRequest, BenchResponse, CapacityRequest, CapacityResponse
from planner_service.engine.capacity import plan_capacity
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


def run_bench(request: BenchRequest, *, resolver: ModelResolver | None = None) -> BenchResponse:
    """Plan the configuration, then simulate ``vllm bench serve`` against it.

    A plan that would not start is answered without a simulation (empty ``metrics``; the plan's
    ``feasibility.error`` says why), as ``run_plan`` answers it.
    """
    source = (resolver or default_resolver()).resolve(request.plan.model)
    plan = complete_plan(build_plan(source, request.plan), request.plan, source=source)
    if not plan.feasibility.fits:
        return BenchResponse(metrics={}, preemptions=0, max_running_requests=0, engine_steps=0,
                             load=request.load, plan=plan)
    return simulate(PlannedEngine.from_plan(source, request.plan, plan), request.load)


def run_capacity(request: CapacityRequest, *, resolver: ModelResolver | None = None) -> CapacityResponse:
    """Search configurations and replica counts that serve ``request_rate`` within the SLOs."""
    source = (resolver or default_resolver()).resolve(request.plan.model)
    return plan_capacity(source, request)
