"""Record which fused-MoE kernel configs each vLLM release ships (data for the step model).

vLLM's Triton fused-MoE kernel reads a tuned tile config from
``vllm/model_executor/layers/fused_moe/configs/E=<experts>,N=<intermediate per rank>,device_name=<GPU>
[,dtype=...][,block_shape=...].json`` and falls back to a small default tile (``get_default_config``)
when none matches; the step model (``simulation/moe_configs.py``) uses this list to know which one a
deployment gets. Usage, from the repository root, with vLLM wheels downloaded by
``pip download --no-deps vllm==X.Y.Z -d DIR`` (nothing is installed)::

    .venv/bin/python scripts/extract_moe_configs.py DIR/vllm-*.whl

It rewrites ``planner_service/engine/data/vllm-fused-moe-configs.json`` (sorted, deterministic).
"""

from __future__ import annotations

import json
import re
import sys
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "planner_service" / "engine" / "data" / "vllm-fused-moe-configs.json"
_PREFIX = "vllm/model_executor/layers/fused_moe/configs/"
_VERSION = re.compile(r"vllm-(\d+\.\d+\.\d+)")


def configs_in(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        names = [n[len(_PREFIX):] for n in archive.namelist() if n.startswith(_PREFIX + "E=") and n.endswith(".json")]
    return sorted(names)


def _key(version: str) -> tuple[int, ...]:
    return tuple(map(int, version.split(".")))


def main(wheels: list[str]) -> int:
    per_version: dict[str, list[str]] = {}
    for path in map(Path, wheels):
        match = _VERSION.search(path.name)
        if not match:
            print(f"skip {path.name}: no version in the name", file=sys.stderr)
            continue
        per_version[match.group(1)] = configs_in(path)
    versions = sorted(per_version, key=_key)
    # Each config file once, with the runs of sampled versions that ship it: [[first, last], ...] as
    # indices into "versions" (one line per file keeps the data file diffable).
    shipped: dict[str, list[list[int]]] = {}
    for i, version in enumerate(versions):
        for name in per_version[version]:
            runs = shipped.setdefault(name, [])
            if runs and runs[-1][1] == i - 1:
                runs[-1][1] = i
            else:
                runs.append([i, i])
    lines = [f"  {json.dumps(name)}: {json.dumps(runs)}" for name, runs in sorted(shipped.items())]
    OUT.write_text(
        "{\n"
        f'"source": {json.dumps("file names under " + _PREFIX + " in each vLLM wheel (scripts/extract_moe_configs.py)")},\n'
        f'"versions": {json.dumps(versions)},\n'
        '"configs": {\n' + ",\n".join(lines) + "\n}\n}\n"
    )
    print(f"{OUT}: {len(shipped)} configs over {', '.join(f'{v} ({len(per_version[v])})' for v in versions)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
