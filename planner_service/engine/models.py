"""Pydantic models at the engine boundary: what a plan request holds and what a plan answers.

The request mirrors the CLI and the YAML profiles section by section (model, hardware, workload,
policy, engine). ``None`` always means "not set by the user": the planner recommends a value and
says so in the response. Memory in the response is in bytes; GiB figures are derived for display.
"""

from __future__ import annotations

import types
import typing
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

GIB = 1 << 30

# Upper bounds that no real deployment reaches; they exist so absurd values are refused at the
# boundary instead of overflowing (or looping) deep inside the engine.
MAX_CONTEXT_TOKENS = 100_000_000  # the longest real context windows are ~10M tokens
MAX_PARAMS_B = 100_000.0  # 100T parameters: ~50x the largest published checkpoints
MAX_MEMORY_BYTES_PER_GPU = 4096 * GIB  # matches vram_gb's bound
MAX_FRAGMENTATION_MULTIPLIER = 100.0  # a seed-style multiplier past this leaves next to no KV cache


# vllm-wizard (the seed CLI) spellings -> vLLM's, so its users' flags and profiles work as they are.
DTYPE_ALIASES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
KV_CACHE_DTYPE_ALIASES = {"fp16": "float16", "bf16": "bfloat16", "fp8_e4m3fn": "fp8_e4m3", "half": "float16"}
NO_QUANTIZATION = {"none", "no", "off"}  # never "": an empty string is an error, not "not set"


def _lower_alias(value: object, aliases: dict[str, str]) -> object:
    if isinstance(value, str):
        key = value.strip().lower()
        return aliases.get(key, key)
    return value


def _not_blank(value: str) -> str:
    # An empty string is never "not set" (None is): '' or '   ' would otherwise plan a default silently.
    if not value.strip():
        raise ValueError("must not be empty (leave the field out to use the default)")
    return value


def Text(max_length: int):  # noqa: N802  (a type factory)
    """A string that is not blank and not longer than ``max_length`` characters."""
    return Annotated[str, Field(max_length=max_length), AfterValidator(_not_blank)]


ModelId = Text(4096)  # a repo id, catalog name or path (PATH_MAX)
Name = Text(256)  # GPU names, revisions
Token = Text(64)  # dtype, quantization and version names


def _leaves(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, typing.Annotated):
        return [leaf for arg in typing.get_args(annotation) for leaf in _leaves(arg)]
    return [annotation]


