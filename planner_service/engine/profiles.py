"""vLLM version profiles: the behaviour that changes between releases, as data.

Each profile covers a half-open version range ``[min, max)``; ``resolve_profile(None)`` is the current
one (0.30-0.33). What changed, and when, was read from the released wheels' Python source (0.10.0,
0.10.1.1, 0.10.2, 0.11.0, 0.12.0, 0.13.0, 0.14.0, 0.17.1, 0.18.0-0.33.0 every minor):
0.10.x takes the baseline memory snapshot *before* NCCL is initialised (``Worker.init_device``; 0.11.0
moves it after, "This ensures NCCL buffers are allocated before we measure"), so NCCL's buffers count as
non-torch memory; hybrid KV groups are sized by the smallest layer count in 0.10-0.11, the largest one
when it is under 1.25x the smallest in 0.12-0.17 and under 1.5x from 0.18
(``_get_kv_cache_groups_uniform_page_size``); the V1 runner's sampler sorts the vocabulary (top-k/top-p
``apply_top_k_top_p``) unless FlashInfer's sampler is on: used whenever ``flashinfer`` imports in
0.10-0.11 (an optional extra of those pip wheels, built into the ``vllm/vllm-openai`` image by its
Dockerfile: ``engine.vllm_install``, pip assumed), opt-in in 0.12-0.20, on by default from 0.21; Model
Runner V2 (own sampler) is the default for Qwen3 dense (0.22), Llama/Mistral/Qwen3 dense (0.23), a list
of architectures (0.24), every non-MoE non-hybrid model (0.25-0.28) and every model (0.29+);
gpt-oss MXFP4 experts on Hopper use Marlin until 0.10.1 (torch 2.7), triton_kernels from 0.10.2, whose
path keeps the checkpoint's scales beside the swizzled copy until 0.24 (``del layer.w13_weight_scale``
from 0.25); 0.20 default utilization 0.90 -> 0.92 and the CUDA-graph estimate subtracted by default
(profiled but off in 0.18-0.19); 0.21 "GPU KV cache size" = int(concurrency x L) instead of blocks //
groups x bs; 0.22 new error texts ("model's", CPU-backend notes); 0.26 sliding/chunked windows reserve
the in-flight tokens (one MNBT per concurrent batch) instead of MNBT; 0.28 16384/1024 batch defaults for
>= 160 GiB GPUs; 0.29 the fit check holds back the null block; 0.30 YaRN ``rope_scaling`` no longer scales
the derived max_model_len (until 0.29: ``original_max_position_embeddings x factor``). Not verified from
source (documented guesses): the MLA block size on Hopper (64 until 0.19), Mamba prefix caching on by
default (from 0.20), and the 0.10-0.12 error texts (taken from 0.13/0.17).
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


Runner = Literal["v1", "v2"]
# Which models get Model Runner V2 by default (``VllmConfig.use_v2_model_runner``):
# "never"; "listed_dense" = an architecture in the list, not MoE, not quantized (0.22-0.23); "listed" = an
# architecture in the list (0.24); "dense_or_listed" = not hybrid and (not MoE or listed) (0.25-0.28);
# "always" (0.29+).
V2RunnerRule = Literal["never", "listed_dense", "listed", "dense_or_listed", "always"]
# gpt-oss MXFP4 experts on Hopper (``get_mxfp4_backend`` / the mxfp4 oracle): Marlin (padded to 256/128);
# triton_kernels keeping the checkpoint scales beside a plain copy (0.10.2-0.11, torch 2.8.0: strided
# layout) or beside the Hopper-swizzled copy (0.12-0.24); triton_kernels swizzled, checkpoint scales freed.
Mxfp4HopperLayout = Literal["marlin", "triton_strided_kept_scales", "triton_swizzled_kept_scales", "triton_swizzled"]

# Bytes per logit of the profile run's sampler warm-up (rows x vocab; overheads.py derives them).
SORT_SAMPLER_BYTES_PER_LOGIT = 38.5
FLASHINFER_SAMPLER_BYTES_PER_LOGIT = 14.0
V2_SAMPLER_BYTES_PER_LOGIT = 28.7


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
    # "in_flight": cdiv(min(W-1+in_flight, L), bs)+1 with in_flight = one MNBT per concurrent batch;
    # "mnbt": the same with in_flight = MNBT.
    sliding_window_rule: Literal["in_flight", "mnbt"]
    # "concurrency": tokens = int(max_concurrency * L); "blocks_per_group": (num_blocks // groups) * bs.
    kv_tokens_rule: Literal["concurrency", "blocks_per_group"]
    fit_check_reserves_null_block: bool  # the fit check compares against KV minus one block
    large_gpu_batch_defaults: bool  # >=160 GiB GPUs get 16384/1024
    mla_block_size_hopper: int  # default KV block size of the MLA backend picked on SM90
    hybrid_prefix_caching: bool  # prefix caching (Mamba "align" mode, 3 state pages) on by default for hybrids
    # Hybrid KV grouping: the group size is the largest per-type layer count when it is under this many
    # times the smallest, else the smallest (1.0: always the smallest).
    hybrid_group_ratio: float
    # The V1 runner's sampler warm-up: "sort" (PyTorch top-k/top-p, sorts the vocabulary) or "flashinfer".
    v1_sampler: Literal["sort", "flashinfer"]
    # 0.10-0.11: the V1 sampler is FlashInfer's whenever ``flashinfer`` (>= 0.2.3) imports, unless
    # VLLM_USE_FLASHINFER_SAMPLER=0 (``TopKTopPSampler.__init__``); 0.12 made it opt-in.
    flashinfer_sampler_when_installed: bool
    v2_runner_rule: V2RunnerRule
    v2_runner_architectures: frozenset[str] = frozenset()
    # The baseline snapshot precedes NCCL's initialisation, so NCCL's buffers are non-torch memory.
    nccl_buffers_in_profile: bool
    yarn_scales_max_len: bool  # YaRN: derived max_model_len = original_max_position_embeddings x factor
    mxfp4_hopper_layout: Mxfp4HopperLayout
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

    def model_runner(self, architectures: tuple[str, ...], is_moe: bool, is_hybrid: bool, quantized: bool) -> Runner:
        """The model runner vLLM picks by default for this model (``VllmConfig.use_v2_model_runner``)."""
        listed = any(a in self.v2_runner_architectures for a in architectures)
        rule = self.v2_runner_rule
        if rule == "always":
            return "v2"
        if rule == "listed_dense":
            return "v2" if listed and not is_moe and not quantized else "v1"
        if rule == "listed":
            return "v2" if listed else "v1"
        if rule == "dense_or_listed":
            return "v2" if not is_hybrid and (listed or not is_moe) else "v1"
        return "v1"

    def v1_sampler_for(self, compute_capability: tuple[int, int],
                       flashinfer_installed: bool = False) -> Literal["sort", "flashinfer"]:
        """The V1 runner's sampler on this GPU, given whether the ``flashinfer`` package is installed (the
        ``vllm/vllm-openai`` image or the ``flashinfer`` extra: it only matters where the version picks the
        sampler by what imports, 0.10-0.11)."""
        sampler = "flashinfer" if flashinfer_installed and self.flashinfer_sampler_when_installed else self.v1_sampler
        # FlashInfer's sampler needs its attention backend's compute capability (>= 7.5; the image builds
        # its kernels for 7.5 and up); older GPUs sort.
        return sampler if compute_capability >= (7, 5) else "sort"

    def sampler_bytes_per_logit(self, runner: Runner, compute_capability: tuple[int, int],
                                flashinfer_installed: bool = False) -> float:
        """Peak bytes per logit of the profile run's sampler warm-up (overheads.py explains the figures)."""
        if runner == "v2":
            return V2_SAMPLER_BYTES_PER_LOGIT
        if self.v1_sampler_for(compute_capability, flashinfer_installed) == "flashinfer":
            return FLASHINFER_SAMPLER_BYTES_PER_LOGIT
        return SORT_SAMPLER_BYTES_PER_LOGIT

    def in_flight_tokens(self, max_num_batched_tokens: int, pipeline_parallel_size: int = 1,
                         runner: Runner = "v2") -> int:
        """Tokens a sliding window reserves beyond itself (``VllmConfig.max_in_flight_tokens``)."""
        if self.sliding_window_rule == "mnbt":
            return max_num_batched_tokens
        # max_concurrent_batches with async scheduling: V2 pp + 1; V1 2 (pp = 1) or pp (no async with PP).
        pp = pipeline_parallel_size
        batches = pp + 1 if runner == "v2" else (2 if pp == 1 else pp)
        return batches * max_num_batched_tokens


