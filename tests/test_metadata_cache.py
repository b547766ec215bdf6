"""MetadataCache: TTL expiry, LRU size bound, counters, thread safety, and its use by the resolver."""

from __future__ import annotations

import json
import threading

import pytest
from fixtures.metadata.builders import TINY_CONFIG, write_sharded_model

from planner_service.engine.models import ModelOptions
from planner_service.engine.source import ModelSource
from planner_service.metadata.cache import CacheKey, MetadataCache
from planner_service.metadata.resolver import ModelResolver


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _source(name: str) -> ModelSource:
    return ModelSource(model=name, source="inline", config={"model_type": name})


def _key(name: str) -> CacheKey:
    return CacheKey(name, None, "repo")


def test_entries_expire_after_the_ttl():
    clock = FakeClock()
    cache = MetadataCache(ttl_seconds=60, clock=clock)
    cache.put(_key("a"), _source("a"))
    clock.now += 59.9
    assert cache.get(_key("a")).model == "a"
    clock.now += 0.2
    assert cache.get(_key("a")) is None
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.expirations, stats.size) == (1, 1, 1, 0)


def test_least_recently_used_entry_is_evicted_at_the_bound():
    cache = MetadataCache(max_entries=2)
    cache.put(_key("a"), _source("a"))
    cache.put(_key("b"), _source("b"))
    assert cache.get(_key("a")) is not None  # a is now the most recent
    cache.put(_key("c"), _source("c"))
    assert len(cache) == 2
    assert cache.get(_key("b")) is None
    assert cache.get(_key("a")) is not None and cache.get(_key("c")) is not None
    assert cache.stats().evictions == 1


def test_keys_distinguish_revision_and_kind():
    cache = MetadataCache()
    cache.put(CacheKey("m", None, "repo"), _source("main"))
    assert cache.get(CacheKey("m", "v2", "repo")) is None
    assert cache.get(CacheKey("m", None, "local")) is None
    assert cache.get(CacheKey("m", None, "repo")).model == "main"


@pytest.mark.parametrize("kwargs", [{"max_entries": 0}, {"ttl_seconds": 0}])
def test_invalid_bounds_are_rejected(kwargs):
    with pytest.raises(ValueError):
        MetadataCache(**kwargs)


def test_concurrent_use_keeps_the_bound_and_counts_every_lookup():
    cache = MetadataCache(max_entries=16)
    lookups_per_thread = 500

    def work(worker: int) -> None:
        for i in range(lookups_per_thread):
            key = _key(f"{worker}-{i % 40}")
            if cache.get(key) is None:
                cache.put(key, _source(key.model))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = cache.stats()
    assert stats.size <= 16
    assert stats.hits + stats.misses == 8 * lookups_per_thread


def test_resolver_serves_repeat_requests_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    folder = write_sharded_model(tmp_path / "tiny")
    resolver = ModelResolver(cache=MetadataCache(ttl_seconds=3600))
    first = resolver.resolve(ModelOptions(model=str(folder)))
    (folder / "config.json").write_text(json.dumps({**TINY_CONFIG, "num_hidden_layers": 99}))
    second = resolver.resolve(ModelOptions(model=str(folder)))
    assert second is first  # within the TTL the folder is not re-read
    assert (resolver.cache.hits, resolver.cache.misses) == (1, 1)
    resolver.resolve(ModelOptions(model="meta-llama/llama-3.1-8b-instruct"))
    resolver.resolve(ModelOptions(model="META-LLAMA/Llama-3.1-8B-Instruct"))
    assert (resolver.cache.hits, resolver.cache.misses) == (2, 2)


def test_expired_entry_is_reloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    clock = FakeClock()
    folder = write_sharded_model(tmp_path / "tiny")
    resolver = ModelResolver(cache=MetadataCache(ttl_seconds=10, clock=clock))
    resolver.resolve(ModelOptions(model=str(folder)))
    (folder / "config.json").write_text(json.dumps({**TINY_CONFIG, "num_hidden_layers": 99}))
    clock.now += 11
    assert resolver.resolve(ModelOptions(model=str(folder))).config["num_hidden_layers"] == 99


def test_inline_configs_are_not_cached():
    resolver = ModelResolver()
    resolver.resolve(ModelOptions(model="x", config_json=TINY_CONFIG))
    assert len(resolver.cache) == 0
