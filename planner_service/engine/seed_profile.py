"""Profiles written by ``vllm-wizard generate`` (the seed CLI), read as this planner's own. Pure.

The seed's YAML (``profile_version: 1``) names things differently: ``model.id``, ``hardware.gpu_name``,
``hardware.gpus``, ``hardware.tp_size``, ``workload.mode``, ``outputs.vllm_args``, and spells values its own
way (``fp16``, ``quantization: none``, ``interconnect: unknown``, ``fragmentation_factor: 1.15``); the value
spellings are accepted by the request models themselves, so this module only renames keys. Keys it does
not know stay where they are, so the usual validation names them (``hardware.gpu_nam: Extra inputs ...``).
"""

from __future__ import annotations

from typing import Any

from planner_service.engine.errors import InvalidRequestError

SEED_PROFILE_VERSIONS = (1,)
# (section, seed key) -> (section, our key); None drops a key that has no effect on a plan.
_RENAMES: dict[tuple[str, str], tuple[str, str] | None] = {
    ("model", "id"): ("model", "model"),
    ("hardware", "gpu_name"): ("hardware", "gpu"),
    ("hardware", "gpus"): ("hardware", "num_gpus"),
    ("hardware", "tp_size"): ("hardware", "tensor_parallel_size"),
    ("workload", "mode"): ("workload", "batching_mode"),
    ("workload", "streaming"): None,  # streaming does not change memory or the serve command
    ("workload", "target_latency_ms"): None,
}
# outputs.vllm_args keys the request can take (vLLM's own argument names).
_VLLM_ARGS = {
    "max_num_seqs": ("engine", "max_num_seqs"), "max_num_batched_tokens": ("engine", "max_num_batched_tokens"),
    "enforce_eager": ("engine", "enforce_eager"), "block_size": ("engine", "block_size"),
    "enable_prefix_caching": ("engine", "enable_prefix_caching"),
    "kv_cache_memory_bytes": ("engine", "kv_cache_memory_bytes"),
    "tensor_parallel_size": ("hardware", "tensor_parallel_size"),
    "pipeline_parallel_size": ("hardware", "pipeline_parallel_size"),
    "data_parallel_size": ("hardware", "data_parallel_size"),
    "max_model_len": ("model", "max_model_len"), "kv_cache_dtype": ("model", "kv_cache_dtype"),
    "quantization": ("model", "quantization"), "dtype": ("model", "dtype"),
    "gpu_memory_utilization": ("policy", "gpu_memory_utilization"),
    "trust_remote_code": ("model", "trust_remote_code"),
}


def is_seed_profile(data: dict[str, Any]) -> bool:
    """A vllm-wizard profile: it has ``profile_version``, or the seed's ``model.id`` / ``hardware.gpu_name``."""
    model, hardware = data.get("model") or {}, data.get("hardware") or {}
    return "profile_version" in data or "id" in model or "gpu_name" in hardware


def from_seed_profile(data: dict[str, Any]) -> dict[str, Any]:
    """The seed's profile mapping renamed into this planner's sections (values still unvalidated)."""
    version = data.get("profile_version", 1)
    if version not in SEED_PROFILE_VERSIONS:
        raise InvalidRequestError.for_field("profile_version", f"vllm-wizard profile_version {version!r} is not "
                                            f"supported (known: {', '.join(map(str, SEED_PROFILE_VERSIONS))})")
    out: dict[str, dict[str, Any]] = {}
    for section, body in data.items():
        if section == "profile_version":
            continue
        if not isinstance(body, dict):
            out[section] = body
            continue
        for key, value in body.items():
            if section == "outputs" and key == "vllm_args":
                _vllm_args(value, out)
                continue
            target = _RENAMES.get((section, key), (section, key))
            if target is None or value is None:  # the seed writes null for "not set"
                continue
            out.setdefault(target[0], {})[target[1]] = value
    return out


def _vllm_args(value: Any, out: dict[str, dict[str, Any]]) -> None:
    if not value:
        return
    if not isinstance(value, dict):
        raise InvalidRequestError.for_field("outputs.vllm_args", "must be a mapping of vLLM argument names")
    for key, item in value.items():
        name = str(key).lstrip("-").replace("-", "_")
        if name not in _VLLM_ARGS:
            raise InvalidRequestError.for_field(
                f"outputs.vllm_args.{key}", f"not a vLLM argument the planner models (known: {', '.join(sorted(_VLLM_ARGS))})")
        section, field = _VLLM_ARGS[name]
        out.setdefault(section, {})[field] = item
