"""Quantization formats: parse ``quantization_config`` and give the real on-GPU bytes of a quantized linear.

Byte counts follow the parameter shapes vLLM creates (internals §4.3): packed int32 weights, zero points,
scales in the model dtype (or fp32 for fp8 block/channel scales). Embeddings, LM head, norms and routers
stay in the model dtype; ``ignored`` names parts of the decoder the checkpoint left unquantized.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from planner_service.engine.errors import InvalidRequestError, UnsupportedArchitectureError, invalid_request_from

QuantKind = Literal["fp8", "int8", "awq", "gptq", "wna16", "mxfp4", "nvfp4", "mxfp8"]
# Parts of a decoder a checkpoint may leave unquantized.
Part = Literal["attention", "mlp", "experts", "shared_experts", "linear_attention"]

_UNSUPPORTED = {"bitsandbytes", "gguf"}
_ONLINE_FP8 = {"fp8", "fp8_per_tensor", "fp8_per_block", "fp8_per_channel", "online"}

# Every method vLLM 0.33 registers (vllm/model_executor/layers/quantization/__init__.py QuantizationMethods),
# and how a plan meets it:
#   checkpoint: a checkpoint declares it as quantization_config.quant_method (or hf_quant_config.json) and the
#               planner sizes it from that config;
#   selected:   vLLM picks it for a checkpoint that declares another method (awq -> awq_marlin ...), or the user
#               passes it with such a checkpoint; sized as the declared method;
#   online:     vLLM quantizes an unquantized checkpoint at load (--quantization NAME); sized here.
VLLM_QUANTIZATION_METHODS: dict[str, tuple[str, str]] = {
    "awq": ("checkpoint", "AutoAWQ int4 + zero points, fp16 scales per group"),
    "auto_awq": ("selected", "vLLM's AutoAWQ kernels for an awq checkpoint"),
    "awq_marlin": ("selected", "Marlin kernels for an awq checkpoint (same tensors)"),
    "fp8": ("checkpoint", "fp8 weights, per-tensor or block scales; online on an unquantized checkpoint"),
    "fbgemm_fp8": ("checkpoint", "fp8 linear weights + fp32 per-channel scales; MoE experts unquantized"),
    "fp_quant": ("checkpoint", "MXFP4/NVFP4 weights with Hadamard rotations (forward_dtype)"),
    "modelopt": ("checkpoint", "TensorRT Model Optimizer; quant_algo FP8 (also NVFP4/MXFP8/MIXED_PRECISION)"),
    "modelopt_fp4": ("selected", "modelopt quant_algo NVFP4"),
    "modelopt_mxfp8": ("selected", "modelopt quant_algo MXFP8"),
    "modelopt_mixed": ("selected", "modelopt quant_algo MIXED_PRECISION (sized as its most common algorithm)"),
    "auto_gptq": ("selected", "vLLM's AutoGPTQ kernels for a gptq checkpoint"),
    "gptq": ("checkpoint", "GPTQ intN + zero points + g_idx, fp16 scales per group"),
    "gptq_marlin": ("selected", "Marlin kernels for a gptq checkpoint (same tensors)"),
    "humming": ("selected", "--quantization humming on a quantized checkpoint (sized as the checkpoint)"),
    "compressed-tensors": ("checkpoint", "llm-compressor: int/fp 4-8 bit, channel/group/block/tensor scales"),
    "experts_int8": ("online", "int8 MoE expert weights + per-channel scales; the rest unquantized"),
    "quark": ("checkpoint", "AMD Quark: fp8 / int8 / int4 / mxfp4 weights (global_quant_config.weight)"),
    "moe_wna16": ("selected", "--quantization moe_wna16 on an awq/gptq MoE checkpoint (same tensors)"),
    "torchao": ("checkpoint", "torchao quant_type: Int4WeightOnly / Int8WeightOnly / Float8 configs"),
    "inc": ("checkpoint", "Intel auto-round (quant_method auto-round): intN groups like GPTQ"),
    "mxfp4": ("checkpoint", "MXFP4 (gpt-oss experts): 4-bit + e8m0 scale per 32"),
    "gpt_oss_mxfp4": ("selected", "vLLM's gpt-oss MXFP4 path for an mxfp4 checkpoint"),
    "deepseek_v4_fp8": ("selected", "vLLM's DeepSeek-V4 path for its fp8 checkpoint (sized as fp8 block)"),
    "online": ("online", "the --quantization-config spec (sized as fp8 per tensor)"),
    "fp8_per_tensor": ("online", "fp8 weights, one scale per tensor"),
    "fp8_per_block": ("online", "fp8 weights, 128x128 block scales"),
    "fp8_per_channel": ("online", "fp8 weights, per-channel scales"),
    "int8_per_channel_weight_only": ("online", "int8 MoE experts only; linear layers stay unquantized"),
    "nvfp4_per_token": ("online", "NVFP4 MoE experts only; linear layers stay unquantized"),
    "mxfp8": ("checkpoint", "MXFP8 (MiniMax checkpoints; online too): fp8 + e8m0 scale per 32"),
}
# vllm-wizard's -q choices on an unquantized checkpoint: vLLM cannot make these on the fly, so the plan is
# sized as the quantized checkpoint a user would serve instead (a what-if, flagged in the response).
WHAT_IF_METHODS = {"awq", "awq_marlin", "auto_awq", "gptq", "gptq_marlin", "auto_gptq", "int8"}


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
    ignored_in_layers: frozenset[tuple[int, str]] = frozenset()  # (layer, Part) left in the model dtype
    kv_cache_fp8: bool = False  # checkpoint carries fp8 KV scales (kv_cache_scheme / kv_cache_quant_algo)
    what_if: bool = False  # sized as a quantized checkpoint the user does not have (see WHAT_IF_METHODS)

    @model_validator(mode="after")
    def _physical_sizes(self) -> "QuantConfig":
        # Every parser below ends here: a group of 0 (vLLM divides by it), a negative group other than
        # -1 (per channel) or a zero-sized block is refused whichever checkpoint format declared it.
        path = "model.config_json.quantization_config"
        if self.group_size is not None and not (self.group_size == -1 or 1 <= self.group_size <= 1_000_000):
            raise InvalidRequestError.for_field(
                f"{path}.group_size", f"{self.group_size} is not a group size: use -1 (per output channel) or a "
                "positive size")
        if self.block_size is not None and not all(1 <= b <= 1_000_000 for b in self.block_size):
            raise InvalidRequestError.for_field(f"{path}.weight_block_size", f"{self.block_size} is not a block size")
        if not 1 <= self.bits <= 16:
            raise InvalidRequestError.for_field(f"{path}.bits", f"{self.bits} bits per weight is not a quantization")
        return self

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
        if self.kind == "mxfp8":
            return elems + elems / 32  # e8m0 scale per 32
        if self.kind == "nvfp4":
            return elems / 2 + elems / 16 + 8  # fp8 scale per 16 + global scales
        raise AssertionError(self.kind)

    def quantizes(self, part: Part, layer: int | None = None) -> bool:
        return part not in self.ignored and (layer is None or (layer, part) not in self.ignored_in_layers)


class _RawQuant(BaseModel):
    """Typed view of the ``quantization_config`` keys read below (strict: no bools/strings as numbers)."""

    model_config = ConfigDict(extra="allow")
    quant_method: str | None = Field(default=None, strict=True)
    bits: Annotated[int | None, Field(default=None, strict=True, ge=1, le=16)]
    w_bit: Annotated[int | None, Field(default=None, strict=True, ge=1, le=16)]
    # an int (GPTQ/AWQ groups), or [rows, cols] (auto-round fp8 blocks)
    group_size: Annotated[int, Field(strict=True, ge=-1, le=1_000_000)] | list[
        Annotated[int, Field(strict=True, ge=1, le=1_000_000)]] | None = None
    q_group_size: Annotated[int | None, Field(default=None, strict=True, ge=-1, le=1_000_000)]
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


_LAYER_ENTRY = re.compile(r"layers\.(\d+)\.(.+)$")
_ATTENTION_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "dense", "query_key_value", "self_attn")
_MLP_PROJ = ("gate_proj", "up_proj", "down_proj", "gate_up_proj", "fc1", "fc2", "c_fc", "c_proj")


def _ignored_in_layers(patterns: list[str] | None) -> frozenset[tuple[int, str]]:
    """Per-layer entries of an ignore list (``model.layers.0.mlp.down_proj``) as (layer, Part).

    Meta's Llama-3.1-405B-FP8 (fbgemm_fp8) keeps the first and last layers' MLPs in bf16 this way. Routers
    (``mlp.gate``) and norms are never quantized, so entries naming them change nothing.
    """
    out: set[tuple[int, str]] = set()
    for raw in patterns or []:
        match = _LAYER_ENTRY.search(str(raw))
        if match is None:
            continue
        layer, rest = int(match.group(1)), match.group(2)
        leaf = rest.rsplit(".", 1)[-1]
        if "linear_attn" in rest:
            out.add((layer, "linear_attention"))
        elif "attn" in rest and (leaf in _ATTENTION_PROJ or leaf.endswith("attn")):
            out.add((layer, "attention"))
        elif leaf in _MLP_PROJ or leaf in ("mlp", "experts"):
            part = "shared_experts" if "shared_expert" in rest else "experts" if "experts" in rest else "mlp"
            out.add((layer, part))
    return frozenset(out)


class _RawCompressedWeights(BaseModel):
    """Typed view of a compressed-tensors ``config_groups.*.weights`` entry."""

    model_config = ConfigDict(extra="allow")
    num_bits: Annotated[int, Field(strict=True, ge=1, le=16)] = 8
    type: Annotated[str, Field(strict=True)] = "int"
    strategy: Annotated[str, Field(strict=True)] = "tensor"
    group_size: Annotated[int | None, Field(strict=True, ge=-1, le=1_000_000)] = None
    symmetric: Annotated[bool, Field(strict=True)] = True
    block_structure: list[Annotated[int, Field(strict=True, ge=1, le=1_000_000)]] | None = Field(
        default=None, min_length=2, max_length=2)


def _from_compressed_tensors(qc: dict, qc_path: str = "model.config_json.quantization_config") -> QuantConfig:
    groups = qc.get("config_groups") or {}
    if not groups:
        raise UnsupportedArchitectureError("compressed-tensors quantization_config has no config_groups")
    name, first = next(iter(groups.items()))
    try:  # a string num_bits was an INTERNAL (int()) before: typed like the rest of quantization_config
        raw = _RawCompressedWeights.model_validate(first.get("weights") or {})
    except ValidationError as exc:
        raise invalid_request_from(exc, f"{qc_path}.config_groups.{str(name)[:64]}.weights") from None
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
    if qc is None and config.get("compression_config") is not None:  # older compressed-tensors checkpoints
        qc, path = config["compression_config"], "model.config_json.compression_config"
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
        return _online_or_what_if(cli_method.lower()) if cli_method else None
    try:
        quant = _from_checkpoint(qc, config)
    except (AttributeError, TypeError, ValueError, KeyError, IndexError) as exc:
        # The checkpoint's own format parsers read nested keys of a user's file: a shape they do not
        # expect (a string where a mapping belongs) is the file's fault, answered as such.
        raise InvalidRequestError.for_field(
            path, f"cannot be read as a {normalized_method(qc)!r} quantization_config ({type(exc).__name__})") from None
    if cli_method and quant.method != cli_method.lower():
        declared = normalized_method(qc)
        selected = VLLM_QUANTIZATION_METHODS.get(cli_method.lower())
        if cli_method.lower() != declared and (selected is None or selected[0] != "selected"):
            raise UnsupportedArchitectureError.for_field(
                "model.quantization", f"--quantization {cli_method} does not match the checkpoint's quant_method "
                f"{declared!r}; vLLM refuses a different method for a quantized checkpoint")
    return quant


def _online_or_what_if(method: str) -> QuantConfig:
    """``--quantization`` on an unquantized checkpoint: vLLM's online methods, or a seed-style what-if."""
    if method in _ONLINE_FP8:
        return QuantConfig(method=method, kind="fp8", bits=8, block_size=(128, 128) if method == "fp8_per_block"
                           else None, channel_scales=method == "fp8_per_channel")
    if method == "mxfp8":
        return QuantConfig(method=method, kind="mxfp8", bits=8, group_size=32)
    if method == "mxfp4":
        return QuantConfig(method=method, kind="mxfp4", bits=4, group_size=32)
    if method in ("experts_int8", "int8_per_channel_weight_only"):
        return QuantConfig(method=method, kind="int8", bits=8, channel_scales=True,
                           ignored=frozenset({"attention", "mlp", "shared_experts", "linear_attention"}))
    if method == "nvfp4_per_token":
        return QuantConfig(method=method, kind="nvfp4", bits=4, group_size=16,
                           ignored=frozenset({"attention", "mlp", "shared_experts", "linear_attention"}))
    if method in WHAT_IF_METHODS:
        if method == "int8":  # as an int8 W8A8 checkpoint (compressed-tensors, per-channel scales)
            return QuantConfig(method="compressed-tensors", kind="int8", bits=8, channel_scales=True, what_if=True)
        kind = "awq" if "awq" in method else "gptq"
        return QuantConfig(method=kind, kind=kind, bits=4, group_size=128, zero_points=True, what_if=True)
    known = VLLM_QUANTIZATION_METHODS.get(method)
    why = "it is not a vLLM 0.33 quantization method" if known is None else f"{method} needs a quantized checkpoint"
    raise UnsupportedArchitectureError.for_field(
        "model.quantization", f"--quantization {method} on an unquantized checkpoint: {why} (quantization_config "
        "missing); online methods: fp8, fp8_per_tensor, fp8_per_block, fp8_per_channel, mxfp8, mxfp4, "
        "experts_int8; what-ifs sized as a quantized checkpoint: awq, gptq, int8")


