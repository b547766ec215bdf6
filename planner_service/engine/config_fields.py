"""Boundary validation of the raw config.json fields the reader (``architecture.py``) uses.

Strict ints (a bool, float or string is a typo or an attack, never a size) with bounds far above any real
model, so that every later int()/range()/division in the reader works on sane numbers. Every bad field
becomes one ``FieldViolation`` with a dotted path (``model.config_json.text_config.hidden_size``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from planner_service.engine.errors import FieldViolation, InvalidRequestError

LEN_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "model_max_length",
            "max_target_positions", "max_sequence_length", "max_seq_length", "seq_len")
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "half": 2, "float": 4}
NESTED_KEYS = ("text_config", "llm_config", "language_config")
CONFIG_PATH = "model.config_json"


def _int(lo: int, hi: int):
    return Annotated[int | None, Field(strict=True, ge=lo, le=hi)]


_Layers, _Width, _Heads = _int(1, 10_000), _int(1, 1_000_000), _int(1, 100_000)
_Vocab, _Positions, _Inter = _int(1, 10_000_000), _int(1, 100_000_000), _int(1, 10_000_000)
_Count, _Step = _int(0, 100_000), _int(1, 10_000)
_Factor = Annotated[float | None, Field(strict=True, gt=0, le=1_000_000, allow_inf_nan=False)]


class _RawRope(BaseModel):
    model_config = ConfigDict(extra="allow")
    factor: _Factor = None
    rope_type: str | None = Field(default=None, strict=True)
    type: str | None = Field(default=None, strict=True)
    original_max_position_embeddings: _Positions = None


class _RawVision(BaseModel):
    model_config = ConfigDict(extra="allow")
    hidden_size: _Width = None
    num_hidden_layers: _int(0, 10_000) = None
    depth: _int(0, 10_000) = None
    intermediate_size: _Inter = None


_LIST_OF_STR = Annotated[list[str] | None, Field(strict=True)]
_STR = Annotated[str | None, Field(strict=True)]
# Every numeric key the reader reads, by its bound; aliases share a bound (num_experts / n_routed_experts ...).
_TEXT_FIELD_TYPES: dict[str, object] = {
    **dict.fromkeys(("num_hidden_layers", "n_layer", "n_layers", "num_layers"), _Layers),
    **dict.fromkeys(("n_embd", "d_model"), _Width),
    **dict.fromkeys(("n_head", "n_heads", "num_heads"), _Heads),
    **dict.fromkeys(("n_inner", "ffn_dim"), _Inter),
    **dict.fromkeys(("hidden_size", "kv_lora_rank", "q_lora_rank", "ssm_state_size", "mamba_d_state",
                     "state_size"), _Width),
    **dict.fromkeys(("num_attention_heads", "n_head_kv", "num_kv_heads", "num_key_value_heads",
                     "multi_query_group_num", "num_attention_groups", "head_dim", "hidden_size_per_head",
                     "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim", "linear_num_key_heads",
                     "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim", "mamba_num_heads",
                     "mamba_n_heads", "mamba_head_dim", "mamba_d_head", "n_groups", "mamba_n_groups"), _Heads),
    "vocab_size": _Vocab,
    **dict.fromkeys(("intermediate_size", "intermediate_size_mlp", "ffn_hidden_size", "moe_intermediate_size"),
                    _Inter),
    "shared_expert_intermediate_size": _int(0, 10_000_000),
    **dict.fromkeys(LEN_KEYS + ("original_max_position_embeddings", "attention_chunk_size"), _Positions),
    "sliding_window": _int(0, 100_000_000),  # 0: no sliding window
    **dict.fromkeys(("sliding_window_pattern", "full_attention_interval", "attn_layer_period", "moe_layer_freq",
                     "interleave_moe_layer_step", "expert_layer_period", "decoder_sparse_step",
                     "linear_conv_kernel_dim", "conv_kernel", "mamba_d_conv", "mamba_expand", "expand"), _Step),
    **dict.fromkeys(("attn_layer_offset", "first_k_dense_replace", "expert_layer_offset"), _int(0, 10_000)),
    **dict.fromkeys(("num_experts", "moe_num_experts", "n_routed_experts", "num_local_experts",
                     "num_experts_per_tok", "experts_per_token", "moe_topk", "top_k", "n_shared_experts"), _Count),
    **dict.fromkeys(("model_type", "torch_dtype", "dtype", "hybrid_override_pattern"), _STR),
    **dict.fromkeys(("layer_types", "layers_block_type"), _LIST_OF_STR),
    **dict.fromkeys(("rope_scaling", "rope_parameters"), _RawRope | None),
    "partial_rotary_factor": Annotated[float | None, Field(strict=True, gt=0, le=1, allow_inf_nan=False)],
    "no_rope_layers": list[Annotated[int, Field(strict=True, ge=0, le=1)]] | None,
    "mlp_only_layers": list[Annotated[int, Field(strict=True, ge=0)]] | None,
}


class _RawTextChecks(BaseModel):
    """Cross-field rules of the (text) config; the typed fields come from ``_TEXT_FIELD_TYPES``."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _consistent(self):
        dtype = self.torch_dtype if self.torch_dtype is not None else self.dtype
        if dtype is not None and dtype.replace("torch.", "") not in DTYPE_BYTES:
            key = "torch_dtype" if self.torch_dtype is not None else "dtype"
            raise _Bad(key, f"unknown dtype {dtype!r} (expected one of bfloat16, float16, float32)")
        heads = self.num_attention_heads
        kv_key = next((k for k in ("n_head_kv", "num_kv_heads", "num_key_value_heads", "multi_query_group_num",
                                   "num_attention_groups") if getattr(self, k) is not None), None)
        if heads and kv_key:
            kv = getattr(self, kv_key)
            if kv > heads or heads % kv:
                raise _Bad(kv_key, f"{kv} KV heads must divide num_attention_heads={heads} (1 <= KV heads <= heads)")
        layers, nope = self.num_hidden_layers, self.no_rope_layers
        if layers and nope is not None and len(nope) != layers:
            raise _Bad("no_rope_layers", f"has {len(nope)} entries but num_hidden_layers={layers}")
        experts = self.num_experts or self.moe_num_experts or self.n_routed_experts or self.num_local_experts
        topk_key = next((k for k in ("num_experts_per_tok", "experts_per_token", "moe_topk", "top_k")
                         if getattr(self, k)), None)
        if experts and topk_key and getattr(self, topk_key) > experts:
            raise _Bad(topk_key, f"{getattr(self, topk_key)} experts per token exceeds the {experts} experts")
        return self