def _profile(name: str, first: tuple[int, ...], last: tuple[int, ...], **changes) -> VersionProfile:
    """A profile for ``first..last`` inclusive: (major, minor) covers every patch, (major, minor, patch)
    just the patches up to it. The current behaviour plus ``changes``."""
    current = dict(
        default_gpu_memory_utilization=0.92,
        subtract_cuda_graph_estimate=True,
        sliding_window_rule="in_flight",
        kv_tokens_rule="concurrency",
        fit_check_reserves_null_block=True,
        large_gpu_batch_defaults=True,
        mla_block_size_hopper=16,
        hybrid_prefix_caching=True,
        hybrid_group_ratio=1.5,
        v1_sampler="flashinfer",
        flashinfer_sampler_when_installed=False,
        v2_runner_rule="always",
        nccl_buffers_in_profile=False,
        yarn_scales_max_len=False,
        mxfp4_hopper_layout="triton_swizzled",
        cuda_graph_bytes_per_layer=6 << 20,
        no_memory_message=_NO_MEMORY_NEW,
        not_fit_message=_NOT_FIT_NEW,
        serve_flags=_FLAGS_0_33,
    )
    current.update(changes)
    low = (*first, 0) if len(first) == 2 else tuple(first)
    high = (last[0], last[1] + 1, 0) if len(last) == 2 else (last[0], last[1], last[2] + 1)
    representative = last if len(last) == 3 else first if len(first) == 3 else (*last, 0)
    return VersionProfile(
        name=name, min_version=low, max_version=high,
        representative_version=".".join(map(str, representative)), **current,
    )


