"""Does vLLM ship a tuned fused-MoE kernel config for this deployment? (pure lookup over bundled data)

vLLM's Triton fused-MoE kernel loads ``E=<experts on the rank>,N=<expert intermediate size on the rank>,
device_name=<torch device name, spaces as _>[,dtype=<fp8_w8a8|int8_w8a16|...>][,block_shape=[bn,bk]].json``
and otherwise falls back to ``get_default_config`` - 64x64x32 tiles for large batches, which the shared
runs show at ~10 % of the GPU's peak (``step_cost.MOE_DEFAULT_CONFIG_EFFICIENCY``). Which files each
release ships is read from the wheels by ``scripts/extract_moe_configs.py`` into
``data/vllm-fused-moe-configs.json``; a version between two sampled wheels uses the older one.
"""

from __future__ import annotations

import bisect
import functools
import json
from importlib import resources


@functools.lru_cache(maxsize=1)
def _data() -> tuple[list[tuple[int, ...]], dict[str, list[list[int]]]]:
    text = resources.files("planner_service.engine.data").joinpath("vllm-fused-moe-configs.json").read_text("utf-8")
    raw = json.loads(text)
    versions = [tuple(int(p) for p in v.split(".")) for v in raw["versions"]]
    return versions, raw["configs"]


def config_name(num_experts: int, intermediate_per_rank: int, device_name: str, dtype: str | None,
                block_shape: tuple[int, int] | None) -> str:
    """The file name vLLM's ``get_config_file_name`` builds (0.10-0.33)."""
    dtype_part = f",dtype={dtype}" if dtype else ""
    block_part = f",block_shape=[{block_shape[0]},{block_shape[1]}]" if block_shape and all(block_shape) else ""
    return f"E={num_experts},N={intermediate_per_rank},device_name={device_name.replace(' ', '_')}{dtype_part}{block_part}.json"


def has_tuned_config(version: tuple[int, int, int], num_experts: int, intermediate_per_rank: int,
                     device_names: tuple[str, ...], dtype: str | None,
                     block_shape: tuple[int, int] | None = None) -> bool:
    versions, configs = _data()
    index = max(0, bisect.bisect_right(versions, tuple(version)) - 1)
    for device in device_names:
        runs = configs.get(config_name(num_experts, intermediate_per_rank, device, dtype, block_shape))
        if runs and any(first <= index <= last for first, last in runs):
            return True
    return False