_RawText = create_model("_RawText", __base__=_RawTextChecks,
                        **{key: (kind, None) for key, kind in _TEXT_FIELD_TYPES.items()})


class _Bad(ValueError):
    """A cross-field violation raised inside a validator; carries the offending key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key, self.message = key, message


def _violation_path(loc: tuple, prefix_of) -> str:
    return ".".join([prefix_of(str(loc[0]))] + [str(p) for p in loc[1:]]) if loc else CONFIG_PATH


def validate_raw(config: dict, text: dict) -> None:
    """Reject wrong types and impossible sizes with one ``FieldViolation`` per bad field (dotted paths)."""
    nested = next((k for k in NESTED_KEYS if isinstance(config.get(k), dict) and config[k]), None)

    def prefix_of(key: str) -> str:
        inside = nested is not None and key in config[nested]
        return f"{CONFIG_PATH}.{nested}.{key}" if inside else f"{CONFIG_PATH}.{key}"

    violations: list[FieldViolation] = []
    arch = config.get("architectures")
    if arch is not None and (not isinstance(arch, list) or not all(isinstance(a, str) for a in arch)):
        violations.append(FieldViolation(f"{CONFIG_PATH}.architectures", "must be a list of class-name strings"))
    checks: list[tuple[type[BaseModel], dict, object]] = [(_RawText, text, prefix_of)]
    vision = config.get("vision_config")
    if vision is not None and not isinstance(vision, dict):
        violations.append(FieldViolation(f"{CONFIG_PATH}.vision_config", "must be a JSON object"))
    elif vision:
        checks.append((_RawVision, vision, lambda k: f"{CONFIG_PATH}.vision_config.{k}"))
    for model, raw, prefix in checks:
        try:
            model.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                cause = (err.get("ctx") or {}).get("error")
                if isinstance(cause, _Bad):
                    violations.append(FieldViolation(prefix(cause.key), cause.message))
                else:
                    loc = err["loc"]
                    got = err.get("input")
                    shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
                    # pydantic's wording for a non-object names our private class; say it in JSON terms.
                    msg = "should be a JSON object" if err["type"] in ("model_type", "dict_type") else err["msg"]
                    violations.append(FieldViolation(_violation_path(loc, prefix),
                                                     f"{msg.lower()} (got {shown[:60]})"))
    if violations:
        first = violations[0]
        more = f" (+{len(violations) - 1} more)" if len(violations) > 1 else ""
        raise InvalidRequestError(f"{first.field}: {first.description}{more}", violations)