# Boundaries read from the released wheels (config/cache.py, config/model.py, config/vllm.py, envs.py,
# v1/core/kv_cache_utils.py, v1/kv_cache_interface.py, v1/worker/gpu_worker.py,
# v1/sample/ops/topk_topp_sampler.py, quantization/mxfp4.py, fused_moe/oracle/mxfp4.py, engine/arg_utils.py).
# Newest first; each step back adds what changed.
_V2_DENSE_OR_LISTED = frozenset({"DeepseekV2ForCausalLM", "Qwen2MoeForCausalLM", "GraniteMoeForCausalLM",
                                 "InklingForCausalLM", "InklingForConditionalGeneration",
                                 "LongcatFlashNgramForCausalLM", "KimiK3ForConditionalGeneration",
                                 "DeepseekV4ForCausalLM"})
_BEFORE_0_30 = dict(yarn_scales_max_len=True)
_BEFORE_0_29 = dict(_BEFORE_0_30, fit_check_reserves_null_block=False, v2_runner_rule="dense_or_listed",
                    v2_runner_architectures=_V2_DENSE_OR_LISTED)
_BEFORE_0_28 = dict(_BEFORE_0_29, large_gpu_batch_defaults=False)
_BEFORE_0_26 = dict(_BEFORE_0_28, sliding_window_rule="mnbt")
_BEFORE_0_25 = dict(_BEFORE_0_26, mxfp4_hopper_layout="triton_swizzled_kept_scales", v2_runner_rule="listed",
                    v2_runner_architectures=frozenset({"Qwen3ForCausalLM", "DeepseekV2ForCausalLM",
                                                       "Qwen2MoeForCausalLM", "GraniteMoeForCausalLM",
                                                       "LlamaForCausalLM", "MistralForCausalLM"}))
