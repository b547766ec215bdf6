"""vLLM version profiles: the behaviour that changes between releases, as data.

Each profile covers a half-open version range ``[min, max)``. ``resolve_profile(None)`` is the current
profile (0.21-0.33). Differences are read from the 0.33 source (reference/vllm-0.33-internals.md) and
the behaviour of the 0.10-0.20 releases as seen in the calibration logs.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict

from planner_service.engine.errors import UnsupportedVersionError

GIB = 1 << 30

# Flags that 0.11 had and 0.33 removed (internals §5.4). The 0.10-0.20 set is approximated as the 0.33
# set plus these: flags *added* after 0.20 are not removed from it (no 0.20 flag dump is bundled).
_REMOVED_SINCE_0_11 = frozenset(
    """--swap-space --task --num-lookahead-slots --guided-decoding-backend --guided-decoding-disable-fallback
    --guided-decoding-disable-any-whitespace --guided-decoding-disable-additional-properties --rope-scaling
    --rope-theta --override-pooler-config --override-attention-dtype --calculate-kv-scales --cuda-graph-sizes
    --disable-frontend-multiprocessing --disable-mm-preprocessor-cache
    --enable-multimodal-encoder-data-parallel --enable-lora-bias --lora-extra-vocab-size
    --logits-processor-pattern --max-num-partial-prefills --max-long-partial-prefills --num-redundant-experts
    --eplb-window-size --eplb-step-interval --eplb-log-balancedness""".split()
)


def _load_flags(filename: str) -> frozenset[str]:
    text = resources.files("planner_service.engine").joinpath("data", filename).read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.startswith("--"))


_FLAGS_0_33 = _load_flags("vllm-0.33-serve-flags.txt")

# vLLM error texts (format fields filled by memory.py / kv_cache.py).
_NO_MEMORY_NEW = (
    "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the "
    "engine (this flag also controls CPU memory reservation on the CPU backend, despite its name). See "
    "https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details."
)
_NO_MEMORY_OLD = (
    "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine."
)
_NOT_FIT_NEW = (
    "To serve at least one request with the model's max seq len ({max_model_len}), ({needed_gib} GiB KV cache is "
    "needed, which is larger than the available KV cache memory ({available_gib} GiB).{estimate} Try increasing "
    "`gpu_memory_utilization` (which also controls CPU memory on the CPU backend) or decreasing `max_model_len` "
    "when initializing the engine. See https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more "
    "details."
)
_NOT_FIT_OLD = (
    "To serve at least one request with the models's max seq len ({max_model_len}), ({needed_gib} GiB KV cache is "
    "needed, which is larger than the available KV cache memory ({available_gib} GiB).{estimate} Try increasing "
    "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine."
)
_ESTIMATE = " Based on the available memory, the estimated maximum model length is {estimated}."
_FREE_MEMORY = (
    "Free memory on device {device} ({free_gib}/{total_gib} GiB) on startup is less than desired GPU memory "
    "utilization ({utilization}, {requested_gib} GiB). Decrease GPU memory utilization or reduce GPU memory used "
    "by other processes."
)


class BatchDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_num_batched_tokens: int
    max_num_seqs: int


class VersionProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    min_version: tuple[int, int, int]  # inclusive
    max_version: tuple[int, int, int]  # exclusive
    representative_version: str
    default_gpu_memory_utilization: float
    subtract_cuda_graph_estimate: bool
    # "in_flight": cdiv(min(W-1+in_flight, L), bs)+1 with in_flight = 2*MNBT (async scheduling);
    # "mnbt": the same with in_flight = MNBT (no async scheduling by default).
    sliding_window_rule: Literal["in_flight", "mnbt"]
    # "concurrency": tokens = int(max_concurrency * L); "blocks_per_group": (num_blocks // groups) * bs.
    kv_tokens_rule: Literal["concurrency", "blocks_per_group"]
    fit_check_reserves_null_block: bool  # the fit check compares against KV minus one block
    large_gpu_batch_defaults: bool  # >=160 GiB GPUs get 16384/1024
    mla_block_size_hopper: int  # default KV block size of the MLA backend picked on SM90
    hybrid_prefix_caching: bool  # prefix caching (Mamba "align" mode, 3 state pages) on by default for hybrids
    # Sampler peak of the profile run per logit (rows x vocab); calibrated per runner generation
    # (overheads.py explains the cases it comes from).
    sampler_bytes_per_logit: float
    # CUDA-graph memory per decoder layer on the rank: the subtracted *estimate* where the profile
    # subtracts it (calibrated on the 0.21+ cases), else the capture size vLLM logs after sizing the KV cache.
    cuda_graph_bytes_per_layer: int
    no_memory_message: str
    not_fit_message: str
    estimate_sentence: str = _ESTIMATE
    free_memory_message: str = _FREE_MEMORY
    serve_flags: frozenset[str]

    def covers(self, version: tuple[int, int, int]) -> bool:
        return self.min_version <= version < self.max_version

    def batch_defaults(self, gpu_name: str, memory_total_bytes: int) -> BatchDefaults:
        """Server defaults of MNBT / MNS by GPU (``EngineArgs._set_default_args``, usage context OpenAI API)."""
        if self.large_gpu_batch_defaults and memory_total_bytes >= 160 * GIB:
            return BatchDefaults(max_num_batched_tokens=16384, max_num_seqs=1024)
        if memory_total_bytes >= 70 * GIB and "a100" not in gpu_name.lower():
            return BatchDefaults(max_num_batched_tokens=8192, max_num_seqs=1024)
        return BatchDefaults(max_num_batched_tokens=2048, max_num_seqs=256)

    def in_flight_tokens(self, max_num_batched_tokens: int, pipeline_parallel_size: int = 1) -> int:
        if self.sliding_window_rule == "mnbt":
            return max_num_batched_tokens
        return (pipeline_parallel_size + 1) * max_num_batched_tokens


PROFILES: tuple[VersionProfile, ...] = (
    VersionProfile(
        name="vllm-0.21-0.33",
        min_version=(0, 21, 0),
        max_version=(0, 34, 0),
        representative_version="0.33.0",
        default_gpu_memory_utilization=0.92,
        subtract_cuda_graph_estimate=True,
        sliding_window_rule="in_flight",
        kv_tokens_rule="concurrency",
        fit_check_reserves_null_block=True,
        large_gpu_batch_defaults=True,
        mla_block_size_hopper=16,
        hybrid_prefix_caching=True,
        sampler_bytes_per_logit=28.7,
        cuda_graph_bytes_per_layer=6 << 20,
        no_memory_message=_NO_MEMORY_NEW,
        not_fit_message=_NOT_FIT_NEW,
        serve_flags=_FLAGS_0_33,
    ),
    VersionProfile(
        name="vllm-0.10-0.20",
        min_version=(0, 10, 0),
        max_version=(0, 21, 0),
        representative_version="0.20.0",
        default_gpu_memory_utilization=0.90,
        subtract_cuda_graph_estimate=False,
        sliding_window_rule="mnbt",
        kv_tokens_rule="blocks_per_group",
        fit_check_reserves_null_block=False,
        large_gpu_batch_defaults=False,
        mla_block_size_hopper=64,
        hybrid_prefix_caching=False,
        sampler_bytes_per_logit=38.5,
        cuda_graph_bytes_per_layer=18 << 20,
        no_memory_message=_NO_MEMORY_OLD,
        not_fit_message=_NOT_FIT_OLD,
        serve_flags=_FLAGS_0_33 | _REMOVED_SINCE_0_11,
    ),
)

CURRENT_PROFILE = PROFILES[0]
_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(version: str) -> tuple[int, int, int]:
    match = _VERSION.match(version.strip())
    if not match:
        raise UnsupportedVersionError.for_field("engine.vllm_version", f"{version!r} is not X.Y[.Z]")
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def resolve_profile(version: str | None) -> VersionProfile:
    """The profile whose range holds ``version`` (None: the current one)."""
    if version is None:
        return CURRENT_PROFILE
    parsed = parse_version(version)
    for profile in PROFILES:
        if profile.covers(parsed):
            return profile
    covered = ", ".join(p.name for p in PROFILES)
    raise UnsupportedVersionError.for_field(
        "engine.vllm_version", f"no version profile covers vLLM {version} (covered: {covered})"
    )
