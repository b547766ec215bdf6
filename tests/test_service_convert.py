"""Round-trip of the planner's proto <-> pydantic converters.

The populated instances are built by walking the pydantic models, with a non-default value in every
field, so a field added to models.py without its proto twin is lost in the round trip and fails here.
"""

from __future__ import annotations

import typing
from enum import Enum
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined

from planner_service.engine.errors import InvalidRequestError
from planner_service.engine.models import (
    BatchingMode,
    ModelOptions,
    PlanRequest,
    PlanResponse,
)
from planner_service.engine.gpus import GpuSpec, list_gpus
from planner_service.metadata.catalog import CatalogEntry
from planner_service.server.convert import from_proto, to_proto
from planner_service.server.describe import ModelDescription
from vllm_planner.v1 import planner_pb2


def _non_none(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) in (typing.Union, __import__("types").UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def _sample(annotation: Any, name: str, default: Any) -> Any:
    """A valid value of ``annotation`` that differs from ``default``."""
    options = _non_none(annotation)
    annotation = options[0]
    if typing.get_origin(annotation) is typing.Annotated:  # constrained types (non-blank strings, ...)
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return populated(annotation)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return next(m for m in annotation if m != default)
    if origin is Literal:
        return next(v for v in reversed(typing.get_args(annotation)) if v != default)
    if origin in (list, tuple):
        item = typing.get_args(annotation)[0]
        return [_sample(item, name, None), _sample(item, name, None)]
    if origin is dict or annotation is dict:
        if typing.get_args(annotation) == (str, int):  # a counter map
            return {"full": 20, "sliding": 4}
        if typing.get_args(annotation) == (str, str):  # a text map (GpuSpec.sources)
            return {"memory_total_bytes": "REF row 18", "sm_count": "NVDS"}
        if typing.get_args(annotation):  # dict of scalars (Fix.changes): every scalar kind, and null
            return {"tp": 4, "util": 0.85, "dtype": "fp8", "eager": True, "limit": None, "big": 2**40}
        return {"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "rope": {"factor": 8.0}}
    if annotation is bool:
        return not default if isinstance(default, bool) else True
    if annotation is int:
        return 7 if default != 7 else 9
    if annotation is float:
        return 0.5 if default != 0.5 else 0.25
    if annotation is str:
        return f"{name}-value"
    raise AssertionError(f"no sample for {name}: {annotation!r}")


def populated(model_cls: type[BaseModel]) -> BaseModel:
    values = {}
    for name, field in model_cls.model_fields.items():
        default = None if field.default is PydanticUndefined else field.default
        value = _sample(field.annotation, name, default)
        assert value != default, f"{model_cls.__name__}.{name}: sample equals the default"
        values[name] = value
    return model_cls.model_validate(values)


def _all_fields_set(model: BaseModel, path: str = "") -> list[str]:
    """Dotted paths of fields that still hold their default (must be none for a real round trip)."""
    unset = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if field.default is not PydanticUndefined and value == field.default:
            unset.append(path + name)
        if isinstance(value, BaseModel):
            unset += _all_fields_set(value, f"{path}{name}.")
    return unset


@pytest.mark.parametrize(
    ("model_cls", "proto_cls"),
    [
        (PlanRequest, planner_pb2.PlanRequest),
        (PlanRequest, planner_pb2.GenerateArtifactsRequest),
        (PlanResponse, planner_pb2.PlanResponse),
        (PlanResponse, planner_pb2.GenerateArtifactsResponse),
        (GpuSpec, planner_pb2.GpuType),
        (CatalogEntry, planner_pb2.CatalogModel),
        (ModelDescription, planner_pb2.ModelDescription),
    ],
)
def test_fully_populated_round_trip(model_cls, proto_cls):
    original = populated(model_cls)
    assert _all_fields_set(original) == []
    message = to_proto(original, proto_cls())
    # Through the wire format too: presence and oneofs must survive serialization.
    wire = proto_cls.FromString(message.SerializeToString())
    back = from_proto(wire, model_cls)
    assert back == original
    assert back.model_dump_json() == original.model_dump_json()


def test_proto_has_a_field_for_every_model_field():
    def walk(model_cls, descriptor, path=""):
        missing = []
        for name, field in model_cls.model_fields.items():
            if name not in descriptor.fields_by_name:
                missing.append(path + name)
                continue
            proto_field = descriptor.fields_by_name[name]
            nested = next(
                (a for a in typing.get_args(field.annotation) + (field.annotation,)
                 if isinstance(a, type) and issubclass(a, BaseModel)),
                None,
            )
            if nested is not None and proto_field.message_type is not None:
                missing += walk(nested, proto_field.message_type, f"{path}{name}.")
        return missing

    assert walk(PlanRequest, planner_pb2.PlanRequest.DESCRIPTOR) == []
    assert walk(PlanResponse, planner_pb2.PlanResponse.DESCRIPTOR) == []


def test_every_catalog_gpu_round_trips():
    for gpu in list_gpus():
        assert from_proto(to_proto(gpu, planner_pb2.GpuType()), GpuSpec) == gpu


def test_max_model_len_auto_and_absent():
    for value in ("auto", 32768, None):
        request = PlanRequest(model=ModelOptions(model="m", max_model_len=value))
        assert from_proto(to_proto(request, planner_pb2.PlanRequest()), PlanRequest) == request


def test_absent_fields_take_the_model_defaults():
    message = planner_pb2.PlanRequest(model=planner_pb2.ModelOptions(model="Qwen/Qwen3-8B"))
    request = from_proto(message, PlanRequest)
    assert request == PlanRequest(model=ModelOptions(model="Qwen/Qwen3-8B"))
    assert request.workload.batching_mode is BatchingMode.BALANCED
    assert request.model.dtype == "auto" and request.hardware.gpu is None


def test_invalid_values_fail_validation_with_dotted_paths():
    message = planner_pb2.PlanRequest(
        model=planner_pb2.ModelOptions(model="m"),
        policy=planner_pb2.PolicyOptions(gpu_memory_utilization=1.5),
        hardware=planner_pb2.HardwareOptions(tensor_parallel_size=0),
    )
    with pytest.raises(ValidationError) as info:
        from_proto(message, PlanRequest)
    paths = {".".join(map(str, e["loc"])) for e in info.value.errors()}
    assert paths == {"policy.gpu_memory_utilization", "hardware.tensor_parallel_size"}


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_bad_inline_config_json_names_the_field(text):
    message = planner_pb2.PlanRequest(model=planner_pb2.ModelOptions(model="m", config_json=text))
    with pytest.raises(InvalidRequestError) as info:
        from_proto(message, PlanRequest)
    assert [v.field for v in info.value.violations] == ["model.config_json"]