class StrictNumbers(BaseModel):
    """No ``true``/``false`` where a number is expected: pydantic's lax mode reads ``true`` as 1, so a
    YAML ``num_gpus: true`` would silently plan one GPU."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name in cls.model_fields:
            if bool not in _leaves(cls.model_fields[info.field_name].annotation):
                raise ValueError("must be a number or a name, not true/false")
        return value


class _Model(StrictNumbers):
    # allow_inf_nan=False: NaN slips through every gt/le bound (all comparisons are False) and inf
    # overflows int() in the engine, so no float anywhere may be non-finite.
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(), allow_inf_nan=False)


# --------------------------------------------------------------------------------------------------
# Request
# --------------------------------------------------------------------------------------------------


class BatchingMode(str, Enum):
    THROUGHPUT = "throughput"
    LATENCY = "latency"
    BALANCED = "balanced"


class Interconnect(str, Enum):
    NVLINK = "nvlink"
    PCIE = "pcie"


class VllmInstall(str, Enum):
    """How vLLM was installed, where that changes what it measures at startup.

    ``pip``: ``pip install vllm`` (no FlashInfer before 0.12, where it is an optional extra); ``image``:
    the ``vllm/vllm-openai`` container (or ``pip install vllm[flashinfer]``), which bundles FlashInfer.
    On 0.10-0.11 the V1 sampler uses FlashInfer whenever it imports, and its profile-run warm-up is
    smaller than the PyTorch sort's (about 1 GiB at 256 x 152k logits); from 0.12 both installs behave
    the same.
    """

    PIP = "pip"
    IMAGE = "image"


class ModelOptions(_Model):
    """Which model, and how vLLM should load it."""

    model: ModelId = Field(description="HF repo id, local folder, or bundled catalog name.")
    revision: Name | None = None
    trust_remote_code: bool = False
    dtype: Literal["auto", "bfloat16", "float16", "float32", "half", "float"] = "auto"
    quantization: Token | None = Field(default=None, description="vLLM --quantization; None = from checkpoint.")
    kv_cache_dtype: Token | None = Field(default=None, description="vLLM --kv-cache-dtype; None = recommend.")
    max_model_len: int | Literal["auto"] | None = Field(
        default=None, description="None = recommend; 'auto' = vLLM's auto-fit (-1)."
    )
    params_b: float | None = Field(
        default=None, gt=0, le=MAX_PARAMS_B, description="Override the parameter count (billions)."
    )
    config_json: dict | None = Field(
        default=None, description="Inline config.json for private or air-gapped models (skips resolution)."
    )

    @field_validator("dtype", mode="before")
    @classmethod
    def _seed_dtype(cls, value: object) -> object:
        return _lower_alias(value, DTYPE_ALIASES)

    @field_validator("kv_cache_dtype", mode="before")
    @classmethod
    def _seed_kv_dtype(cls, value: object) -> object:
        return _lower_alias(value, KV_CACHE_DTYPE_ALIASES)

    @field_validator("quantization", mode="before")
    @classmethod
    def _seed_no_quantization(cls, value: object) -> object:
        # The seed writes ``quantization: none``; vLLM's "not set" is no --quantization at all.
        if isinstance(value, str) and value.strip().lower() in NO_QUANTIZATION:
            return None
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("max_model_len")
    @classmethod
    def _length_in_range(cls, value: int | str | None) -> int | str | None:
        # A range check on the int arm only ('auto' and None pass); a Field(ge=...) on the union
        # would report one confusing error per arm.
        if isinstance(value, int) and not 1 <= value <= MAX_CONTEXT_TOKENS:
            raise ValueError(f"must be between 1 and {MAX_CONTEXT_TOKENS} tokens, or 'auto' (vLLM's -1)")
        return value


class HardwareOptions(_Model):
    """Which GPUs, how many, and how they are connected."""

    gpu: Name | None = Field(
        default=None,
        description="Catalog name, nvidia-smi name or alias. The engine needs a GPU (or vram_gb); 'auto' is "
        "resolved by the CLI from the local GPUs or an agent's live inventory before the request is made.",
    )
    num_gpus: int | None = Field(default=None, ge=1, le=1024, description="GPUs available on the host.")
    vram_gb: float | None = Field(default=None, gt=0, le=4096, description="CUDA total per GPU, GiB (unknown GPUs).")
    interconnect: Interconnect | None = None
    tensor_parallel_size: int | None = Field(default=None, ge=1, le=1024)
    pipeline_parallel_size: int | None = Field(default=None, ge=1, le=1024)
    data_parallel_size: int | None = Field(
        default=None, ge=1, le=1024, description="vLLM --data-parallel-size: replicas of the TP x PP engine."
    )
    enable_expert_parallel: bool = False
    free_memory_bytes: int | None = Field(
        default=None,
        ge=0,
        le=MAX_MEMORY_BYTES_PER_GPU,
        description="Free memory per GPU at startup, when other processes hold memory.",
    )

    @field_validator("interconnect", mode="before")
    @classmethod
    def _seed_unknown_interconnect(cls, value: object) -> object:
        # The seed's ``--interconnect unknown`` is our "not set" (the catalog's default link applies).
        if isinstance(value, str) and value.strip().lower() in ("unknown", ""):
            return None
        return value.strip().lower() if isinstance(value, str) else value


class WorkloadOptions(_Model):
    prompt_tokens: int = Field(default=1024, ge=1, le=100_000_000)
    gen_tokens: int = Field(default=256, ge=1, le=100_000_000)
    concurrency: int = Field(default=1, ge=1, le=1_000_000)
    batching_mode: BatchingMode = BatchingMode.BALANCED


class PolicyOptions(_Model):
    """Safety margins of the planner itself (not vLLM settings, except the utilization)."""

    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    overhead_gb: float = Field(default=0.0, ge=0, le=1024, description="Extra non-KV GiB per GPU to assume.")
    fragmentation_factor: float = Field(
        default=0.0, ge=0, lt=1,
        description="Fraction of KV memory assumed unusable. A value >= 1 is the vllm-wizard multiplier form "
        "(KV needs m times its size: 1.15 -> 1 - 1/1.15 = 0.1304 unusable); the two ranges do not overlap.",
    )
    headroom_gb: float = Field(
        default=0.0, ge=0, le=1024, description="GiB per GPU to keep free below the budget when recommending."
    )

    @field_validator("fragmentation_factor", mode="before")
    @classmethod
    def _seed_multiplier(cls, value: object) -> object:
        # vllm-wizard's factor multiplies the KV bytes a request needs (1.15 = 15 % more): the same as
        # leaving 1 - 1/m of the KV memory unusable. NaN fails the >= test and is refused below.
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 1 and value == value:
            if value > MAX_FRAGMENTATION_MULTIPLIER:
                raise ValueError(f"a multiplier above {MAX_FRAGMENTATION_MULTIPLIER:g} leaves no KV cache")
            return 1 - 1 / value
        return value


class EngineOptions(_Model):
    """vLLM engine settings that are evaluated as given when set."""

    vllm_version: Token | None = Field(default=None, description="X.Y[.Z]; None = the current profile.")
    max_num_seqs: int | None = Field(default=None, ge=1, le=1_000_000)
    max_num_batched_tokens: int | None = Field(default=None, ge=1, le=100_000_000)
    enable_prefix_caching: bool | None = None
    enforce_eager: bool = False
    kv_cache_memory_bytes: int | None = Field(default=None, ge=1, le=MAX_MEMORY_BYTES_PER_GPU)
    block_size: int | None = Field(default=None, ge=1, le=65536)
    vllm_install: VllmInstall | None = Field(
        default=None, description="pip | image (vllm/vllm-openai); None = pip, the larger 0.10-0.11 sampler warm-up.",
    )


class PlanRequest(_Model):
    """Everything a plan needs. ``run_plan(PlanRequest) -> PlanResponse`` is the embedded API."""

    model: ModelOptions
    hardware: HardwareOptions = HardwareOptions()
    workload: WorkloadOptions = WorkloadOptions()
    policy: PolicyOptions = PolicyOptions()
    engine: EngineOptions = EngineOptions()


# --------------------------------------------------------------------------------------------------
# Response
# --------------------------------------------------------------------------------------------------


class OomRisk(str, Enum):
    NONE = "none"  # fits with the requested headroom
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"  # does not fit or within the twin's error of not fitting


class VllmConfig(_Model):
    """The evaluated vLLM settings (what ``vllm serve`` will be given)."""

    tensor_parallel_size: int
    pipeline_parallel_size: int
    data_parallel_size: int = 1
    dtype: str
    quantization: str | None
    kv_cache_dtype: str
    max_model_len: int
    gpu_memory_utilization: float
    max_num_seqs: int
    max_num_batched_tokens: int
    block_size: int
    enable_prefix_caching: bool
    enforce_eager: bool
    enable_expert_parallel: bool
    kv_cache_memory_bytes: int | None = None


class PerGpuMemory(_Model):
    """One GPU worker's memory, as vLLM accounts it (bytes). The worst (smallest KV) rank is shown."""

    total_bytes: int
    budget_bytes: int
    weights_bytes: int
    activation_peak_bytes: int
    non_torch_bytes: int
    cuda_graph_bytes: int
    kv_cache_bytes: int  # "Available KV cache memory"; negative means vLLM would fail


