"""The bundled offline catalog: contents, case-insensitive lookup, offline speed, regeneration."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from planner_service.engine.errors import MetadataUnavailableError
from planner_service.engine.models import ModelOptions
from planner_service.metadata.build_catalog import build_catalog
from planner_service.metadata.catalog import CatalogEntry, find_catalog_entry, list_catalog, load_catalog_source
from planner_service.metadata.resolver import ModelResolver

CATALOG_DIR = Path(__file__).resolve().parents[1] / "planner_service" / "metadata" / "catalog"
QUICKSTART = "meta-llama/Llama-3.1-8B-Instruct"


@pytest.fixture(autouse=True)
def _empty_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))


def test_every_entry_has_its_config_and_matching_architecture():
    entries = list_catalog()
    assert len(entries) >= 30
    assert [e.id.lower() for e in entries] == sorted(e.id.lower() for e in entries)
    for entry in entries:
        config = json.loads((CATALOG_DIR / entry.path).read_text())
        assert config["architectures"][0] == entry.architecture, entry.id
        assert config["model_type"] == entry.model_type, entry.id
    on_disk = {str(p.parent.relative_to(CATALOG_DIR)) for p in CATALOG_DIR.glob("*/*/config.json")}
    assert on_disk == {e.id for e in entries}


def test_quickstart_model_has_stated_counts():
    entry = find_catalog_entry(QUICKSTART)
    assert entry == CatalogEntry(
        id=QUICKSTART,
        architecture="LlamaForCausalLM",
        model_type="llama",
        verified="yes",
        verbatim=True,
        params=8_030_261_248,
        total_size_bytes=16_060_522_496,
        path=f"{QUICKSTART}/config.json",
    )
    source = load_catalog_source(QUICKSTART)
    assert source.source == "catalog" and source.safetensors is None  # no faked tensors
    assert source.known_num_params == 8_030_261_248
    assert source.config["num_hidden_layers"] == 32 and source.config["num_key_value_heads"] == 8


def test_lookup_is_exact_but_case_insensitive():
    assert find_catalog_entry("META-LLAMA/llama-3.1-8b-INSTRUCT").id == QUICKSTART
    assert find_catalog_entry("  qwen/qwen3-8b ").id == "Qwen/Qwen3-8B"
    assert find_catalog_entry("Llama-3.1-8B-Instruct") is None  # no fuzzy matching
    assert find_catalog_entry("meta-llama/Llama-3.1-8B") is None
    assert load_catalog_source("nobody/nothing") is None


def test_returned_config_is_a_copy():
    first = load_catalog_source(QUICKSTART)
    first.config["rope_scaling"]["factor"] = -1
    assert load_catalog_source(QUICKSTART).config["rope_scaling"]["factor"] == 8.0


def _timed_resolve(resolver: ModelResolver, name: str):
    start = time.monotonic()
    source = resolver.resolve(ModelOptions(model=name))
    return source, time.monotonic() - start


def test_quickstart_resolves_offline_instantly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source, elapsed = _timed_resolve(ModelResolver(), "meta-llama/Llama-3.1-8B-Instruct")
    assert source.source == "catalog" and source.model == QUICKSTART
    assert elapsed < 2.0


def test_quickstart_resolves_with_the_hub_unreachable(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    source, elapsed = _timed_resolve(ModelResolver(), QUICKSTART)
    assert source.source == "catalog" and elapsed < 2.0
    with pytest.raises(MetadataUnavailableError):  # and a model that is nowhere fails fast too
        _timed_resolve(ModelResolver(), "acme/not-in-catalog")


def test_quickstart_resolves_offline_in_a_fresh_process(tmp_path):
    """The README path: a new interpreter, HF_HUB_OFFLINE set before huggingface_hub is imported."""
    code = (
        "import time; t=time.monotonic();"
        "from planner_service.metadata.resolver import ModelResolver;"
        "from planner_service.engine.models import ModelOptions;"
        f"s=ModelResolver().resolve(ModelOptions(model={QUICKSTART!r}));"
        "print(s.source, s.model)"
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path), "HF_ENDPOINT": "http://127.0.0.1:9", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["catalog", QUICKSTART]


def test_pinned_revision_skips_the_catalog(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MetadataUnavailableError, match="offline"):
        ModelResolver().resolve(ModelOptions(model=QUICKSTART, revision="0123abc"))
    assert ModelResolver().resolve(ModelOptions(model=QUICKSTART, revision="main")).source == "catalog"


def test_build_catalog_copies_configs_and_writes_a_deterministic_index(tmp_path):
    source = tmp_path / "src"
    (source / "acme" / "Tiny-1B").mkdir(parents=True)
    (source / "acme" / "Tiny-1B" / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}')
    (source / "acme" / "Tiny-1B" / "provenance.json").write_text('{"verified": "yes", "verbatim": true, "params": 1000}')
    (source / "acme" / "NoProvenance").mkdir()
    (source / "acme" / "NoProvenance" / "config.json").write_text("{}")
    dest = tmp_path / "dest"
    entries = build_catalog(source, dest)
    assert [e["id"] for e in entries] == ["acme/Tiny-1B"]
    assert entries[0]["params"] == 1000 and entries[0]["total_size_bytes"] is None
    assert (dest / "acme" / "Tiny-1B" / "config.json").read_bytes() == (source / "acme" / "Tiny-1B" / "config.json").read_bytes()
    first = (dest / "index.json").read_bytes()
    build_catalog(source, dest)
    assert (dest / "index.json").read_bytes() == first


def test_bundled_index_is_what_build_catalog_writes(tmp_path):
    """The shipped index must be regenerated, not hand-edited: rebuild it from the shipped configs."""
    index = json.loads((CATALOG_DIR / "index.json").read_text())
    source = tmp_path / "src"
    for entry in index["models"]:
        folder = source / entry["id"]
        folder.mkdir(parents=True)
        (folder / "config.json").write_bytes((CATALOG_DIR / entry["path"]).read_bytes())
        provenance = {k: entry[k] for k in ("verified", "verbatim", "params", "total_size_bytes")}
        (folder / "provenance.json").write_text(json.dumps(provenance))
    build_catalog(source, tmp_path / "dest")
    assert (tmp_path / "dest" / "index.json").read_text() == (CATALOG_DIR / "index.json").read_text()


def test_packaging_ships_every_catalog_file():
    """setuptools' "*" package-data only reaches discovered packages; folders such as
    ``Llama-3.1-8B-Instruct`` (dots) are not packages, so the catalog needs its own pattern or the
    wheel and the Docker image silently lose the Quickstart model."""
    root = CATALOG_DIR.parents[2]
    package_data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    metadata_dir = CATALOG_DIR.parent
    shipped = {path for pattern in package_data.get("planner_service.metadata", []) for path in metadata_dir.glob(pattern)}
    missing = sorted(str(p.relative_to(metadata_dir)) for p in CATALOG_DIR.rglob("*.json") if p not in shipped)
    assert not missing, (
        'pyproject.toml [tool.setuptools.package-data] needs: "planner_service.metadata" = ["catalog/**/*.json"]; '
        f"missing from the wheel: {missing[:3]}..."
    )