def _modelopt(qc: dict) -> QuantConfig:
    body = qc.get("quantization") if isinstance(qc.get("quantization"), dict) else qc
    algo = str(body.get("quant_algo", "")).upper()
    kv = bool(body.get("kv_cache_quant_algo"))
    exclude = body.get("exclude_modules") or qc.get("exclude_modules") or []
    ignored, per_layer = _ignored_parts(exclude), _ignored_in_layers(exclude)
    method = "modelopt"
    if algo == "MIXED_PRECISION":  # per-layer algorithms: size as the most common one
        layers = body.get("quantized_layers") or {}
        algos = Counter(str(v.get("quant_algo", "")).upper() for v in layers.values() if isinstance(v, dict))
        algo, method = (algos.most_common(1)[0][0] if algos else "FP8"), "modelopt_mixed"
    if "FP4" in algo:
        return QuantConfig(method="modelopt_fp4" if method == "modelopt" else method, kind="nvfp4", bits=4,
                           group_size=16, kv_cache_fp8=kv, ignored=ignored, ignored_in_layers=per_layer)
    if "MXFP8" in algo:
        return QuantConfig(method="modelopt_mxfp8" if method == "modelopt" else method, kind="mxfp8", bits=8,
                           group_size=32, kv_cache_fp8=kv, ignored=ignored, ignored_in_layers=per_layer)
    if "FP8" in algo:
        return QuantConfig(method=method, kind="fp8", bits=8, kv_cache_fp8=kv, ignored=ignored,
                           ignored_in_layers=per_layer)
    if algo.startswith("W4A"):  # W4A8_AWQ / W4A16_AWQ: int4 groups of 128 with fp16 scales
        return QuantConfig(method=method, kind="awq", bits=4, group_size=128, kv_cache_fp8=kv, ignored=ignored,
                           ignored_in_layers=per_layer)
    raise UnsupportedArchitectureError(f"modelopt quant_algo {algo!r} not supported")


