"""``DescribeModel``: what the planner reads from a model's metadata, as one flat summary.

The numbers come from the engine's own parsers (``architecture.parse_architecture``,
``weights.total_params``) over the same resolved metadata a plan uses, so a description never
disagrees with a plan of the same model. KV bytes per token are for the whole model on one GPU
(TP=1, PP=1), all attention layers, at the requested ``kv_cache_dtype`` or else the one a plan
would use on a bf16-capable GPU.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from planner_service.engine.architecture import ModelArchitecture, parse_architecture
from planner_service.engine.kv_cache import attention_bytes_per_token
from planner_service.engine.memory import kv_dtype_bytes
from planner_service.engine.models import ModelOptions
from planner_service.engine.weights import total_params


_ATTENTION_KINDS = ("full", "sliding", "chunked")


class ModelDescription(BaseModel):
    """A model as the planner understands it (returned by ``PlannerClient.describe_model``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model: str
    source: str = Field(description="catalog | hf-cache | hub | local | inline")
    revision: str | None = None
    architecture: str = Field(description="The first of config.json's architectures ('' when absent).")
    model_type: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    layer_kinds: dict[str, int] = Field(description="Layers per attention kind (full, sliding, chunked, mamba, none).")
    sliding_window: int | None = None
    attention_chunk_size: int | None = None
    uses_mla: bool
    num_experts: int | None = None
    experts_per_token: int | None = None
    checkpoint_dtype: str
    quantization: str | None = Field(default=None, description="vLLM quantization method, None = unquantized.")
    num_params: int
    num_active_params: int | None = None
    params_source: str = Field(description="safetensors | override | computed")
    kv_cache_dtype: str
    kv_bytes_per_token: int = Field(description="KV cache bytes per token, all layers, one GPU (TP=1, PP=1).")
    derived_max_model_len: int
    max_len_source: str = Field(description="The config.json key the derived max_model_len comes from.")


def _kv_dtype(options: ModelOptions, arch: ModelArchitecture) -> tuple[str, int]:
    """(vLLM --kv-cache-dtype, bytes per element) as a plan on a bf16-capable GPU (sm80+) resolves it:
    ``auto`` stores KV in the model dtype (float32 checkpoints run in bfloat16), fp8 when the
    checkpoint carries fp8 KV scales."""
    aliases = {"half": "float16", "float": "float32"}
    model_dtype = aliases.get(options.dtype, options.dtype) if options.dtype != "auto" else arch.checkpoint_dtype
    if options.dtype == "auto" and model_dtype == "float32":
        model_dtype = "bfloat16"
    kv_dtype = options.kv_cache_dtype or "auto"
    if kv_dtype == "auto" and options.kv_cache_dtype is None and arch.quantization and arch.quantization.kv_cache_fp8:
        kv_dtype = "fp8"
    return kv_dtype, kv_dtype_bytes(kv_dtype, model_dtype)


def _layer_kind_counts(arch: ModelArchitecture) -> dict[str, int]:
    counts: dict[str, int] = {}
    for kind in arch.layer_kinds:
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def _params(options: ModelOptions, source, arch: ModelArchitecture) -> tuple[int, int | None, str]:  # noqa: ANN001
    computed, active = total_params(arch)
    if options.params_b is not None:
        return int(options.params_b * 1e9), active, "override"
    if source.safetensors is not None and source.safetensors.total_parameters > 0:
        return source.safetensors.total_parameters, active, "safetensors"
    return computed, active, "computed"


def describe_model(options: ModelOptions, resolver) -> ModelDescription:  # noqa: ANN001  (ModelResolver)
    """Resolve ``options`` through ``resolver`` (confined, cached) and summarize the parsed metadata."""
    source = resolver.resolve(options)
    arch = parse_architecture(source.config, options.quantization)
    num_params, active, params_source = _params(options, source, arch)
    kv_dtype, kv_dtype_bytes = _kv_dtype(options, arch)
    attention_layers = sum(kind in _ATTENTION_KINDS for kind in arch.layer_kinds)
    return ModelDescription(
        model=source.model,
        source=source.source,
        revision=source.revision,
        architecture=arch.architectures[0] if arch.architectures else "",
        model_type=arch.model_type,
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        num_attention_heads=arch.num_attention_heads,
        num_kv_heads=arch.num_kv_heads,
        head_dim=arch.head_dim,
        intermediate_size=arch.intermediate_size,
        vocab_size=arch.vocab_size,
        layer_kinds=_layer_kind_counts(arch),
        sliding_window=arch.sliding_window,
        attention_chunk_size=arch.attention_chunk_size,
        uses_mla=arch.mla is not None,
        num_experts=arch.moe.num_experts if arch.moe else None,
        experts_per_token=arch.moe.experts_per_token if arch.moe else None,
        checkpoint_dtype=arch.checkpoint_dtype,
        quantization=arch.quantization.method if arch.quantization else None,
        num_params=num_params,
        num_active_params=active,
        params_source=params_source,
        kv_cache_dtype=kv_dtype,
        kv_bytes_per_token=attention_bytes_per_token(arch, 1, kv_dtype, kv_dtype_bytes) * attention_layers,
        derived_max_model_len=arch.derived_max_model_len,
        max_len_source=arch.max_len_source,
    )
