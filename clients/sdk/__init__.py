"""Python SDK of vllm-fleet-planner: typed clients of the planner service and the GPU agents.

Clients return pydantic objects (never protobuf) and raise the exceptions below::

    from clients.sdk import PlannerClient, NotFound
"""

from __future__ import annotations

import importlib
from typing import Any

from clients.sdk.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    SdkError,
    Unauthenticated,
    Unavailable,
    from_rpc_error,
)
from clients.sdk.planner_client import AsyncPlannerClient, PlannerClient

# Loaded on first use: the agent and fleet clients live in their own modules, and importing the SDK
# for the planner alone should not pay for (or depend on) them.
_LAZY = {
    "AgentClient": "clients.sdk.agent_client",
    "AsyncAgentClient": "clients.sdk.agent_client",
    "FakeAgent": "clients.sdk.testing",
    "FleetClient": "clients.sdk.fleet_client",
    "AsyncFleetClient": "clients.sdk.fleet_client",
}

__all__ = [
    "AgentClient",
    "AsyncAgentClient",
    "AsyncFleetClient",
    "AsyncPlannerClient",
    "DeadlineExceeded",
    "FakeAgent",
    "FleetClient",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "PlannerClient",
    "ResourceExhausted",
    "SdkError",
    "Unauthenticated",
    "Unavailable",
    "from_rpc_error",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
