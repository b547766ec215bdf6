"""The bundled offline catalog: verified config.json files shipped inside the package.

It answers instantly and without network for the popular models (the README Quickstart plans
``meta-llama/Llama-3.1-8B-Instruct`` on a machine with no Hub access). Lookup is by exact repo id,
case-insensitively; the canonical id (as published) is what the ModelSource carries. Regenerate the
data with ``python -m planner_service.metadata.build_catalog``.
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from planner_service.engine.source import ModelSource
from planner_service.metadata.config_file import parse_json_object


class CatalogEntry(BaseModel):
    """One bundled model. ``params``/``total_size_bytes`` are stated by a published source, not measured."""

    model_config = ConfigDict(extra="ignore", frozen=True, protected_namespaces=())

    id: str
    architecture: str | None = None
    model_type: str | None = None
    verified: str = "unknown"  # "yes" = two independent copies agree; "partial" = one source
    verbatim: bool = False  # False = rebuilt or trimmed: a missing key is not proof of absence
    params: int | None = None
    total_size_bytes: int | None = None
    path: str


def _catalog_root() -> Path:
    return Path(str(resources.files("planner_service.metadata") / "catalog"))


@functools.lru_cache(maxsize=1)
def _index() -> dict[str, CatalogEntry]:
    raw = parse_json_object((_catalog_root() / "index.json").read_bytes(), what="catalog/index.json")
    entries = [CatalogEntry.model_validate(item) for item in raw.get("models", [])]
    return {entry.id.lower(): entry for entry in entries}


def list_catalog() -> list[CatalogEntry]:
    """Every bundled model, sorted by id."""
    return sorted(_index().values(), key=lambda entry: entry.id.lower())


def find_catalog_entry(model_id: str) -> CatalogEntry | None:
    """The entry whose id equals ``model_id`` ignoring case, or None."""
    return _index().get(model_id.strip().lower())


@functools.lru_cache(maxsize=64)
def _load_config(relative_path: str) -> dict:
    return parse_json_object((_catalog_root() / relative_path).read_bytes(), what=f"catalog/{relative_path}")


def load_catalog_source(model_id: str) -> ModelSource | None:
    """The bundled ModelSource for ``model_id``, or None when it is not in the catalog."""
    entry = find_catalog_entry(model_id)
    if entry is None:
        return None
    # A copy: ModelSource is frozen but its dict is not, and the cached config must never change.
    config = copy.deepcopy(_load_config(entry.path))
    quant_path = str(Path(entry.path).parent / "hf_quant_config.json")
    if config.get("quantization_config") is None and (_catalog_root() / quant_path).is_file():
        config["quantization_config"] = copy.deepcopy(_load_config(quant_path))  # as vLLM applies it
    return ModelSource(
        model=entry.id,
        source="catalog",
        config=config,
        known_num_params=entry.params,
        known_total_size_bytes=entry.total_size_bytes,
    )
