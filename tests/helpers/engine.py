"""Engine inputs from the verified config.json fixtures (``tests/fixtures/engine/model-configs``)."""

from __future__ import annotations

import json
from typing import Any

from helpers.paths import ENGINE_CONFIGS
from planner_service.engine.models import EngineOptions, HardwareOptions, ModelOptions, PlanRequest, PolicyOptions, WorkloadOptions
from planner_service.engine.source import ModelSource

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"

Section = dict[str, Any] | None


def config(name: str) -> dict:
    return json.loads((ENGINE_CONFIGS / name / "config.json").read_text())


def source(name: str) -> ModelSource:
    """The fixture config as the catalog would resolve it (no Hub, no local folder)."""
    return ModelSource(model=name, source="catalog", config=config(name))


def request(name: str = LLAMA, model: Section = None, hardware: Section = None, workload: Section = None,
            policy: Section = None, engine: Section = None) -> PlanRequest:
    """A PlanRequest from plain dicts per section; hardware defaults to one H100."""
    return PlanRequest(model=ModelOptions(model=name, **(model or {})),
                       hardware=HardwareOptions(**(hardware or {"gpu": "H100"})),
                       workload=WorkloadOptions(**(workload or {})), policy=PolicyOptions(**(policy or {})),
                       engine=EngineOptions(**(engine or {})))
