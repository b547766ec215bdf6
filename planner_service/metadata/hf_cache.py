"""The local Hugging Face cache (what ``vllm serve`` / ``hf download`` already fetched).

Lookup uses huggingface_hub's own ``try_to_load_from_cache`` so refs (``main`` -> commit), pinned
commits and the ``.no_exist`` markers behave exactly as they do for vLLM. The cache location is
read from the environment at call time (``HF_HUB_CACHE``, ``HUGGINGFACE_HUB_CACHE``, ``HF_HOME``,
``XDG_CACHE_HOME``), not from huggingface_hub's import-time constants, so a server or test that
changes the environment after import is honoured. The cache is configured by the operator, not
named by clients, so it is not subject to the model-root confinement.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import scan_cache_dir, try_to_load_from_cache
from huggingface_hub.errors import CacheNotFound, HFValidationError

from planner_service.engine.source import ModelSource
from planner_service.metadata.config_file import read_json_object
from planner_service.engine.mistral_format import PARAMS_FILE
from planner_service.metadata.local import is_mistral_format, load_mistral_folder, with_hf_quant_config
from planner_service.metadata.safetensors import summarize_folder

CONFIG_FILE = "config.json"


def hf_cache_dir() -> Path:
    """The hub cache folder, resolved from the environment the way huggingface_hub documents it."""
    env = os.environ
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(os.path.expanduser(explicit)))
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(os.path.expandvars(os.path.expanduser(home))) / "hub"


def load_from_hf_cache(repo_id: str, *, revision: str | None, cache_dir: Path | None = None) -> ModelSource | None:
    """The cached snapshot's config.json (+ safetensors headers when the weights are cached), or None."""
    directory = cache_dir or hf_cache_dir()
    try:
        found = try_to_load_from_cache(repo_id, CONFIG_FILE, cache_dir=str(directory), revision=revision)
        params = try_to_load_from_cache(repo_id, PARAMS_FILE, cache_dir=str(directory), revision=revision)
    except (HFValidationError, ValueError):
        return None  # not a valid repo id: it cannot be in the cache
    if isinstance(params, str) and is_mistral_format(Path(params).parent):  # vLLM prefers the Mistral format
        snapshot = Path(params).parent
        return load_mistral_folder(snapshot, name=repo_id, check=None, source="hf-cache", revision=snapshot.name)
    if not isinstance(found, str):
        return None  # not cached, or cached as "does not exist"
    config_path = Path(found)
    snapshot = config_path.parent
    config = with_hf_quant_config(read_json_object(config_path, what=f"{repo_id}/{CONFIG_FILE} (HF cache)"),
                                  snapshot, None, repo_id)
    return ModelSource(
        model=repo_id,
        source="hf-cache",
        config=config,
        safetensors=summarize_folder(snapshot),
        revision=snapshot.name,
    )


def list_cached_models(cache_dir: Path | None = None) -> list[str]:
    """Repo ids of the models in the HF cache that have a config.json in some snapshot."""
    try:
        info = scan_cache_dir(cache_dir or hf_cache_dir())
    except CacheNotFound:
        return []
    names = {
        repo.repo_id
        for repo in info.repos
        if repo.repo_type == "model"
        and any(file.file_name == CONFIG_FILE for rev in repo.revisions for file in rev.files)
    }
    return sorted(names)