_BEFORE_0_24 = dict(_BEFORE_0_25, v2_runner_rule="listed_dense",
                    v2_runner_architectures=frozenset({"LlamaForCausalLM", "MistralForCausalLM", "Qwen3ForCausalLM"}))
_BEFORE_0_23 = dict(_BEFORE_0_24, v2_runner_architectures=frozenset({"Qwen3ForCausalLM"}))
_BEFORE_0_22 = dict(_BEFORE_0_23, no_memory_message=_NO_MEMORY_OLD, not_fit_message=_NOT_FIT_OLD,
                    v2_runner_rule="never", v2_runner_architectures=frozenset())
_BEFORE_0_21 = dict(_BEFORE_0_22, kv_tokens_rule="blocks_per_group", v1_sampler="sort")
_BEFORE_0_20 = dict(
    _BEFORE_0_21, default_gpu_memory_utilization=0.90, subtract_cuda_graph_estimate=False,
    mla_block_size_hopper=64, hybrid_prefix_caching=False,
    cuda_graph_bytes_per_layer=18 << 20, serve_flags=_FLAGS_0_33 | _REMOVED_SINCE_0_11,
)
_BEFORE_0_18 = dict(_BEFORE_0_20, hybrid_group_ratio=1.25)
_BEFORE_0_12 = dict(_BEFORE_0_18, hybrid_group_ratio=1.0, mxfp4_hopper_layout="triton_strided_kept_scales",
                    flashinfer_sampler_when_installed=True)
_BEFORE_0_11 = dict(_BEFORE_0_12, nccl_buffers_in_profile=True)
_BEFORE_0_10_2 = dict(_BEFORE_0_11, mxfp4_hopper_layout="marlin")

PROFILES: tuple[VersionProfile, ...] = (
    _profile("vllm-0.30-0.33", (0, 30), (0, 33)),
    _profile("vllm-0.29", (0, 29), (0, 29), **_BEFORE_0_30),
    _profile("vllm-0.28", (0, 28), (0, 28), **_BEFORE_0_29),
    _profile("vllm-0.26-0.27", (0, 26), (0, 27), **_BEFORE_0_28),
    _profile("vllm-0.25", (0, 25), (0, 25), **_BEFORE_0_26),
    _profile("vllm-0.24", (0, 24), (0, 24), **_BEFORE_0_25),
    _profile("vllm-0.23", (0, 23), (0, 23), **_BEFORE_0_24),
    _profile("vllm-0.22", (0, 22), (0, 22), **_BEFORE_0_23),
    _profile("vllm-0.21", (0, 21), (0, 21), **_BEFORE_0_22),
    _profile("vllm-0.20", (0, 20), (0, 20), **_BEFORE_0_21),
    _profile("vllm-0.18-0.19", (0, 18), (0, 19), **_BEFORE_0_20),
    _profile("vllm-0.12-0.17", (0, 12), (0, 17), **_BEFORE_0_18),
    _profile("vllm-0.11", (0, 11), (0, 11), **_BEFORE_0_12),
    _profile("vllm-0.10.2", (0, 10, 2), (0, 10), **_BEFORE_0_11),
    _profile("vllm-0.10.0-0.10.1", (0, 10, 0), (0, 10, 1), **_BEFORE_0_10_2),
    # 0.8-0.9 ran the same V1 engine by default; no 0.8/0.9 wheel was read, so they are answered with
    # 0.10.0's rules rather than refused (benchmarks of 0.9.2 exist: shared/calibration).
    _profile("vllm-0.8-0.9 (as 0.10.0)", (0, 8, 0), (0, 9), **_BEFORE_0_10_2),
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