def _quark(qc: dict) -> QuantConfig:
    weight = ((qc.get("global_quant_config") or {}).get("weight") or {})
    if isinstance(weight, list):  # a list of weight specs (e.g. w4a8 with two stages): the first is stored
        weight = weight[0] if weight else {}
    dtype = str(weight.get("dtype", "")).lower()
    scheme = str(weight.get("qscheme", "per_tensor")).lower()
    exclude = qc.get("exclude") or []
    common = {"method": "quark", "ignored": _ignored_parts(exclude), "ignored_in_layers": _ignored_in_layers(exclude),
              "kv_cache_fp8": bool(qc.get("kv_cache_group"))}
    if dtype.startswith("fp8"):
        return QuantConfig(kind="fp8", bits=8, channel_scales=scheme == "per_channel", **common)
    if dtype in ("int8", "uint8"):
        return QuantConfig(kind="int8", bits=8, channel_scales=scheme == "per_channel", **common)
    if dtype in ("fp4", "mxfp4"):
        return QuantConfig(kind="mxfp4", bits=4, group_size=32, **common)
    if dtype in ("int4", "uint4"):
        group = weight.get("group_size") if scheme == "per_group" else None
        return QuantConfig(kind="wna16", bits=4, group_size=group, zero_points=dtype == "uint4", **common)
    raise UnsupportedArchitectureError(f"quark weight dtype {dtype!r} not supported by the planner")


