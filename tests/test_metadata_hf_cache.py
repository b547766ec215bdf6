"""The local HF cache: huggingface_hub's layout built in a tmp dir, found through the real lookup."""

from __future__ import annotations

import json

import pytest
from fixtures.metadata.builders import SHARD1, TINY_CONFIG, safetensors_bytes, write_hf_cache_repo

from planner_service.engine.errors import MetadataUnavailableError
from planner_service.engine.models import ModelOptions
from planner_service.metadata.hf_cache import hf_cache_dir, list_cached_models, load_from_hf_cache
from planner_service.metadata.resolver import ModelResolver

OLD, NEW = "a" * 40, "b" * 40


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    old_config = {**TINY_CONFIG, "num_hidden_layers": 1}
    write_hf_cache_repo(cache, "acme/tiny", {"config.json": json.dumps(old_config).encode()}, commit=OLD, ref=None)
    write_hf_cache_repo(
        cache,
        "acme/tiny",
        {"config.json": json.dumps(TINY_CONFIG).encode(), "model.safetensors": safetensors_bytes(SHARD1)},
        commit=NEW,
        ref="main",
    )
    return cache


def test_main_ref_resolves_to_its_snapshot_with_exact_counts(hf_cache):
    source = ModelResolver().resolve(ModelOptions(model="acme/tiny"))
    assert source.source == "hf-cache"
    assert source.revision == NEW
    assert source.config == TINY_CONFIG
    assert source.safetensors.parameters_by_dtype == {"BF16": 100 * 64 + 128 * 64}


def test_pinned_commit_is_honoured(hf_cache):
    source = ModelResolver().resolve(ModelOptions(model="acme/tiny", revision=OLD))
    assert source.revision == OLD and source.config["num_hidden_layers"] == 1
    assert source.safetensors is None  # that snapshot has only config.json


def test_unknown_revision_is_not_served_from_another_snapshot(hf_cache):
    with pytest.raises(MetadataUnavailableError, match="unreachable"):
        ModelResolver().resolve(ModelOptions(model="acme/tiny", revision="c" * 40))


def test_hf_cache_beats_the_catalog(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    cfg = {**TINY_CONFIG, "marker": "from-cache"}
    write_hf_cache_repo(cache, "meta-llama/Llama-3.1-8B-Instruct", {"config.json": json.dumps(cfg).encode()}, commit=OLD)
    source = ModelResolver(offline=True).resolve(ModelOptions(model="meta-llama/Llama-3.1-8B-Instruct"))
    assert source.source == "hf-cache" and source.config["marker"] == "from-cache"


def test_hf_home_is_honoured_at_call_time(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hf_cache_dir() == tmp_path / "home" / "hub"
    write_hf_cache_repo(tmp_path / "home" / "hub", "acme/x", {"config.json": json.dumps(TINY_CONFIG).encode()}, commit=NEW)
    assert load_from_hf_cache("acme/x", revision=None).revision == NEW
    assert list_cached_models() == ["acme/x"]


def test_invalid_repo_ids_and_misses_return_none(hf_cache):
    assert load_from_hf_cache("not a repo id!", revision=None) is None
    assert load_from_hf_cache("acme/absent", revision=None) is None


def test_corrupt_cached_config_is_an_invalid_request(tmp_path, monkeypatch):
    from planner_service.engine.errors import InvalidRequestError

    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    write_hf_cache_repo(cache, "acme/broken", {"config.json": b"<html>rate limited</html>"}, commit=NEW)
    with pytest.raises(InvalidRequestError, match="acme/broken/config.json"):
        ModelResolver(offline=True).resolve(ModelOptions(model="acme/broken"))


@pytest.mark.parametrize("revision", ["../../../etc", "/abs", "", "main/../x"])
def test_path_like_revisions_are_refused(hf_cache, revision):
    from pydantic import ValidationError

    from planner_service.engine.errors import InvalidRequestError

    # An empty revision is refused by the request model itself; the others by the resolver.
    with pytest.raises((InvalidRequestError, ValidationError), match="revision"):
        ModelResolver().resolve(ModelOptions(model="acme/tiny", revision=revision))


def test_branch_names_with_slashes_are_valid_revisions(hf_cache):
    write_hf_cache_repo(hf_cache, "acme/tiny", {"config.json": json.dumps(TINY_CONFIG).encode()}, commit=OLD, ref="refs/pr/1")
    assert ModelResolver().resolve(ModelOptions(model="acme/tiny", revision="refs/pr/1")).revision == OLD
