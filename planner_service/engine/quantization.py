"""Quantization formats: parse ``quantization_config`` and give the real on-GPU bytes of a quantized linear.

Byte counts follow the parameter shapes vLLM creates (internals §4.3): packed int32 weights, zero points,
scales in the model dtype (or fp32 for fp8 block/channel scales). Embeddings, LM head, norms and routers
stay in the model dtype; ``ignored`` names parts of the decoder the checkpoint left unquantized.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from planner_service.engine.errors import InvalidRequestError, UnsupportedArchitectureError, invalid_request_from
from vllm_planner.bounded import shown

QuantKind = Literal["fp8", "int8", "awq", "gptq", "wna16", "mxfp4", "nvfp4"]
# Parts of a decoder a checkpoint may leave unquantized.
Part = Literal["attention", "mlp", "experts", "shared_experts", "linear_attention"]

_UNSUPPORTED = {"bitsandbytes", "gguf"}
_ONLINE_FP8 = {"fp8", "fp8_per_tensor", "fp8_per_block", "fp8_per_channel", "online"}


class QuantConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str  # vLLM quantization method name (checkpoint quant_method or --quantization)
    kind: QuantKind
    bits: int
    group_size: int | None = None  # None / -1: per output channel
    block_size: tuple[int, int] | None = None  # fp8 block-wise weight scales
    zero_points: bool = False
    channel_scales: bool = False  # fp32 scale per output channel (compressed-tensors int8/fp8)
    ignored: frozenset[str] = frozenset()  # Parts left in the model dtype
    kv_cache_fp8: bool = False  # checkpoint carries fp8 KV scales (kv_cache_scheme / kv_cache_quant_algo)

    def linear_bytes(self, k: int, n: int, dtype_bytes: int) -> float:
        """Bytes of one ``k`` (inputs) x ``n`` (outputs) linear weight on one rank, scales included."""
        elems = k * n
        if self.kind in ("fp8", "int8"):
            total = float(elems)
            if self.block_size:
                bn, bk = self.block_size
                total += 4 * -(-n // bn) * -(-k // bk)
            elif self.channel_scales:
                total += 4 * n
            else:
                total += 4  # per-tensor scale
            return total
        if self.kind in ("awq", "gptq", "wna16"):
            g = k if not self.group_size or self.group_size < 0 else self.group_size
            groups = -(-k // g)
            total = elems * self.bits / 8 + groups * n * dtype_bytes
            if self.zero_points:
                total += groups * n * self.bits / 8
            if self.kind == "gptq":
                total += 4 * k  # g_idx
            return total
        if self.kind == "mxfp4":
            return elems / 2 + elems / 32  # e8m0 scale per 32
        if self.kind == "nvfp4":
            return elems / 2 + elems / 16 + 8  # fp8 scale per 16 + global scales
        raise AssertionError(self.kind)

    def quantizes(self, part: Part) -> bool:
        return part not in self.ignored


def _group_size(value: int | None) -> int | None:
    # vLLM divides the input size by the group size: 0 has no meaning (-1 is "per channel").
    if value == 0:
        raise ValueError("group_size 0 is not a group size: use -1 (per output channel) or a positive size")
    return value


_GroupSize = Annotated[int | None, Field(default=None, strict=True, ge=-1, le=1_000_000), AfterValidator(_group_size)]


class _RawCompressedWeights(BaseModel):
    """Typed view of a compressed-tensors ``config_groups.*.weights`` entry."""

    model_config = ConfigDict(extra="allow")
    num_bits: Annotated[int, Field(strict=True, ge=1, le=16)] = 8
    type: Annotated[str, Field(strict=True)] = "int"
    strategy: Annotated[str, Field(strict=True)] = "tensor"
    group_size: _GroupSize = None
    symmetric: Annotated[bool, Field(strict=True)] = True
    block_structure: list[Annotated[int, Field(strict=True, ge=1, le=1_000_000)]] | None = Field(
        default=None, min_length=2, max_length=2)


class _RawQuant(BaseModel):
    """Typed view of the ``quantization_config`` keys read below (strict: no bools/strings as numbers)."""

    model_config = ConfigDict(extra="allow")
    quant_method: str | None = Field(default=None, strict=True)
    bits: Annotated[int | None, Field(default=None, strict=True, ge=1, le=16)]
    w_bit: Annotated[int | None, Field(default=None, strict=True, ge=1, le=16)]
    group_size: _GroupSize = None
    q_group_size: _GroupSize = None
    weight_block_size: list[Annotated[int, Field(strict=True, ge=1, le=1_000_000)]] | None = Field(
        default=None, min_length=2, max_length=2)
    config_groups: dict[str, dict] | None = None
    modules_to_not_convert: list[str] | None = None
    ignore: list[str] | None = None
    ignored_layers: list[str] | None = None
    quantization: dict | None = None


def _validated(qc: object, path: str) -> dict:
    """Reject a ``quantization_config`` that is not an object or has mistyped fields (INVALID_ARGUMENT)."""
    if not isinstance(qc, dict):
        raise InvalidRequestError.for_field(path, f"must be a JSON object, got {type(qc).__name__}")
    try:
        _RawQuant.model_validate(qc)
    except ValidationError as exc:
        raise invalid_request_from(exc, path) from None
    return qc


def _ignored_parts(patterns: list[str] | None) -> frozenset[str]:
    parts: set[str] = set()
    for raw in patterns or []:
        p = str(raw)
        if "linear_attn" in p:
            parts.add("linear_attention")
        elif "self_attn" in p or p.endswith("attn") or ".attn" in p:
            parts.add("attention")
        if "shared_expert" in p:
            parts.add("shared_experts")
    return frozenset(parts)


def _from_compressed_tensors(qc: dict, qc_path: str) -> QuantConfig:
    groups = qc.get("config_groups") or {}
    if not groups:
        raise UnsupportedArchitectureError("compressed-tensors quantization_config has no config_groups")
    name, first = next(iter(groups.items()))
    path = f"{qc_path}.config_groups.{str(name)[:64]}.weights"
    try:
        raw = _RawCompressedWeights.model_validate(first.get("weights") or {})
    except ValidationError as exc:
        raise invalid_request_from(exc, path) from None
    bits, wtype, strategy = raw.num_bits, raw.type, raw.strategy
    fmt = str(qc.get("format", ""))
    ignored = _ignored_parts(qc.get("ignore"))
    kv = bool(qc.get("kv_cache_scheme"))
    if "nvfp4" in fmt or (bits == 4 and wtype == "float"):
        return QuantConfig(method="compressed-tensors", kind="nvfp4", bits=4, group_size=16, ignored=ignored,
                           kv_cache_fp8=kv)
    if bits == 8:
        block = tuple(raw.block_structure) if strategy == "block" and raw.block_structure else None
        return QuantConfig(
            method="compressed-tensors", kind="fp8" if wtype == "float" else "int8", bits=8,
            block_size=block, channel_scales=strategy == "channel", ignored=ignored, kv_cache_fp8=kv,
        )
    if bits in (2, 3, 4):
        return QuantConfig(
            method="compressed-tensors", kind="wna16", bits=bits,
            group_size=raw.group_size if strategy == "group" else None,
            zero_points=not raw.symmetric, ignored=ignored, kv_cache_fp8=kv,
        )
    raise UnsupportedArchitectureError(f"compressed-tensors weights num_bits={bits} type={wtype} not supported")


def parse_quantization(config: dict, cli_method: str | None = None) -> QuantConfig | None:
    """Quantization of a checkpoint (``quantization_config``) or an online method (``--quantization``)."""
    qc = config.get("quantization_config")
    path = "model.config_json.quantization_config"
    text = config.get("text_config")
    if qc is None and isinstance(text, dict) and text.get("quantization_config") is not None:
        qc, path = text["quantization_config"], "model.config_json.text_config.quantization_config"
    if qc is not None:
        qc = _validated(qc, path)
    if cli_method and cli_method.lower() in _UNSUPPORTED:
        raise UnsupportedArchitectureError.for_field(
            "model.quantization", f"{cli_method} is not supported by vLLM >= 0.21 (removed)"
        )
    if not qc:
        if cli_method is None:
            return None
        if cli_method.lower() in _ONLINE_FP8:
            return QuantConfig(method=cli_method, kind="fp8", bits=8)
        raise UnsupportedArchitectureError.for_field(
            "model.quantization",
            f"online quantization {shown(cli_method)} needs a quantized checkpoint (quantization_config missing)",
        )
    method = str(qc.get("quant_method", "")).lower()
    ignored = _ignored_parts(qc.get("modules_to_not_convert") or qc.get("ignore") or qc.get("ignored_layers"))
    if method in _UNSUPPORTED:
        raise UnsupportedArchitectureError(f"quantization_config.quant_method={method} is not supported by vLLM")
    if method == "fp8":
        block = qc.get("weight_block_size")
        return QuantConfig(method="fp8", kind="fp8", bits=8, block_size=tuple(block) if block else None,
                           ignored=ignored)
    if method in ("awq", "awq_marlin", "auto_awq"):
        bits = int(qc.get("bits", qc.get("w_bit", 4)))
        group = int(qc.get("group_size", qc.get("q_group_size", 128)))
        return QuantConfig(method="awq", kind="awq", bits=bits, group_size=group,
                           zero_points=bool(qc.get("zero_point", True)), ignored=ignored)
    if method in ("gptq", "gptq_marlin", "auto_gptq"):
        bits = int(qc.get("bits", 4))
        group = int(qc.get("group_size", 128))
        if qc.get("desc_act") and group != -1:
            raise UnsupportedArchitectureError.for_field(
                "quantization_config.desc_act",
                "GPTQ group activation ordering (desc_act=True) is no longer supported by vLLM",
            )
        return QuantConfig(method="gptq", kind="gptq", bits=bits, group_size=group, zero_points=True,
                           ignored=ignored)
    if method == "compressed-tensors":
        return _from_compressed_tensors(qc, path)
    if method in ("mxfp4", "gpt_oss_mxfp4"):
        parts = set(ignored) | {"attention"}  # gpt-oss: only the experts are MXFP4
        return QuantConfig(method="mxfp4", kind="mxfp4", bits=4, group_size=32, ignored=frozenset(parts))
    if method in ("modelopt", "modelopt_fp4"):
        algo = str((qc.get("quantization") or qc).get("quant_algo", "")).upper()
        kv = bool((qc.get("quantization") or qc).get("kv_cache_quant_algo"))
        if "FP4" in algo:
            return QuantConfig(method="modelopt_fp4", kind="nvfp4", bits=4, group_size=16, kv_cache_fp8=kv)
        if "FP8" in algo:
            return QuantConfig(method="modelopt", kind="fp8", bits=8, kv_cache_fp8=kv)
        raise UnsupportedArchitectureError(f"modelopt quant_algo {algo!r} not supported")
    raise UnsupportedArchitectureError(
        f"quantization_config.quant_method={method!r} is not supported by the planner "
        "(supported: fp8, awq, gptq, compressed-tensors, mxfp4, modelopt)"
    )
