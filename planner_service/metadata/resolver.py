"""ModelResolver: turn ``ModelOptions`` into raw metadata (a ModelSource), trying sources in order.

Order: inline ``config_json`` -> local folder -> HF cache -> bundled catalog -> Hugging Face Hub.
Everything before the Hub is local and instant, so with no network the answer comes from the
catalog or the cache at once; the Hub is asked last and fails fast (see ``hub.py``). A pinned
``revision`` other than ``main`` skips the catalog: its configs are not tied to a commit, and a
pinned request must not silently get a different one.

Results are cached in a ``MetadataCache`` shared by every request of a service; the local-path
confinement runs before the cache is consulted, so a cached entry never bypasses it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from planner_service.engine.errors import InvalidRequestError, MetadataUnavailableError, ModelNotFoundError
from planner_service.engine.models import ModelOptions
from planner_service.engine.source import ModelSource
from planner_service.metadata.cache import CacheKey, MetadataCache
from planner_service.metadata.catalog import load_catalog_source
from planner_service.metadata.config_file import validate_inline_config
from planner_service.metadata.hf_cache import hf_cache_dir, load_from_hf_cache
from planner_service.metadata.hub import fetch_from_hub
from planner_service.metadata.local import Confinement, find_local_folder, load_local_folder
from vllm_planner.bounded import shown

_TRUE = {"1", "true", "yes", "on"}


def _env_offline() -> bool:
    env = os.environ
    return (env.get("HF_HUB_OFFLINE") or env.get("TRANSFORMERS_OFFLINE") or "").strip().lower() in _TRUE


def _check_revision(revision: str | None) -> None:
    # A revision becomes a path component inside the HF cache (refs/<revision>); keep it one.
    if revision is not None and (
        not revision.strip() or ".." in revision or revision.startswith("/") or "\\" in revision or len(revision) > 256
    ):
        raise InvalidRequestError.for_field("model.revision", f"{shown(revision)} is not a valid git revision")


class ModelResolver:
    """Resolve a model name to its config.json and checkpoint header counts.

    ``model_roots``: when given, local folders are read only inside these directories (the gRPC
    server passes its ``--model-root`` list); relative names are looked up under each root.
    ``allow_local_paths=False`` disables local folders entirely. ``offline=None`` follows
    ``HF_HUB_OFFLINE`` at each call; ``token=None`` uses ``HF_TOKEN`` at each call.
    """

    def __init__(
        self,
        *,
        model_roots: Sequence[Path] | None = None,
        allow_local_paths: bool = True,
        hub_timeout_seconds: float = 10.0,
        offline: bool | None = None,
        token: str | None = None,
        cache: MetadataCache | None = None,
    ) -> None:
        if hub_timeout_seconds <= 0:
            raise ValueError("hub_timeout_seconds must be positive")
        self._confinement = Confinement(model_roots)
        self._allow_local_paths = allow_local_paths
        self._hub_timeout_seconds = hub_timeout_seconds
        self._offline = offline
        self._token = token
        self.cache = cache if cache is not None else MetadataCache()

    @property
    def offline(self) -> bool:
        return self._offline if self._offline is not None else _env_offline()

    def resolve(self, options: ModelOptions) -> ModelSource:
        """The ModelSource for ``options``; raises the planner's domain errors on failure."""
        name = options.model.strip()
        if options.config_json is not None:
            return ModelSource(
                model=name or "inline",
                source="inline",
                config=validate_inline_config(options.config_json),
                revision=options.revision,
            )
        if not name:
            raise ModelNotFoundError("no model named: give a Hub repo id, a local folder or config_json")

        folder = find_local_folder(name, self._confinement, allow_local_paths=self._allow_local_paths)
        if folder is not None:
            key = CacheKey(os.path.realpath(folder), None, "local")
            return self._cached(key, lambda: load_local_folder(folder, name=name, confinement=self._confinement))

        _check_revision(options.revision)
        key = CacheKey(name.lower(), options.revision, "repo")
        return self._cached(key, lambda: self._resolve_repo(name, options.revision))

    def _cached(self, key: CacheKey, load: Callable[[], ModelSource]) -> ModelSource:
        from vllm_planner.transport.metrics import HUB_CACHE_REQUESTS_TOTAL

        hit = self.cache.get(key)
        if hit is not None:
            HUB_CACHE_REQUESTS_TOTAL.labels(result="hit").inc()
            return hit
        try:
            source = load()
        except Exception:
            HUB_CACHE_REQUESTS_TOTAL.labels(result="error").inc()
            raise
        HUB_CACHE_REQUESTS_TOTAL.labels(result="miss").inc()
        self.cache.put(key, source)
        return source

    def _resolve_repo(self, repo_id: str, revision: str | None) -> ModelSource:
        cache_dir = hf_cache_dir()
        cached = load_from_hf_cache(repo_id, revision=revision, cache_dir=cache_dir)
        if cached is not None:
            return cached
        if revision in (None, "main"):
            bundled = load_catalog_source(repo_id)
            if bundled is not None:
                return bundled
        if self.offline:
            raise MetadataUnavailableError(
                f"{repo_id}: not in the bundled catalog or the HF cache ({cache_dir}), and Hub access is "
                "offline (HF_HUB_OFFLINE); pass config_json or a local folder"
            )
        return fetch_from_hub(
            repo_id,
            revision=revision,
            token=self._token or os.environ.get("HF_TOKEN") or None,
            timeout_seconds=self._hub_timeout_seconds,
            cache_dir=cache_dir,
        )
