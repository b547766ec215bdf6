"""The central planner: a pure planning engine plus the adapters and gRPC service around it.

- ``planner_service.engine``: pure code, no I/O (metadata parsing, memory twin, recommendation,
  performance, artifact rendering).
- ``planner_service.metadata``: adapters that fetch model metadata (local folders, Hugging Face Hub,
  the bundled catalog).
- ``planner_service.api``: ``run_plan(PlanRequest) -> PlanResponse``, the embedded entry point that
  composes the adapters with the engine. The CLI and the gRPC servicer are thin layers over it.
"""
