"""YAML plan profiles: text <-> (PlanRequest, OutputOptions). Pure: no file or network access.

A profile mirrors the request section by section (``model:``, ``hardware:``, ``workload:``,
``policy:``, ``engine:``) plus an ``outputs:`` section for CLI output options. Every section is
validated by the same pydantic models as the request (``extra="forbid"``), so an unknown key anywhere
is an error that names its dotted path (``hardware.tensor_paralel_size: Extra inputs are not
permitted``). Callers merge command-line overrides into the mapping *before* validation
(``merge_overrides``) so that a value is checked once, wherever it came from.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from planner_service.engine.errors import FieldViolation, InvalidRequestError
from planner_service.engine.seed_profile import from_seed_profile, is_seed_profile
from planner_service.engine.models import (
    EngineOptions,
    HardwareOptions,
    ModelOptions,
    PlanRequest,
    PolicyOptions,
    WorkloadOptions,
)

ARTIFACT_KINDS = ("command", "profile", "compose", "k8s", "helm")
REQUEST_SECTIONS = ("model", "hardware", "workload", "policy", "engine")


class OutputOptions(BaseModel):
    """How the CLI presents a plan; not part of the request (the service never sees it)."""

    json_output: bool = Field(default=False, alias="json")
    explain: bool = False
    emit: list[str] = Field(default_factory=lambda: list(ARTIFACT_KINDS))
    output_dir: str | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("emit", mode="before")
    @classmethod
    def _split_emit(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("emit")
    @classmethod
    def _known_kinds(cls, value: list[str]) -> list[str]:
        unknown = [kind for kind in value if kind not in ARTIFACT_KINDS]
        if unknown:
            raise ValueError(f"unknown artifact kind(s) {', '.join(unknown)}; choose from {', '.join(ARTIFACT_KINDS)}")
        return list(dict.fromkeys(value))


class Profile(BaseModel):
    """A whole profile document. ``model`` is the only required section (as in PlanRequest)."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model: ModelOptions
    hardware: HardwareOptions = HardwareOptions()
    workload: WorkloadOptions = WorkloadOptions()
    policy: PolicyOptions = PolicyOptions()
    engine: EngineOptions = EngineOptions()
    outputs: OutputOptions = OutputOptions()

    def to_request(self) -> PlanRequest:
        data = self.model_dump(exclude={"outputs"}, exclude_unset=True)
        return PlanRequest.model_validate(data)


def invalid_request_from(exc: ValidationError, prefix: str = "") -> InvalidRequestError:
    """Turn a pydantic error into one InvalidRequestError whose message names each dotted field path."""
    violations = []
    for error in exc.errors():
        path = ".".join(str(part) for part in error["loc"])
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        violations.append(FieldViolation(path or "<root>", error["msg"]))
    message = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return InvalidRequestError(message, violations)


def parse_profile_mapping(text: str) -> dict[str, Any]:
    """YAML text -> a plain mapping (not yet validated). Empty text is an empty profile."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise InvalidRequestError(f"profile: {problem}{where}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidRequestError("profile: the top level must be a mapping of sections (model:, hardware:, ...)")
    version = data.pop("profile_version", None)  # vllm-wizard profiles carry a version number
    for section, body in data.items():
        if body is not None and not isinstance(body, dict):
            raise InvalidRequestError.for_field(str(section), "a section must be a mapping")
    sections = {key: dict(body or {}) for key, body in data.items()}
    if version is not None:
        sections["profile_version"] = version
    return sections


def merge_overrides(base: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Section-wise merge: a key present in ``overrides`` (e.g. from a flag) wins over the profile."""
    merged = {section: dict(body) for section, body in base.items()}
    for section, body in overrides.items():
        if body:
            merged.setdefault(section, {}).update(body)
    return merged


def validate_profile(data: dict[str, Any]) -> Profile:
    """Validate a merged mapping; raise InvalidRequestError naming the dotted path of each problem."""
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        raise invalid_request_from(exc) from None


def load_profile(text: str, overrides: dict[str, dict[str, Any]] | None = None) -> Profile:
    """A profile (this planner's, or one ``vllm-wizard generate`` wrote) with flag overrides merged in."""
    data = parse_profile_mapping(text)
    if is_seed_profile(data):
        data = from_seed_profile(data)
    return validate_profile(merge_overrides(data, overrides or {}))


def dump_profile(request: PlanRequest, outputs: OutputOptions | None = None) -> str:
    """The profile YAML that reproduces ``request``: only what was set, in section order."""
    doc: dict[str, Any] = {}
    for section in REQUEST_SECTIONS:
        body = getattr(request, section).model_dump(mode="json", exclude_unset=True, exclude_none=True)
        if section == "model" or body:
            doc[section] = body
    if outputs is not None:
        out = outputs.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude_none=True)
        if out:
            doc["outputs"] = out
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
