"""Local folders through ModelResolver: reading, model-root confinement and malformed configs."""

from __future__ import annotations

import json
import os

import pytest
from fixtures.metadata.builders import TINY_CONFIG, TINY_PARAMS_BY_DTYPE, write_safetensors, write_sharded_model

from planner_service.engine.errors import InvalidRequestError, ModelNotFoundError, PermissionDeniedError
from planner_service.engine.models import ModelOptions
from planner_service.metadata.resolver import ModelResolver


@pytest.fixture(autouse=True)
def _no_hub(tmp_path, monkeypatch):
    # Any accidental Hub call fails at once instead of reaching the network.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))


@pytest.fixture
def roots(tmp_path):
    root = tmp_path / "models"
    write_sharded_model(root / "tiny")
    outside = tmp_path / "outside"
    write_sharded_model(outside / "secret")
    return root, outside


def resolve(name: str, **kwargs):
    return ModelResolver(**kwargs).resolve(ModelOptions(model=name))


def test_local_folder_gives_config_and_exact_counts(tmp_path):
    folder = write_sharded_model(tmp_path / "tiny")
    source = resolve(str(folder))
    assert source.source == "local"
    assert source.model == str(folder)
    assert source.config == TINY_CONFIG
    assert source.safetensors.parameters_by_dtype == TINY_PARAMS_BY_DTYPE


def test_relative_path_from_working_directory(tmp_path, monkeypatch):
    write_sharded_model(tmp_path / "tiny")
    monkeypatch.chdir(tmp_path)
    assert resolve("./tiny").source == "local"


def test_folder_without_weights_has_no_summary(tmp_path):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text(json.dumps(TINY_CONFIG))
    source = resolve(str(tmp_path / "cfg"))
    assert source.safetensors is None and source.config == TINY_CONFIG


def test_inside_a_root_by_absolute_or_relative_name(roots):
    root, _ = roots
    assert resolve(str(root / "tiny"), model_roots=[root]).source == "local"
    assert resolve("tiny", model_roots=[root]).config == TINY_CONFIG  # relative names live under the roots


@pytest.mark.parametrize("name", ["../outside/secret", "../../etc", "tiny/../../outside/secret"])
def test_traversal_out_of_the_roots_is_denied(roots, name):
    root, _ = roots
    with pytest.raises(PermissionDeniedError, match="outside"):
        resolve(name, model_roots=[root])


def test_absolute_path_outside_roots_is_denied_even_if_missing(roots):
    root, outside = roots
    with pytest.raises(PermissionDeniedError):
        resolve(str(outside / "secret"), model_roots=[root])
    with pytest.raises(PermissionDeniedError):  # no existence oracle outside the roots
        resolve("/etc/definitely-not-here", model_roots=[root])


def test_symlinked_folder_escaping_the_root_is_denied(roots):
    root, outside = roots
    (root / "link").symlink_to(outside / "secret")
    with pytest.raises(PermissionDeniedError):
        resolve("link", model_roots=[root])
    with pytest.raises(PermissionDeniedError):
        resolve(str(root / "link"), model_roots=[root])


def test_symlinked_files_escaping_the_root_are_denied(roots):
    root, outside = roots
    sneaky = root / "sneaky"
    sneaky.mkdir()
    (sneaky / "config.json").symlink_to(outside / "secret" / "config.json")
    with pytest.raises(PermissionDeniedError):
        resolve("sneaky", model_roots=[root])
    shard_trick = root / "shardtrick"
    shard_trick.mkdir()
    (shard_trick / "config.json").write_text(json.dumps(TINY_CONFIG))
    (shard_trick / "model.safetensors").symlink_to(outside / "secret" / "model-00001-of-00002.safetensors")
    with pytest.raises(PermissionDeniedError):
        resolve("shardtrick", model_roots=[root])


def test_symlink_that_stays_inside_the_root_is_fine(roots):
    root, _ = roots
    (root / "alias").symlink_to(root / "tiny")
    assert resolve("alias", model_roots=[root]).source == "local"


def test_local_paths_disabled(roots):
    root, _ = roots
    with pytest.raises(PermissionDeniedError, match="disabled"):
        resolve(str(root / "tiny"), allow_local_paths=False)
    with pytest.raises(PermissionDeniedError, match="disabled"):
        resolve("./tiny", allow_local_paths=False)


def test_disabled_local_paths_do_not_read_repo_shaped_folders(tmp_path, monkeypatch):
    write_sharded_model(tmp_path / "meta-llama" / "Llama-3.1-8B-Instruct", config={**TINY_CONFIG, "marker": 1})
    monkeypatch.chdir(tmp_path)
    assert "marker" in resolve("meta-llama/Llama-3.1-8B-Instruct").config
    source = resolve("meta-llama/Llama-3.1-8B-Instruct", allow_local_paths=False)
    assert source.source == "catalog" and "marker" not in source.config


@pytest.mark.parametrize("name", ["/no/such/model/folder", "./nope", "a/b/c"])
def test_path_that_does_not_exist_is_not_found(name):
    with pytest.raises(ModelNotFoundError, match="no model folder"):
        resolve(name)


def test_folder_without_config_names_the_missing_file(tmp_path):
    write_safetensors(tmp_path / "model.safetensors", {"w": ("BF16", [2, 2])})
    with pytest.raises(ModelNotFoundError, match="config.json"):
        resolve(str(tmp_path))


def test_a_file_is_not_a_model_folder(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(InvalidRequestError, match="is a file"):
        resolve(str(tmp_path / "config.json"))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2, 3]", "must be a JSON object"),
        (b'"llama"', "must be a JSON object"),
        (b"\xff\xfe garbage", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"a": ' + b"[" * 80 + b"]" * 80 + b"}", "nested too deeply"),
        (b'{"pad": "' + b"x" * (5 << 20) + b'"}', "too large"),
    ],
)
def test_malformed_config_is_an_invalid_request(tmp_path, content, message):
    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(InvalidRequestError, match=message):
        resolve(str(tmp_path))


def test_remote_code_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    config = {**TINY_CONFIG, "auto_map": {"AutoModelForCausalLM": "modeling_evil.EvilModel"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    source = ModelResolver().resolve(ModelOptions(model=str(tmp_path), trust_remote_code=True))
    assert source.config["auto_map"] == config["auto_map"]  # passed through as data only
    assert not marker.exists()


def test_inline_config_is_used_as_is_and_validated():
    source = ModelResolver().resolve(ModelOptions(model="private/model", config_json=TINY_CONFIG))
    assert source.source == "inline" and source.model == "private/model" and source.config == TINY_CONFIG
    deep: dict = {}
    node = deep
    for _ in range(200):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(InvalidRequestError, match="model.config_json"):
        ModelResolver().resolve(ModelOptions(model="m", config_json=deep))


def test_confinement_check_runs_before_the_metadata_cache(roots):
    root, outside = roots
    open_resolver = ModelResolver()
    secret = str(outside / "secret")
    open_resolver.resolve(ModelOptions(model=secret))  # now cached
    confined = ModelResolver(model_roots=[root], cache=open_resolver.cache)
    with pytest.raises(PermissionDeniedError):
        confined.resolve(ModelOptions(model=secret))


def test_model_roots_with_symlinked_root(tmp_path):
    real_root = tmp_path / "real"
    write_sharded_model(real_root / "tiny")
    os.symlink(real_root, tmp_path / "root-link")
    assert resolve("tiny", model_roots=[tmp_path / "root-link"]).source == "local"
