"""One generic reader of config.json -> ``ModelArchitecture`` (every family vLLM serves).

Reads the fields vLLM itself reads (internals §7): heads / KV heads / head size, MoE, MLA, sliding-window
and interleaved ``layer_types``, chunked local attention, Mamba / GatedDeltaNet hybrids, multimodal
``text_config`` nesting, quantization, and the derived max_model_len (§7.5). Missing required fields raise
``UnsupportedArchitectureError`` naming them: a silent wrong number is worse than a refusal.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from planner_service.engine.config_fields import (
    CONFIG_PATH as _CONFIG_PATH,
    DTYPE_BYTES as _DTYPE_BYTES,
    LEN_KEYS as _LEN_KEYS,
    NESTED_KEYS as _NESTED_KEYS,
    validate_raw as _validate_raw,
)
from planner_service.engine.errors import FieldViolation, UnsupportedArchitectureError
from planner_service.engine.quantization import QuantConfig, parse_quantization

LayerKind = Literal["full", "sliding", "chunked", "mamba", "none"]

_MLA_TYPES = {"deepseek_v2", "deepseek_v3", "deepseek_v32", "deepseek_v4", "kimi_k2", "kimi_linear",
              "glm_moe_dsa", "glm4_moe_lite", "longcat_flash", "pangu_ultra_moe"}
_ROPE_NO_SCALE = {"su", "longrope", "llama3", "yarn", "deepseek_yarn", "deepseek_llama_scaling"}  # vLLM 0.30+
_ROPE_NO_SCALE_UNTIL_0_29 = {"su", "longrope", "llama3"}
# transformers class defaults vLLM sees when a config.json omits the key.
_TYPE_DEFAULTS: dict[str, dict] = {
    "gemma3_text": {"vocab_size": 262208, "max_position_embeddings": 131072, "sliding_window_pattern": 6,
                    "tie_word_embeddings": True, "head_dim": 256, "num_key_value_heads": 4},
    "gemma2": {"tie_word_embeddings": True},
    "gemma": {"tie_word_embeddings": True},
    "llama4_text": {"tie_word_embeddings": False},
    # PretrainedConfig's default (tie_word_embeddings=True) applies to these GPT-2-era configs, which omit it.
    **{t: {"tie_word_embeddings": True} for t in ("gpt2", "gpt_bigcode", "gpt_neo", "opt", "bloom", "codegen")},
}
# GPT-2-era key names (transformers' attribute_map / the seed's fallbacks) -> the names read below.
_KEY_ALIASES = {
    "num_hidden_layers": ("n_layer", "n_layers", "num_layers"),
    "hidden_size": ("n_embd", "d_model"),
    "num_attention_heads": ("n_head", "n_heads", "num_heads"),
    "intermediate_size": ("n_inner", "ffn_dim"),
}
# Families whose MLP is two matrices (up, down) rather than gated (gate, up, down).
_UNGATED_MLP_TYPES = {"gpt2", "gpt_bigcode", "gptj", "gpt_neo", "gpt_neox", "opt", "bloom", "falcon", "phi",
                      "starcoder2", "mpt", "codegen", "persimmon"}
# Learned absolute position embeddings (a max_positions x hidden table, in the weights).
_ABSOLUTE_POSITION_TYPES = {"gpt2", "gpt_bigcode", "gpt_neo", "opt"}
_QK_NORM_TYPES = {"qwen3", "qwen3_moe", "qwen3_next", "gemma3_text", "olmo2", "olmo3", "olmoe"}
# Families whose QKV projection carries a bias whatever config.json says (vLLM's qwen2.py / qwen.py: bias=True).
_QKV_BIAS_TYPES = {"qwen", "qwen2", "qwen2_moe", "qwen2_vl"}
# Families whose config.json intermediate_size is twice the MLP width: Qwen (v1, QWenLMHeadModel) states 22016
# for an 11008-wide gated MLP, and vLLM's qwen.py builds QWenMLP(hidden_size, config.intermediate_size // 2).
_HALVED_INTERMEDIATE_TYPES = {"qwen"}

class MlaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kv_lora_rank: int
    qk_rope_head_dim: int
    qk_nope_head_dim: int
    v_head_dim: int
    q_lora_rank: int | None = None


class MoeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    num_experts: int
    experts_per_token: int
    moe_intermediate_size: int
    shared_intermediate_size: int = 0  # all shared experts together
    moe_layers: tuple[bool, ...]  # per layer: True = MoE MLP, False = dense MLP
    expert_bias: bool = False


class MambaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["gdn", "mamba2", "mamba1"]
    conv_kernel: int
    # gdn
    num_k_heads: int = 0
    num_v_heads: int = 0
    k_head_dim: int = 0
    v_head_dim: int = 0
    # mamba1/2
    intermediate_size: int = 0
    num_heads: int = 0
    head_dim: int = 0
    n_groups: int = 1
    state_size: int = 0
    ssm_dtype_fp32: bool = False


class ModelArchitecture(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    architectures: tuple[str, ...]
    model_type: str
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    checkpoint_dtype: str  # bfloat16 | float16 | float32
    attention_bias: bool = False
    qk_norm: bool = False
    layer_kinds: tuple[LayerKind, ...]
    mlp_layers: tuple[bool, ...] | None = None  # None: every layer has an MLP (NemotronH: only "-"/"E" layers)
    sliding_window: int | None = None
    attention_chunk_size: int | None = None
    mla: MlaConfig | None = None
    moe: MoeConfig | None = None
    mamba: MambaConfig | None = None
    quantization: QuantConfig | None = None
    vision_params: int = 0
    rotary_cache_elements: int = 0  # vLLM's shared cos/sin cache (a persistent buffer counted as weights)
    gated_mlp: bool = True  # False: up/down MLP (GPT-2, Falcon, phi-2 ...), True: gate/up/down
    absolute_position_rows: int = 0  # rows of a learned position-embedding table (GPT-2 style)
    derived_max_model_len: int  # the upper limit a user value is checked against
    max_len_source: str
    default_max_model_len: int  # what vLLM uses when --max-model-len is unset (LongRoPE: the original length)

    @property
    def is_hybrid_mamba(self) -> bool:
        return "mamba" in self.layer_kinds

    @property
    def attention_layers(self) -> int:
        return sum(k in ("full", "sliding", "chunked") for k in self.layer_kinds)


def _first(cfg: dict, *keys: str):
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    return None


def _text_config(config: dict) -> dict:
    text = next((config[k] for k in _NESTED_KEYS if config.get(k)), None)
    if isinstance(text, dict) and text:
        merged = dict(text)
        # vLLM reads dtype/quantization from the top-level config when the sub-config lacks them.
        for key in ("torch_dtype", "dtype", "quantization_config", "tie_word_embeddings"):
            if key not in merged and key in config:
                merged[key] = config[key]
        return merged
    return dict(config)


def _with_defaults(text: dict) -> dict:
    merged = dict(_TYPE_DEFAULTS.get(str(text.get("model_type", "")), {}))
    merged.update({k: v for k, v in text.items() if v is not None})
    for key, aliases in _KEY_ALIASES.items():
        if merged.get(key) is None:
            alias = next((a for a in aliases if isinstance(merged.get(a), int) and not isinstance(merged[a], bool)), None)
            if alias is not None:
                merged[key] = merged[alias]
    if merged.get("intermediate_size") is None and merged.get("n_embd") is not None and "hidden_size" in merged:
        merged["intermediate_size"] = 4 * int(merged["hidden_size"])  # GPT-2: n_inner null means 4 x n_embd
    return merged


def _derive_max_len(text: dict, model_type: str, yarn_scales: bool) -> tuple[int, str]:
    """vLLM's ``_get_and_verify_max_len`` (internals §7.5) for the config's RoPE scaling.

    The smallest length key (``model_max_length`` overrides), then, except for Gemma 3, the RoPE factor:
    rope types other than su/longrope/llama3 multiply by ``factor`` (default: none). YaRN configs take
    ``original_max_position_embeddings x factor`` in vLLM <= 0.29 (``yarn_scales``); from 0.30 YaRN (and
    deepseek_yarn / deepseek_llama_scaling) are taken as already scaled, as transformers assumes.
    """
    present = [(text[k], k) for k in _LEN_KEYS if isinstance(text.get(k), int) and text[k] > 0]
    if not present:
        return 2048, "default (no length key in config.json)"
    value, key = min(present)
    if isinstance(text.get("model_max_length"), int):
        value, key = text["model_max_length"], "model_max_length"
    rope = text.get("rope_scaling") or text.get("rope_parameters")
    if not isinstance(rope, dict) or "gemma3" in model_type:
        return int(value), key
    rope_type = rope.get("rope_type", rope.get("type"))
    factor = rope.get("factor")
    not_scaled = _ROPE_NO_SCALE if not yarn_scales else _ROPE_NO_SCALE_UNTIL_0_29
    if rope_type in not_scaled or rope_type in ("default", "mrope") or not isinstance(factor, (int, float)):
        return int(value), key
    original = rope.get("original_max_position_embeddings")
    if rope_type == "yarn" and isinstance(original, int) and original > 0:
        return int(original * float(factor)), f"original_max_position_embeddings={original} x yarn factor {factor}"
    return int(value * float(factor)), f"{key} x rope {rope_type} factor {factor}"


def _layer_kinds(text: dict, n: int, model_type: str) -> tuple[list[LayerKind], int | None, int | None]:
    window = text.get("sliding_window")
    if not window or text.get("use_sliding_window") is False:
        window = None
    chunk = text.get("attention_chunk_size")
    mapping = {"full_attention": "full", "sliding_attention": "sliding", "chunked_attention": "chunked",
               "linear_attention": "mamba", "mamba": "mamba", "mamba2": "mamba", "attention": "full",
               "indexed_attention": "full", "hybrid": "full"}
    kinds: list[LayerKind]
    if text.get("hybrid_override_pattern"):  # NemotronH
        sym = {"M": "mamba", "*": "full", "-": "none", "E": "none"}
        kinds = [sym.get(c, "none") for c in text["hybrid_override_pattern"]]
    elif isinstance(text.get("layers_block_type"), list):
        kinds = [mapping.get(t, "full") for t in text["layers_block_type"]]
    elif isinstance(text.get("layer_types"), list):
        unknown = sorted({t for t in text["layer_types"] if t not in mapping})
        if unknown:
            raise UnsupportedArchitectureError(f"config.json layer_types has unknown entries {unknown}")
        kinds = [mapping[t] for t in text["layer_types"]]
    elif text.get("full_attention_interval"):  # Qwen3-Next
        step = int(text["full_attention_interval"])
        kinds = ["full" if (i + 1) % step == 0 else "mamba" for i in range(n)]
    elif text.get("attn_layer_period"):  # Jamba
        period, offset = int(text["attn_layer_period"]), int(text.get("attn_layer_offset", 0))
        kinds = ["full" if i % period == offset else "mamba" for i in range(n)]
    elif chunk:  # Llama 4: RoPE layers use chunked attention, every 4th (NoPE) layer is global
        nope = text.get("no_rope_layers") or [int((i + 1) % 4 != 0) for i in range(n)]
        kinds = ["chunked" if nope[i] else "full" for i in range(n)]
    elif model_type == "gemma2" and window:
        kinds = ["sliding" if i % 2 == 0 else "full" for i in range(n)]
    elif model_type == "gemma3_text" and window:
        pattern = int(text.get("sliding_window_pattern", 6))
        kinds = ["sliding" if (i + 1) % pattern else "full" for i in range(n)]
    elif window:
        kinds = ["sliding"] * n
    else:
        kinds = ["full"] * n
    if len(kinds) != n:
        raise UnsupportedArchitectureError(
            f"config.json declares {n} layers but its layer pattern has {len(kinds)} entries"
        )
    if "sliding" in kinds and not window:
        raise UnsupportedArchitectureError("config.json has sliding_attention layers but no sliding_window")
    return kinds, int(window) if window and "sliding" in kinds else None, int(chunk) if chunk else None


def _moe(text: dict, n: int, kinds: list[LayerKind]) -> MoeConfig | None:
    experts = _first(text, "num_experts", "moe_num_experts", "n_routed_experts", "num_local_experts")
    if not experts:
        return None
    topk = _first(text, "num_experts_per_tok", "experts_per_token", "moe_topk", "top_k")
    inter = _first(text, "moe_intermediate_size", "intermediate_size")
    missing = [k for k, v in (("num_experts_per_tok", topk), ("moe_intermediate_size", inter)) if not v]
    if missing:
        raise UnsupportedArchitectureError(f"MoE config.json lacks {', '.join(missing)}")
    shared = 0
    if text.get("n_shared_experts"):
        shared = int(text["n_shared_experts"]) * int(inter)
    elif text.get("shared_expert_intermediate_size"):
        shared = int(text["shared_expert_intermediate_size"])
    elif str(text.get("model_type")) == "llama4_text":
        shared = int(text["intermediate_size"])
    if text.get("hybrid_override_pattern"):
        layers = [c == "E" for c in text["hybrid_override_pattern"]]
    elif text.get("first_k_dense_replace") is not None or text.get("moe_layer_freq"):
        k, freq = int(text.get("first_k_dense_replace") or 0), int(text.get("moe_layer_freq") or 1)
        layers = [i >= k and i % freq == 0 for i in range(n)]
    elif text.get("interleave_moe_layer_step"):
        step = int(text["interleave_moe_layer_step"])
        layers = [(i + 1) % step == 0 for i in range(n)]
    elif text.get("expert_layer_period"):
        period, offset = int(text["expert_layer_period"]), int(text.get("expert_layer_offset", 0))
        layers = [i % period == offset for i in range(n)]
    else:
        dense_only = set(text.get("mlp_only_layers") or [])
        step = int(text.get("decoder_sparse_step") or 1)
        layers = [i not in dense_only and (i + 1) % step == 0 for i in range(n)]
    return MoeConfig(num_experts=int(experts), experts_per_token=int(topk), moe_intermediate_size=int(inter),
                     shared_intermediate_size=shared, moe_layers=tuple(layers),
                     expert_bias=str(text.get("model_type")) == "gpt_oss")


def _mamba(text: dict, hidden: int) -> MambaConfig:
    mt = str(text.get("model_type"))
    if text.get("linear_num_value_heads"):
        need = ("linear_num_key_heads", "linear_key_head_dim", "linear_value_head_dim", "linear_conv_kernel_dim")
        _require(text, need, "GatedDeltaNet")
        return MambaConfig(kind="gdn", conv_kernel=int(text["linear_conv_kernel_dim"]),
                           num_k_heads=int(text["linear_num_key_heads"]), num_v_heads=int(text["linear_num_value_heads"]),
                           k_head_dim=int(text["linear_key_head_dim"]), v_head_dim=int(text["linear_value_head_dim"]))
    heads = _first(text, "mamba_num_heads", "mamba_n_heads")
    if heads:
        hd = _first(text, "mamba_head_dim", "mamba_d_head")
        state = _first(text, "ssm_state_size", "mamba_d_state", "state_size")
        conv = _first(text, "conv_kernel", "mamba_d_conv")
        groups = _first(text, "n_groups", "mamba_n_groups") or 1
        missing = [k for k, v in (("mamba_head_dim", hd), ("ssm_state_size", state), ("conv_kernel", conv)) if not v]
        if missing:
            raise UnsupportedArchitectureError(f"Mamba2 config.json lacks {', '.join(missing)}")
        return MambaConfig(kind="mamba2", conv_kernel=int(conv), num_heads=int(heads), head_dim=int(hd),
                           n_groups=int(groups), state_size=int(state), intermediate_size=int(heads) * int(hd),
                           ssm_dtype_fp32=mt == "nemotron_h")
    state = _first(text, "mamba_d_state", "state_size")
    conv = _first(text, "mamba_d_conv", "conv_kernel")
    expand = _first(text, "mamba_expand", "expand")
    if state and conv and expand:
        return MambaConfig(kind="mamba1", conv_kernel=int(conv), state_size=int(state),
                           intermediate_size=int(expand) * hidden)
    raise UnsupportedArchitectureError(
        "hybrid config.json lacks Mamba state fields (linear_num_value_heads / mamba_num_heads / mamba_d_state)"
    )


def _require(cfg: dict, keys: tuple[str, ...], what: str) -> None:
    missing = [k for k in keys if cfg.get(k) is None]
    if missing:
        raise UnsupportedArchitectureError(
            f"{what} config.json lacks required fields: {', '.join(missing)}",
            [FieldViolation(f"{_CONFIG_PATH}.{k}", "required field is missing") for k in missing],
        )


def _vision_params(config: dict) -> int:
    vc = config.get("vision_config")
    if not isinstance(vc, dict) or not vc.get("hidden_size"):
        return 0
    h, layers = int(vc["hidden_size"]), int(vc.get("num_hidden_layers", vc.get("depth", 0)) or 0)
    inter = int(vc.get("intermediate_size", 4 * h))
    return layers * (4 * h * h + 2 * h * inter)


def parse_architecture(config: dict, quantization: str | None = None, yarn_scales_max_len: bool = False
                       ) -> ModelArchitecture:
    """Parse a config.json dict. ``quantization`` is the user's --quantization (online methods);
    ``yarn_scales_max_len``: derive max_model_len as vLLM <= 0.29 does (``VersionProfile.yarn_scales_max_len``;
    the default is the current rule)."""
    if not isinstance(config, dict) or not config:
        raise UnsupportedArchitectureError("config.json is empty")
    text = _with_defaults(_text_config(config))
    model_type = str(text.get("model_type") or config.get("model_type") or "unknown")
    _require(text, ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"),
             f"model_type={model_type!r}")
    _validate_raw(config, text)
    hidden, n, heads = int(text["hidden_size"]), int(text["num_hidden_layers"]), int(text["num_attention_heads"])
    kinds, window, chunk = _layer_kinds(text, n, model_type)
    kv_heads = _first(text, "n_head_kv", "num_kv_heads", "num_key_value_heads", "multi_query_group_num",
                      "num_attention_groups")
    if kv_heads is None and text.get("multi_query") and not text.get("new_decoder_architecture"):
        kv_heads = 1
    mla = None
    if model_type in _MLA_TYPES and text.get("kv_lora_rank"):
        _require(text, ("qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim"), "MLA")
        mla = MlaConfig(kv_lora_rank=int(text["kv_lora_rank"]), qk_rope_head_dim=int(text["qk_rope_head_dim"]),
                        qk_nope_head_dim=int(text["qk_nope_head_dim"]), v_head_dim=int(text["v_head_dim"]),
                        q_lora_rank=text.get("q_lora_rank"))
    head_dim = _first(text, "head_dim", "hidden_size_per_head") or hidden // heads
    moe = _moe(text, n, kinds)
    inter = _first(text, "intermediate_size_mlp", "intermediate_size", "ffn_hidden_size")
    if inter is None and not moe:
        raise UnsupportedArchitectureError(f"model_type={model_type!r} config.json lacks intermediate_size")
    if inter is not None and model_type in _HALVED_INTERMEDIATE_TYPES:
        inter = int(inter) // 2
    dtype = str(_first(text, "torch_dtype", "dtype") or "float32").replace("torch.", "")
    if dtype not in _DTYPE_BYTES:
        dtype = "bfloat16"
    max_len, source = _derive_max_len(text, model_type, yarn_scales_max_len)
    rope = text.get("rope_scaling") or {}
    default_len = max_len
    if isinstance(rope, dict) and rope.get("rope_type", rope.get("type")) in ("longrope", "su"):
        default_len = int(text.get("original_max_position_embeddings") or max_len)
    rotary_dim = mla.qk_rope_head_dim if mla else int(int(head_dim) * float(text.get("partial_rotary_factor", 1.0)))
    rope_positions = int(text.get("max_position_embeddings") or max_len)
    return ModelArchitecture(
        architectures=tuple(config.get("architectures") or ()),
        model_type=model_type,
        hidden_size=hidden,
        num_layers=n,
        num_attention_heads=heads,
        num_kv_heads=int(kv_heads if kv_heads is not None else heads),
        head_dim=int(head_dim),
        intermediate_size=int(inter or 0),
        vocab_size=int(text["vocab_size"]),
        tie_word_embeddings=bool(text.get("tie_word_embeddings", False)),
        checkpoint_dtype={"half": "float16", "float": "float32"}.get(dtype, dtype),
        attention_bias=bool(text.get("attention_bias") or model_type in _QKV_BIAS_TYPES),
        qk_norm=bool(text.get("use_qk_norm")) or model_type in _QK_NORM_TYPES,
        layer_kinds=tuple(kinds),
        mlp_layers=tuple(c in "-E" for c in text["hybrid_override_pattern"]) if text.get("hybrid_override_pattern")
        else None,
        sliding_window=window,
        attention_chunk_size=chunk,
        mla=mla,
        moe=moe,
        mamba=_mamba(text, hidden) if "mamba" in kinds else None,
        quantization=parse_quantization(config, quantization),
        vision_params=_vision_params(config),
        rotary_cache_elements=0 if text.get("position_embedding_type") == "absolute" or model_type in
        _ABSOLUTE_POSITION_TYPES else rope_positions * rotary_dim,
        gated_mlp=model_type not in _UNGATED_MLP_TYPES,
        absolute_position_rows=(rope_positions + (2 if model_type == "opt" else 0))
        if model_type in _ABSOLUTE_POSITION_TYPES else 0,
        derived_max_model_len=max_len,
        max_len_source=source,
        default_max_model_len=min(default_len, max_len),
    )
