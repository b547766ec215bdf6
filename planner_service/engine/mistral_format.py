"""Mistral-format checkpoints (``params.json`` + ``consolidated*.safetensors``), read as vLLM reads them. Pure.

vLLM 0.33 (``transformers_utils/config.py``): with ``--config-format auto`` a repo that has
``consolidated*.safetensors`` and ``params.json`` is a Mistral-format model (even when a config.json is
there too), parsed by ``MistralConfigParser``: ``max_position_embeddings`` from params.json, else from
the HF config.json, else 128000; ``dtype`` from the consolidated shards when params.json has none; then
``configs/mistral.py adapt_config_dict`` renames the keys to HF names (below) and fills what is still
missing from config.json. This module is that translation; the metadata adapters find the files.
"""

from __future__ import annotations

import copy
from typing import Any

from planner_service.engine.errors import UnsupportedArchitectureError

PARAMS_FILE = "params.json"
CONSOLIDATED_GLOB = "consolidated*.safetensors"
DEFAULT_MAX_POSITIONS = 128_000  # vLLM's fallback when neither file states a length
# safetensors dtype -> torch dtype name (vLLM's _SAFETENSORS_TO_TORCH_DTYPE, the ones a checkpoint stores)
_SAFETENSORS_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}
# Mistral key -> HF key (_remap_general_mistral_args)
_RENAMES = {"dim": "hidden_size", "norm_eps": "rms_norm_eps", "n_kv_heads": "num_key_value_heads",
            "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads", "hidden_dim": "intermediate_size"}


def checkpoint_dtype(parameters_by_dtype: dict[str, int] | None) -> str | None:
    """The dtype vLLM infers from the consolidated shards (the widest of the float dtypes they hold)."""
    found = [_SAFETENSORS_DTYPES[d] for d in (parameters_by_dtype or {}) if d in _SAFETENSORS_DTYPES]
    for dtype in ("float32", "bfloat16", "float16"):  # common_broadcastable_dtype: the widest wins
        if dtype in found:
            return dtype
    return None


def config_from_params(params: dict[str, Any], hf_config: dict[str, Any] | None = None,
                       shard_dtype: str | None = None) -> dict[str, Any]:
    """The HF-style config.json vLLM builds from ``params.json`` (``hf_config``: a config.json beside it)."""
    config = copy.deepcopy(params)
    defaults = hf_config or {}
    if config.get("max_position_embeddings") is None:
        text = defaults.get("text_config") if isinstance(defaults.get("text_config"), dict) else defaults
        config["max_position_embeddings"] = text.get("max_position_embeddings") or DEFAULT_MAX_POSITIONS
    if config.get("dtype") is None and shard_dtype:
        config["dtype"] = shard_dtype
    for key, new in _RENAMES.items():
        if key in config:
            config[new] = config.pop(key)
    config["model_type"] = config.pop("model_type", "transformer")
    config["hidden_act"] = config.pop("activation", "silu")
    config["tie_word_embeddings"] = config.pop("tied_embeddings", False)
    config["max_seq_len"] = config.pop("max_seq_len", config.get("max_position_embeddings"))
    _sliding_window(config)
    if config.get("quantization"):
        _quantization(config)
    if config.get("qk_nope_head_dim"):
        raise UnsupportedArchitectureError(
            "Mistral-format MLA checkpoints (Mistral Large 3) are not supported by the planner; use its HF "
            "config.json (--config-format hf)")
    moe = config.get("moe")
    if isinstance(moe, dict) and moe:
        config["architectures"] = ["MixtralForCausalLM"]
        config.setdefault("num_local_experts", moe.get("num_experts"))
        config.setdefault("num_experts_per_tok", moe.get("num_experts_per_tok"))
        if moe.get("expert_hidden_dim"):
            config.setdefault("moe_intermediate_size", moe["expert_hidden_dim"])
    else:
        config["architectures"] = ["MistralForCausalLM"]
    if config.get("yarn"):
        yarn = config.pop("yarn") or {}
        config["rope_parameters"] = {"rope_type": "yarn", **{k: v for k, v in (
            ("factor", yarn.get("factor")), ("original_max_position_embeddings",
                                             yarn.get("original_max_position_embeddings"))) if v is not None}}
    vision = (config.get("multimodal") or {}).get("vision_encoder_args") or config.get("vision_encoder")
    if vision:
        config.pop("multimodal", None)
        config.pop("vision_encoder", None)
        quant = config.get("quantization_config")
        config = {"model_type": "pixtral", "architectures": ["PixtralForConditionalGeneration"],
                  "text_config": config, "vision_config": vision}
        if quant:
            config["quantization_config"] = quant
    for key, value in defaults.items():
        config.setdefault(key, value)
    return config


def _sliding_window(config: dict[str, Any]) -> None:
    window = config.get("sliding_window")
    if not window:
        return
    layers = config.get("num_hidden_layers")
    if isinstance(window, list):
        if not isinstance(layers, int) or not window:
            raise UnsupportedArchitectureError("params.json sliding_window list needs n_layers")
        pattern = window * (layers // len(window))
        config["layer_types"] = ["full_attention" if w is None else "sliding_attention" for w in pattern]
        config["sliding_window"] = next((w for w in window if w), None)
    elif isinstance(window, int) and config.get("layer_types") is None and isinstance(layers, int):
        config["layer_types"] = ["sliding_attention"] * layers


def _quantization(config: dict[str, Any]) -> None:
    quantization = config.pop("quantization") or {}
    if quantization.get("qformat_weight") == "fp8_e4m3":
        dynamic = quantization.get("qscheme_act") == "NO_SCALES"
        config["quantization_config"] = {"quant_method": "fp8",
                                         "activation_scheme": "dynamic" if dynamic else "static"}
    elif str(quantization.get("quant_method", "")).lower().replace("_", "-") == "compressed-tensors":
        config["quantization_config"] = {**quantization, "quant_method": "compressed-tensors"}
    else:
        raise UnsupportedArchitectureError(f"params.json has an unknown quantization {quantization!r}")
