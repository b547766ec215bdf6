"""Regenerate the bundled offline catalog from the verified model-config collection.

Usage (from the repository root)::

    .venv/bin/python -m planner_service.metadata.build_catalog [--source /work/shared/model-configs]

Copies every ``<org>/<name>/config.json`` that has a ``provenance.json`` beside it into
``planner_service/metadata/catalog/<org>/<name>/config.json`` and writes ``catalog/index.json``
(id, architecture, model_type, verified, verbatim, params and total_size_bytes where provenance
states them). Configs taken from a package registry (exact upstream files a PyPI package ships) live
in the catalog folder itself with their own ``provenance.json`` (``source_kind: package-registry``,
the package, its version and each file's sha256); they are indexed as they are, and a model in both
places takes the shared copy. A ``hf_quant_config.json`` beside a config (TensorRT Model Optimizer
checkpoints) is kept: the catalog loader applies it the way vLLM does. The output is deterministic (sorted, fixed formatting) so re-running it on the same
source produces no diff. Configs are copied byte-for-byte: they are facts, not ours to reformat.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

CATALOG_DIR = Path(__file__).resolve().parent / "catalog"
DEFAULT_SOURCE = Path("/work/shared/model-configs")
INDEX_NAME = "index.json"
INDEX_FORMAT_VERSION = 1


def _first(value: object) -> str | None:
    if isinstance(value, list) and value and isinstance(value[0], str):
        return value[0]
    return None


def _entry(model_id: str, config: dict, provenance: dict) -> dict:
    params = provenance.get("params")
    total_size = provenance.get("total_size_bytes")
    return {
        "id": model_id,
        "architecture": _first(config.get("architectures")),
        "model_type": config.get("model_type"),
        "verified": str(provenance.get("verified", "unknown")),
        "verbatim": bool(provenance.get("verbatim", False)),
        "params": params if isinstance(params, int) and params > 0 else None,
        "total_size_bytes": total_size if isinstance(total_size, int) and total_size > 0 else None,
        "path": f"{model_id}/config.json",
    }


def build_catalog(source: Path, dest: Path = CATALOG_DIR) -> list[dict]:
    """Copy the configs from ``source`` into ``dest`` and write ``dest/index.json``; return the entries."""
    entries: list[dict] = []
    for provenance_path in sorted(source.glob("*/*/provenance.json")):
        model_dir = provenance_path.parent
        config_path = model_dir / "config.json"
        if not config_path.is_file():
            continue
        model_id = f"{model_dir.parent.name}/{model_dir.name}"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        provenance = json.loads(provenance_path.read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError(f"{config_path}: config.json is not a JSON object")
        target = dest / model_id / "config.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(config_path, target)
        entries.append(_entry(model_id, config, provenance))
    shared_ids = {e["id"].lower() for e in entries}
    for provenance_path in sorted(dest.glob("*/*/provenance.json")):
        provenance = json.loads(provenance_path.read_text(encoding="utf-8"))
        model_id = f"{provenance_path.parent.parent.name}/{provenance_path.parent.name}"
        if provenance.get("source_kind") != "package-registry" or model_id.lower() in shared_ids:
            continue
        config = json.loads((provenance_path.parent / "config.json").read_text(encoding="utf-8"))
        entries.append(_entry(model_id, config, provenance))
    entries.sort(key=lambda e: e["id"].lower())
    index = {"format_version": INDEX_FORMAT_VERSION, "models": entries}
    (dest / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="verified model-configs folder")
    parser.add_argument("--dest", type=Path, default=CATALOG_DIR, help="catalog folder to (re)write")
    args = parser.parse_args(argv)
    if not args.source.is_dir():
        parser.error(f"source folder not found: {args.source}")
    entries = build_catalog(args.source, args.dest)
    sys.stdout.write(f"wrote {len(entries)} models to {args.dest}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
