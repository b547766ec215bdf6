"""vLLM version profiles: the behaviour that changes between releases, as data.

Each profile covers a half-open version range ``[min, max)``; ``resolve_profile(None)`` is the current
one (0.29-0.33). What changed, and when, was read from the released wheels' Python source:
0.20 default utilization 0.90 -> 0.92 and the CUDA-graph estimate subtracted by default (profiled but
off in 0.18-0.19); 0.21 "GPU KV cache size" = int(concurrency x L) instead of blocks // groups x bs;
0.22 new error texts ("model's", CPU-backend notes); 0.26 sliding/chunked windows reserve the in-flight
tokens (2 x MNBT with async scheduling) instead of MNBT; 0.28 16384/1024 batch defaults for >= 160 GiB
GPUs; 0.29 the fit check holds back the null block. Not verified from source (documented guesses):
the MLA block size on Hopper (64 until 0.19), Mamba prefix caching on by default (from 0.20), and the
0.10-0.12 error texts (taken from 0.13/0.17).
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict

from planner_service.engine.errors import UnsupportedVersionError
from vllm_planner.bounded import shown

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
    # Copied from reference/vllm-0.33-serve-flags.txt (read from the 0.33.0 wheel), stored as JSON so the
    # package-data globs ship it.
    text = resources.files("planner_service.engine.data").joinpath(filename).read_text(encoding="utf-8")
    return frozenset(json.loads(text)["flags"])


_FLAGS_0_33 = _load_flags("vllm-0.33-serve-flags.json")

# vLLM error texts (format fields filled by memory.py / kv_cache.py).
_NO_MEMORY_NEW = (
    "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the "
    "engine (this flag also controls CPU memory reservation on the CPU backend, despite its name). See "
    "https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details."
)
_NO_MEMORY_OLD = (
    "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the "
    "engine. See https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details."
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
    "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine. See "
    "https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details."
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


def _profile(name: str, first: tuple[int, int], last: tuple[int, int], **changes) -> VersionProfile:
    """A profile for minor versions ``first..last`` (inclusive): the current behaviour plus ``changes``."""
    current = dict(
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
    )
    current.update(changes)
    return VersionProfile(
        name=name, min_version=(*first, 0), max_version=(last[0], last[1] + 1, 0),
        representative_version=f"{last[0]}.{last[1]}.0", **current,
    )


# Boundaries read from the released wheels (config/cache.py, envs.py, v1/core/kv_cache_utils.py,
# v1/kv_cache_interface.py, engine/arg_utils.py of 0.13 and 0.17-0.33). Newest first.
_BEFORE_0_29 = dict(fit_check_reserves_null_block=False)
_BEFORE_0_28 = dict(_BEFORE_0_29, large_gpu_batch_defaults=False)
_BEFORE_0_26 = dict(_BEFORE_0_28, sliding_window_rule="mnbt")
_BEFORE_0_22 = dict(_BEFORE_0_26, no_memory_message=_NO_MEMORY_OLD, not_fit_message=_NOT_FIT_OLD)
_BEFORE_0_21 = dict(_BEFORE_0_22, kv_tokens_rule="blocks_per_group")
_BEFORE_0_20 = dict(
    _BEFORE_0_21, default_gpu_memory_utilization=0.90, subtract_cuda_graph_estimate=False,
    mla_block_size_hopper=64, hybrid_prefix_caching=False, sampler_bytes_per_logit=38.5,
    cuda_graph_bytes_per_layer=18 << 20, serve_flags=_FLAGS_0_33 | _REMOVED_SINCE_0_11,
)

PROFILES: tuple[VersionProfile, ...] = (
    _profile("vllm-0.29-0.33", (0, 29), (0, 33)),
    _profile("vllm-0.28", (0, 28), (0, 28), **_BEFORE_0_29),
    _profile("vllm-0.26-0.27", (0, 26), (0, 27), **_BEFORE_0_28),
    _profile("vllm-0.22-0.25", (0, 22), (0, 25), **_BEFORE_0_26),
    _profile("vllm-0.21", (0, 21), (0, 21), **_BEFORE_0_22),
    _profile("vllm-0.20", (0, 20), (0, 20), **_BEFORE_0_21),
    _profile("vllm-0.10-0.19", (0, 10), (0, 19), **_BEFORE_0_20),
)

CURRENT_PROFILE = PROFILES[0]
_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(version: str) -> tuple[int, int, int]:
    match = _VERSION.match(version.strip())
    if not match:
        raise UnsupportedVersionError.for_field("engine.vllm_version", f"{shown(version)} is not X.Y[.Z]")
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
