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

from planner_service.engine.errors import InvalidRequestError, invalid_request_from
from planner_service.engine.seed_profile import from_seed_profile, is_seed_profile
from planner_service.engine.models import (
    EngineOptions,
    HardwareOptions,
    ModelOptions,
    PlanRequest,
    PolicyOptions,
    WorkloadOptions,
)
from vllm_planner.bounded import InputError, load_yaml

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
            raise ValueError(f"unknown artifact kind(s) {', '.join(unknown)[:200]}; choose from {', '.join(ARTIFACT_KINDS)}")
        if not value:  # an empty list would write nothing and still "succeed"
            raise ValueError(f"names no artifact kind; choose from {', '.join(ARTIFACT_KINDS)} (or leave it out for all)")
        return list(dict.fromkeys(value))

    @field_validator("output_dir")
    @classmethod
    def _usable_dir(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or "\x00" in value):
            raise ValueError("must be a directory name (not empty, no NUL byte)")
        return value


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


def parse_profile_mapping(text: str, what: str = "profile") -> dict[str, Any]:
    """YAML text -> a plain mapping (not yet validated). Empty text is an empty profile.

    Parsed by the bounded loader: no aliases, no duplicate keys, a node and depth cap.
    """
    try:
        data = load_yaml(text, what=what)
    except InputError as exc:
        raise InvalidRequestError(str(exc)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidRequestError(f"{what}: the top level must be a mapping of sections (model:, hardware:, ...)")
    version = data.pop("profile_version", None)  # vllm-wizard profiles carry a version number
    for section, body in data.items():
        if body is not None and not isinstance(body, dict):
            raise InvalidRequestError.for_field(str(section)[:64], "a section must be a mapping")
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


def load_profile(text: str, overrides: dict[str, dict[str, Any]] | None = None, what: str = "profile") -> Profile:
    """A profile (this planner's, or one ``vllm-wizard generate`` wrote) with flag overrides merged in."""
    data = parse_profile_mapping(text, what)
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