def _torchao(qc: dict) -> QuantConfig:
    quant_type = ((qc.get("quant_type") or {}).get("default") or {})
    kind_name = str(quant_type.get("_type", ""))
    data = quant_type.get("_data") if isinstance(quant_type.get("_data"), dict) else {}
    skip = qc.get("modules_to_not_convert") or []
    common = {"method": "torchao", "ignored": _ignored_parts(skip), "ignored_in_layers": _ignored_in_layers(skip)}
    if "Int4" in kind_name:  # int4 weight-only: groups (default 128) with bf16 scale and zero point
        group = data.get("group_size", 128) if isinstance(data.get("group_size", 128), int) else 128
        return QuantConfig(kind="wna16", bits=4, group_size=group, zero_points=True, **common)
    if "Int8" in kind_name:
        return QuantConfig(kind="int8", bits=8, channel_scales=True, **common)
    if "Float8" in kind_name:
        return QuantConfig(kind="fp8", bits=8, channel_scales=True, **common)
    raise UnsupportedArchitectureError(f"torchao quant_type {kind_name!r} not supported by the planner")


def _int_group(value: object) -> int:
    if not isinstance(value, int):
        raise InvalidRequestError.for_field("model.config_json.quantization_config.group_size",
                                            f"must be a whole number for this method, got {value!r}")
    return value


