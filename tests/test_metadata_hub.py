"""Hub adapter: huggingface_hub's real client against a local fake Hub, an unreachable Hub, offline."""

from __future__ import annotations

import json
import socket
import time

import pytest
from fixtures.metadata.builders import SHARD1, SHARD2, TINY_CONFIG, FakeHub, safetensors_bytes

from planner_service.engine.errors import MetadataUnavailableError, ModelNotFoundError, PermissionDeniedError
from planner_service.engine.models import ModelOptions
from planner_service.metadata.resolver import ModelResolver

UNREACHABLE = "http://127.0.0.1:9"  # discard port: connection refused at once


@pytest.fixture(autouse=True)
def _isolated_hf(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", UNREACHABLE)


def _tiny_repo() -> dict[str, bytes]:
    return {"config.json": json.dumps(TINY_CONFIG).encode(), "model.safetensors": safetensors_bytes({**SHARD1, **SHARD2})}


def test_hub_download_gives_config_exact_counts_and_pinned_commit(monkeypatch, tmp_path):
    with FakeHub({"acme/tiny": _tiny_repo()}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        source = ModelResolver().resolve(ModelOptions(model="acme/tiny"))
    assert source.source == "hub"
    assert source.config == TINY_CONFIG
    assert source.revision == hub.commit
    assert source.safetensors is not None
    assert source.safetensors.parameters_by_dtype == {"BF16": 100 * 64 + 128 * 64 + 100 * 64, "F32": 64}
    assert source.safetensors.tensors["model.norm.weight"].shape == (64,)
    # Only headers were fetched: every GET of the weights file was a Range request (never the data).
    weight_gets = [r for r in hub.requests if r.startswith("GET") and "/model.safetensors" in r]
    assert weight_gets and all(" range=bytes=" in r for r in weight_gets)
    # config.json landed in the HF cache: the next resolver finds it there with the Hub gone.
    again = ModelResolver().resolve(ModelOptions(model="acme/tiny"))
    assert again.source == "hf-cache" and again.config == TINY_CONFIG and again.revision == hub.commit


def test_hub_without_safetensors_still_resolves_config(monkeypatch):
    with FakeHub({"acme/binonly": {"config.json": json.dumps(TINY_CONFIG).encode()}}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        source = ModelResolver().resolve(ModelOptions(model="acme/binonly"))
    assert source.source == "hub" and source.safetensors is None


def test_unknown_repo_is_model_not_found(monkeypatch):
    with FakeHub({}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        with pytest.raises(ModelNotFoundError, match="no such model"):
            ModelResolver().resolve(ModelOptions(model="acme/missing"))


def test_repo_without_config_is_model_not_found(monkeypatch):
    with FakeHub({"acme/noconfig": {"README.md": b"hi"}}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        with pytest.raises(ModelNotFoundError, match="config.json"):
            ModelResolver().resolve(ModelOptions(model="acme/noconfig"))


def test_gated_repo_is_permission_denied_with_advice(monkeypatch):
    with FakeHub({"acme/gated": _tiny_repo()}, gated={"acme/gated"}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        with pytest.raises(PermissionDeniedError, match="HF_TOKEN"):
            ModelResolver().resolve(ModelOptions(model="acme/gated"))


def test_oversized_remote_config_is_refused_before_download(monkeypatch):
    huge = b"{" + b" " * (5 << 20) + b"}"
    with FakeHub({"acme/huge": {"config.json": huge}}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        with pytest.raises(MetadataUnavailableError, match="limit"):
            ModelResolver().resolve(ModelOptions(model="acme/huge"))
        assert not any(r.startswith("GET") for r in hub.requests)


def test_unreachable_hub_fails_fast_with_unavailable():
    start = time.monotonic()
    with pytest.raises(MetadataUnavailableError, match="unreachable"):
        ModelResolver(hub_timeout_seconds=2).resolve(ModelOptions(model="acme/not-cached"))
    assert time.monotonic() - start < 2.0


@pytest.mark.parametrize("how", ["env", "argument"])
def test_offline_never_touches_the_network(monkeypatch, how):
    with FakeHub({"acme/tiny": _tiny_repo()}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        if how == "env":
            monkeypatch.setenv("HF_HUB_OFFLINE", "1")
            resolver = ModelResolver()
        else:
            resolver = ModelResolver(offline=True)
        with pytest.raises(MetadataUnavailableError, match="offline"):
            resolver.resolve(ModelOptions(model="acme/tiny"))
        assert hub.requests == []


def test_token_from_environment_is_sent(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_from_env")
    seen: list[str | None] = []
    with FakeHub({"acme/tiny": _tiny_repo()}) as hub:
        hub.on_request = lambda headers: seen.append(headers.get("Authorization"))
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        ModelResolver().resolve(ModelOptions(model="acme/tiny"))
        ModelResolver(token="hf_explicit").resolve(ModelOptions(model="acme/tiny", revision="v1"))
    assert "Bearer hf_secret_from_env" in seen
    assert "Bearer hf_explicit" in seen


def test_silent_hub_times_out_after_the_configured_timeout(monkeypatch):
    # A listening socket that never answers: the request must give up after hub_timeout_seconds.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        start = time.monotonic()
        with pytest.raises(MetadataUnavailableError, match="unreachable"):
            ModelResolver(hub_timeout_seconds=0.5).resolve(ModelOptions(model="acme/slow"))
        assert time.monotonic() - start < 3.0