class Feasibility(_Model):
    fits: bool
    oom_risk: OomRisk
    warnings: list[str] = []
    error: str | None = Field(default=None, description="The message vLLM would print when refusing to start.")
    per_gpu: PerGpuMemory
    kv_cache_tokens: int
    num_gpu_blocks: int
    block_size: int
    max_concurrency: float
    max_concurrency_at_tokens: int
    estimated_max_model_len: int | None = None
    kv_bytes_per_token: int = Field(description="KV bytes per token per GPU worker, all layers of its stage.")
    max_context_at_concurrency: int = Field(
        default=0,
        description="Longest context (tokens) each of workload.concurrency requests can have at once in one "
        "engine's KV cache (per data-parallel replica), capped at max_model_len; 0 when it does not start.",
    )


class ModelSummary(_Model):
    model: str
    source: str = Field(description="catalog | hf-cache | hub | local | inline")
    architecture: str
    model_type: str
    num_params: int
    num_active_params: int | None = None
    params_source: str = Field(description="safetensors | override | computed")
    checkpoint_dtype: str
    quantization: str | None = None
    derived_max_model_len: int
    quantization_what_if: bool = Field(
        default=False,
        description="True when quantization was asked of an unquantized checkpoint that vLLM cannot quantize "
        "on the fly: the plan is sized as that quantized checkpoint (a what-if).",
    )


class GpuSummary(_Model):
    name: str
    memory_total_bytes: int
    memory_bandwidth_bytes_per_second: float | None = None
    bf16_tflops: float | None = None
    fp8_tflops: float | None = None
    compute_capability: str | None = None
    num_gpus: int


class Explanation(_Model):
    """Why a setting has its value (``--explain``)."""

    setting: str
    value: str
    source: Literal["user", "recommended", "default", "derived"]
    reason: str


class Fix(_Model):
    """A concrete change that makes a failing request fit, verified by re-running the twin."""

    description: str
    changes: dict[str, str | int | float | bool | None]
    kv_cache_tokens: int
    max_concurrency: float
    headroom_bytes: int


class Range(_Model):
    low: float
    expected: float
    high: float


class Performance(_Model):
    decode_tokens_per_second_per_request: Range
    decode_tokens_per_second_aggregate: Range
    prefill_tokens_per_second: Range
    ttft_seconds: Range
    itl_seconds: Range
    memory_bound_until_concurrency: int
    concurrency: int
    assumptions: list[str] = []


class Artifacts(_Model):
    serve_command: str
    docker_run: str
    docker_compose: str
    kubernetes: str
    helm_values: str


class PlanResponse(_Model):
    vllm_version: str
    version_profile: str
    model: ModelSummary
    gpu: GpuSummary
    config: VllmConfig
    feasibility: Feasibility
    explanations: list[Explanation] = []
    fixes: list[Fix] = []
    performance: Performance | None = None
    artifacts: Artifacts | None = None