def _auto_round(qc: dict, ignored: frozenset[str], per_layer: frozenset[tuple[int, str]]) -> QuantConfig:
    """Intel auto-round (vLLM ``inc``): GPTQ- or AWQ-packed intN, fp8 blocks, or MX formats (INCConfig)."""
    bits = int(qc.get("bits", 4))
    group = qc.get("group_size", 128)
    data_type = str(qc.get("data_type", "int")).lower()
    packing = str(qc.get("packing_format", "auto_round:auto_gptq")).lower()
    common = {"method": "inc", "ignored": ignored, "ignored_in_layers": per_layer}
    if "mx_fp" in data_type:
        return QuantConfig(kind="mxfp4" if bits == 4 else "mxfp8", bits=bits, group_size=32, **common)
    if packing == "auto_round:fp8" or data_type in ("fp", "fp8"):
        block = tuple(group) if isinstance(group, list) and len(group) == 2 else None
        return QuantConfig(kind="fp8", bits=8, block_size=block, channel_scales=block is None, **common)
    group = int(group) if isinstance(group, int) else 128
    if packing == "auto_round:auto_awq":
        return QuantConfig(kind="awq", bits=bits, group_size=group, zero_points=True, **common)
    return QuantConfig(kind="gptq", bits=bits, group_size=group, zero_points=True, **common)


_MODELOPT_ALGOS = {"FP8": "modelopt", "FP8_PER_CHANNEL_PER_TOKEN": "modelopt", "FP8_PB_WO": "modelopt",
                   "NVFP4": "modelopt_fp4", "MIXED_PRECISION": "modelopt_mixed"}


def normalized_method(qc: dict) -> str:
    """vLLM's ``_normalize_quantization_config``: ModelOpt's hf_quant_config.json names no quant_method (its
    ``producer`` and ``quant_algo`` do); ``compressed_tensors`` is spelt with a dash."""
    body = qc.get("quantization")
    producer = qc.get("producer") if isinstance(qc.get("producer"), dict) else {}
    legacy = isinstance(body, dict) and "modelopt_quant_config" in body
    if (producer.get("name") == "modelopt" or legacy) and isinstance(body, dict) and body.get("quant_algo"):
        algo = str(body["quant_algo"]).upper()
        if algo not in _MODELOPT_ALGOS:
            raise UnsupportedArchitectureError(f"Unknown ModelOpt quant algo: {body['quant_algo']}")
        return _MODELOPT_ALGOS[algo]
    return str(qc.get("quant_method", "")).lower().replace("compressed_tensors", "compressed-tensors")


def _from_checkpoint(qc: dict, config: dict) -> QuantConfig:
    method = normalized_method(qc)
    patterns = qc.get("modules_to_not_convert") or qc.get("ignore") or qc.get("ignored_layers")
    ignored = _ignored_parts(patterns)
    per_layer = _ignored_in_layers(patterns)
    if method in _UNSUPPORTED:
        raise UnsupportedArchitectureError(f"quantization_config.quant_method={method} is not supported by vLLM")
    if method in ("fp8", "deepseek_v4_fp8"):
        block = qc.get("weight_block_size")
        model_type = str((config.get("text_config") or config).get("model_type") or "")
        name = "deepseek_v4_fp8" if model_type.startswith("deepseek_v4") else "fp8"
        return QuantConfig(method=name, kind="fp8", bits=8, block_size=tuple(block) if block else None,
                           ignored=ignored, ignored_in_layers=per_layer)
    if method == "fbgemm_fp8":
        # FBGEMMFp8Config quantizes LinearBase layers only: fp8 weight + fp32 scale per output channel;
        # fused MoE experts get no quant method and stay in the model dtype.
        return QuantConfig(method="fbgemm_fp8", kind="fp8", bits=8, channel_scales=True,
                           ignored=ignored | {"experts"}, ignored_in_layers=per_layer)
    if method == "mxfp8":
        return QuantConfig(method="mxfp8", kind="mxfp8", bits=8, group_size=32, ignored=ignored,
                           ignored_in_layers=per_layer)
    if method in ("auto-round", "intel/auto-round", "inc", "auto_round"):
        return _auto_round(qc, ignored, per_layer)
    if method == "fp_quant":
        forward = str(qc.get("forward_dtype", "mxfp4")).lower()
        kind = "nvfp4" if "nvfp4" in forward else "mxfp4"
        return QuantConfig(method="fp_quant", kind=kind, bits=4, group_size=16 if kind == "nvfp4" else 32,
                           ignored=ignored, ignored_in_layers=per_layer)
    if method == "quark":
        return _quark(qc)
    if method == "torchao":
        return _torchao(qc)
    if method in ("awq", "awq_marlin", "auto_awq"):
        bits = int(qc.get("bits", qc.get("w_bit", 4)))
        group = _int_group(qc.get("group_size", qc.get("q_group_size", 128)))
        return QuantConfig(method="awq", kind="awq", bits=bits, group_size=group,
                           zero_points=bool(qc.get("zero_point", True)), ignored=ignored, ignored_in_layers=per_layer)
    if method in ("gptq", "gptq_marlin", "auto_gptq"):
        bits = int(qc.get("bits", 4))
        group = _int_group(qc.get("group_size", 128))
        if qc.get("desc_act") and group != -1:
            raise UnsupportedArchitectureError.for_field(
                "quantization_config.desc_act",
                "GPTQ group activation ordering (desc_act=True) is no longer supported by vLLM",
            )
        return QuantConfig(method="gptq", kind="gptq", bits=bits, group_size=group, zero_points=True,
                           ignored=ignored, ignored_in_layers=per_layer)
    if method == "compressed-tensors":
        return _from_compressed_tensors(qc)  # (its errors name the config_groups entry)
    if method in ("mxfp4", "gpt_oss_mxfp4"):
        parts = set(ignored) | {"attention"}  # gpt-oss: only the experts are MXFP4
        return QuantConfig(method="mxfp4", kind="mxfp4", bits=4, group_size=32, ignored=frozenset(parts))
    if method in ("modelopt", "modelopt_fp4", "modelopt_mxfp8", "modelopt_mixed"):
        return _modelopt(qc)
    declarable = sorted(k for k, (how, _) in VLLM_QUANTIZATION_METHODS.items() if how == "checkpoint")
    raise UnsupportedArchitectureError(
        f"quantization_config.quant_method={method!r} is not supported by the planner "
        f"(checkpoint methods of vLLM 0.33: {', '.join(declarable)})"
    )
