"""The time of one vLLM engine step on the GPU and the CPU (pure), shared by ``plan`` and ``bench``.

A step is what ``EngineCore.step`` runs: the scheduler's output (decode tokens of running requests plus
prefill chunks) through every layer of every pipeline stage, then sampling (reference
``vllm-engine-and-bench.md`` §1.1, §2). Per TP rank of one PP stage the GPU time is the sum over the
kernels of a decoder layer of ``max(bytes / bandwidth, FLOPs / peak)`` plus a per-kernel cost:

* linear layers stream their weights once per step (at small batch this is the whole cost);
  routed experts stream only the experts the step's tokens touch, ``E·(1-(1-k/E)^T)`` for random routing;
* decode attention costs a measured floor per layer call and reads every running request's KV
  (sliding-window layers at most the window; MLA reads its compressed latent, replicated on every TP
  rank) at the efficiency the GPU's paged-attention kernel was measured to reach on calls of that size;
  prefill attention is FLOP-bound
  (causal: a chunk of n tokens after c cached ones does n·(c+n/2) query-key pairs);
* Gated-DeltaNet / Mamba layers read and write each request's recurrent state;
* with TP, two all-reduces per layer (after attention and after the MLP/MoE);
* every kernel costs at least a launch: a CUDA-graph node inside a captured graph (decode steps up to
  the largest capture size), a Python/PyTorch launch otherwise (``--enforce-eager``, or mixed steps larger
  than the capture sizes), in which case the GPU time is ``max(kernel time, launch time)``;
* the CPU part of a step (schedule, prepare inputs, update outputs) grows with the scheduled requests
  and, with async scheduling (default from vLLM 0.14, §1.6), overlaps the GPU instead of adding to it.

Every constant below names its source; ``calibrated`` means a global value chosen on the whole of
``shared/calibration/vllm-benchmarks.json`` (never per case), with ``benchmarks/perf_accuracy.py`` as the check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# --- Efficiencies (fractions of spec-sheet peaks) ------------------------------------------------------
# Weight streaming of decode-shaped bf16 matmuls, 8192x28672 at M<=64: 2895-2959 GB/s of 3350 (H100),
# 4162-4385 of 4800 (H200); gpu-calibration.md. Smaller matrices measured lower there only because the
# eager PyTorch loop was launch-bound (15 us per call); vLLM replays them in CUDA graphs.
WEIGHT_STREAM_EFFICIENCY = 0.88
# GPUs that gpu-calibration.md does not measure: vLLM's own decode GEMMs in aiconfigurator==0.8.0's tables
# (systems/data/<gpu>/vllm/<ver>/gemm_perf.txt, fp16, M <= 64, matrices of 8192x8192 to 32768x16384 elements),
# median achieved fraction of the spec bandwidth; ``benchmarks/kernel_tables.py`` prints it per GPU. The same
# tables give H100 0.87 (agreeing with the 0.88 above) and H200 0.80 (gpu-calibration.md's direct measurement,
# 0.87-0.91 on its larger matrix, is kept). A100's HBM2e streams matmul weights well below Hopper's HBM3
# fraction: pricing A100 decode at 0.88 made its dense GEMMs 1.3x too fast (model/measured 0.77).
WEIGHT_STREAM_EFFICIENCY_BY_GPU = {
    "A100 SXM 80GB": 0.71,  # vLLM 0.14 rows
    "B200": 0.74,  # vLLM 0.19
    "L40S": 0.76,  # vLLM 0.14 (its 96 MB L2 is smaller than these matrices)
}
WEIGHT_STREAM_GPU_BY_CC_MAJOR = {8: "A100 SXM 80GB", 10: "B200"}  # other unmeasured GPUs keep 0.88
# Decode attention (vLLM's paged FlashAttention backend), one layer call over every running request's KV:
# t = max(floor, KV bytes / (bandwidth * efficiency(KV bytes))). The kernel reaches its streaming bandwidth only
# when a call has enough work: measured, the achieved fraction of the spec bandwidth climbs from ~0.1 at 4 MiB
# per call to ~0.9 (H100) above 1 GiB, while calls of a few MiB all take about the same floor (launch plus
# reshape_and_cache_flash). Source: aiconfigurator==0.8.0 (PyPI, Apache-2.0), vLLM's own decode-attention
# timings (systems/data/<gpu>/vllm/<ver>/generation_attention_perf.txt, fp16 KV). The curve holds, at each
# power of two from 4 MiB, the median achieved fraction over the serving-shaped rows (batch >= 16, context
# 128-4095) within half an octave, interpolated in log bytes and flat beyond its ends; the floor is the median
# call under 2 MiB at batch <= 32. Median |error| over those rows: 6 % H100, 8 % H200, 5 % A100, 2 % B200 (one
# floor + one efficiency gave 8-10 % and leaned 7-11 % slow above 1 GiB, ~9 % fast at 64-256 MiB).
# ``benchmarks/kernel_tables.py --aiconfigurator <wheel>`` prints this fit. The graph node of each call is
# already in GRAPH_KERNEL_SECONDS per kernel, so a step adds t - GRAPH_KERNEL_SECONDS per attention layer.
# Contiguous decode-shaped SDPA reaches 0.91 of 3350 GB/s on H100 (gpu-calibration.md), the paged kernel 0.90
# at its largest calls. GPUs not measured take the measured GPU of their compute-capability major (A100's
# values for the rest: the largest floor and lowest efficiencies measured).
MIB = 1 << 20
DecodeAttentionKernel = tuple[float, tuple[tuple[int, float], ...]]  # (floor seconds, ((bytes, efficiency), ...))
DECODE_ATTENTION_BY_GPU: dict[str, DecodeAttentionKernel] = {  # catalog name -> (floor, efficiency curve)
    "A100 SXM 80GB": (18.4e-6, (  # vLLM 0.14 rows
        (4 * MIB, 0.10), (8 * MIB, 0.16), (16 * MIB, 0.29), (32 * MIB, 0.36), (64 * MIB, 0.48),
        (128 * MIB, 0.58), (256 * MIB, 0.67), (512 * MIB, 0.73), (1024 * MIB, 0.77), (2048 * MIB, 0.78))),
    "H100 SXM": (11.7e-6, (  # vLLM 0.14 rows
        (4 * MIB, 0.09), (8 * MIB, 0.16), (16 * MIB, 0.31), (32 * MIB, 0.47), (64 * MIB, 0.51),
        (128 * MIB, 0.66), (256 * MIB, 0.77), (512 * MIB, 0.85), (1024 * MIB, 0.89), (2048 * MIB, 0.91))),
    "H200": (11.6e-6, (  # vLLM 0.12 rows
        (4 * MIB, 0.06), (8 * MIB, 0.12), (16 * MIB, 0.22), (32 * MIB, 0.34), (64 * MIB, 0.41),
        (128 * MIB, 0.54), (256 * MIB, 0.68), (512 * MIB, 0.77), (1024 * MIB, 0.84), (2048 * MIB, 0.89))),
    "B200": (7.0e-6, (  # vLLM 0.19 rows
        (4 * MIB, 0.08), (8 * MIB, 0.12), (16 * MIB, 0.24), (32 * MIB, 0.46), (64 * MIB, 0.69),
        (128 * MIB, 0.62), (256 * MIB, 0.74), (512 * MIB, 0.82), (1024 * MIB, 0.87), (2048 * MIB, 0.90))),
}
DECODE_ATTENTION_GPU_BY_CC_MAJOR = {8: "A100 SXM 80GB", 9: "H100 SXM", 10: "B200"}
# bf16 matmul TFLOP/s of the 8192x28672 shape by M (gpu-calibration.md, H100): 641 (256), 748 (512),
# 796 (1024), 803 (2048) of 989 -> fractions; the 4096x14336 shape gives 0.79-0.81 above M=2048.
_BF16_MATMUL_EFFICIENCY = ((256, 0.65), (512, 0.76), (1024, 0.80), (2048, 0.81))
# fp8 (torch._scaled_mm, 8192x8192): 920 (256), 1412 (4096), 1428 (8192) of 1979 TFLOP/s; gpu-calibration.md.
_FP8_MATMUL_EFFICIENCY = ((256, 0.46), (4096, 0.71), (8192, 0.72))
# Routed-expert GEMMs through vLLM's fused Triton MoE kernel with its *default* tile config (64x64x32,
# used when the wheel ships no tuned config for the expert shape and GPU; moe_configs.py): calibrated on
# the prefill-bound runs of shared/calibration, all of which lack a tuned config - GLM-4.5-Air on 4x
# A100 (a 2048-token step ~300 ms whatever the context), GLM-4.6 on 8x H200 (8192-token steps ~490 ms
# at 4k prompts) and Qwen3.5-35B-A3B on one H200 (32k prompts ~0.7 s). Re-calibrated (0.13 -> 0.135) when the
# decode-attention and all-reduce terms took their measured values: over 0.12-0.15 the sum of the three
# median errors of benchmarks/perf_accuracy.py, each over its issue-10 bound (TPOT/10 %, TTFT/25 %, output
# throughput/15 %), is lowest at 0.135 (1.87; 1.94 at 0.13, 1.91 at 0.14, 2.03 at 0.15). Checked again after
# decode attention took its measured efficiency-by-size curve: still lowest at 0.135 (1.78; 2.06 at 0.125,
# 1.86 at 0.13, 1.83 at 0.14, 1.86 at 0.145).
# The measured kernel is faster: aiconfigurator's fused-MoE rows (default tiles) reach 1.3x (H100) - 2.0x (A100)
# this term's speed from 2048 tokens (benchmarks/kernel_tables.py), so the constant also carries time in large
# MoE steps that no measured kernel explains (~110 ms of a ~240 ms GLM-4.5-Air A100 step); not yet found.
# With a tuned config (Mixtral on H100) the experts run like dense GEMMs of their M.
MOE_DEFAULT_CONFIG_EFFICIENCY = 0.135
# FlashAttention forward, causal, head dim 128: FA2 reaches 50-73 % of A100 peak and FA3 ~600-740 of 989
# TFLOP/s on H100 at long sequences (Dao 2023; Shah et al. 2024). The shared runs agree with the high
# end: GLM-4.5-Air's 2048-token steps on A100 grow by ~70 ms from 1k to 15k of prior context, 74 % of
# the peak for those attention FLOPs.
PREFILL_ATTENTION_EFFICIENCY = 0.70

# --- Per-kernel costs ------------------------------------------------------------------------------------
# A kernel node inside a replayed CUDA graph: launch gap plus ramp/tail of a small grid. calibrated
# (the small-batch TPOT of the dense runs: Llama-2-7B/70B, CodeLlama-34B at 4-8 req/s, GLM-4.6 at concurrency 4);
# aiconfigurator 0.8.0's vLLM GEMM rows on H100 bottom out at the same 2.46 us (M=8 on 32x64 matrices).
GRAPH_KERNEL_SECONDS = 2.5e-6
# A kernel launched from Python (eager mode or a step larger than every captured graph): PyTorch's
# per-op dispatch + launch, ~15 us per matmul call in the eager loop of gpu-calibration.md (26 us
# measured for a 4096x4096 M=1 matmul whose bytes take 11 us).
EAGER_LAUNCH_SECONDS = 15e-6
# Kernels per decoder layer, counted from vLLM's model code (vllm/model_executor/models/llama.py,
# deepseek_v2.py, qwen3_next.py; fused_moe/fused_moe.py): Llama-style layer = fused add+RMSNorm, QKV
# GEMM, rotary, attention, O GEMM, fused add+RMSNorm, gate_up GEMM, SiLU-and-mul, down GEMM.
KERNELS_DENSE_LAYER = 9
KERNELS_MOE_EXTRA = 5  # router GEMM, top-k softmax, align/sort, w2 GEMM, moe_sum (w13 replaces gate_up)
KERNELS_SHARED_EXPERT = 3
KERNELS_MLA_EXTRA = 5  # q_a + norm, kv_a + norm, the two absorbed BMMs around MLA attention
KERNELS_LINEAR_ATTENTION_EXTRA = 4  # conv1d, gating, the chunked/recurrent delta-rule kernel, gated norm
# Fused-MoE block at batch 1 is ~29 us on H100 where its bytes take ~3 us (Qwen3-Next FP8 TP4, E=512,
# N=128; PR #44830): small-M Triton MoE GEMMs do not stream at full bandwidth.
MOE_LAYER_FLOOR_SECONDS = 29e-6
# MLA decode attention for 1-4 queries over ~1k context: ~30 us (FlashAttention-MLA, default on SM90
# from vLLM 0.14) vs ~48 us (FlashMLA, the default before); PR #27363 micro-benchmarks.
MLA_ATTENTION_FLOOR_SECONDS = {"flash_attn_mla": 30e-6, "flashmla": 48e-6}
# A replayed (or launched) CUDA graph and the sampler's small kernels: fixed per step.
SAMPLER_FIXED_SECONDS = 60e-6
SAMPLER_PASSES_OVER_LOGITS = 6  # fp32 logits: softmax, top-k/top-p sort path, penalties (§5.2 profile run)

# --- All-reduce --------------------------------------------------------------------------------------------
# vLLM's custom all-reduce on NVLink: 4-6 us for 0.5-32 KB at tp 2-8 (SGLang PR #2904, H100); NCCL over
# PCIe 19-24 us for 4-32 KB (4x V100 PCIe, sglang-V100 PR #2). Bus bandwidth for large messages:
# NCCL-tests class figures (~80 % of the per-direction link rate). aiconfigurator 0.8.0's vLLM custom
# all-reduce rows timed inside CUDA graphs (custom_allreduce_perf.txt, backend vllm_graph) agree: 4.3-5.6 us up
# to 16 KB at tp 2-8 on H100/H200/A100. Those times are per call in a replayed graph, so an all-reduce pays no
# GRAPH_KERNEL_SECONDS on top (counting it twice made TP 2-4 decode steps 2-3 % slow). They imply lower bus
# bandwidth in the 2-8 MB range (~190 GB/s H100, ~115 GB/s A100 at tp 8, 8 MB): mostly prefill-step messages, where
# the constants below are kept until the MoE term above is understood (it absorbs whatever they miss).
ALLREDUCE_LATENCY_SECONDS = {"nvlink": 5e-6, "pcie": 22e-6, "network": 30e-6}
_NVLINK_BUS_BYTES_PER_SECOND = {8: 230e9, 9: 360e9, 10: 720e9}  # by compute-capability major (NVLink 3/4/5)
_PCIE_BUS_BYTES_PER_SECOND = {8: 12e9, 9: 25e9, 10: 25e9, 12: 25e9}  # Gen4 without P2P / Gen5
NETWORK_BUS_BYTES_PER_SECOND = 40e9  # 400 Gb/s InfiniBand / RoCE per GPU
ACTIVATION_BYTES = 2  # bf16 hidden states in all-reduce messages

# --- CPU per step ------------------------------------------------------------------------------------------
# schedule() + _prepare_inputs + update_from_output. A CPU-only profile of the 0.27 engine loop measured
# ~541 us per step amortised and ~12.7 us more per running request (simllm PR #204; flagged uncertain by
# its authors) - the scheduler's part, which async scheduling (0.14+) overlaps with the GPU. Without
# async scheduling the whole host side of a step (input preparation, sampling bookkeeping, output
# processing) is serial: V1 Llama-3.2-1B at low load has a 2.73 ms TPOT floor (PR #17866) where its GPU
# work is ~1.2 ms, i.e. ~1.5 ms of host time per step.
CPU_STEP_SECONDS = 5.4e-4
CPU_STEP_SECONDS_SYNC = 1.5e-3
CPU_PER_REQUEST_SECONDS = 12.7e-6


def _interpolate_log(points: tuple[tuple[int, float], ...], m: float) -> float:
    if m <= points[0][0]:
        return points[0][1]
    for (m0, e0), (m1, e1) in zip(points, points[1:]):
        if m <= m1:
            return e0 + (e1 - e0) * math.log(m / m0) / math.log(m1 / m0)
    return points[-1][1]


def matmul_efficiency(tokens: float, fp8: bool) -> float:
    """Fraction of peak a GEMM with ``tokens`` rows reaches (compute-bound side of the roofline)."""
    return _interpolate_log(_FP8_MATMUL_EFFICIENCY if fp8 else _BF16_MATMUL_EFFICIENCY, max(tokens, 1.0))


def linear_seconds(weight_bytes: float, params: float, tokens: float, bandwidth: float, peak: float,
                   fp8: bool = False, stream_efficiency: float = WEIGHT_STREAM_EFFICIENCY) -> float:
    """A linear layer (or several): one pass over its weights, or 2 x params FLOPs per token if slower."""
    return max(weight_bytes / (bandwidth * stream_efficiency),
               2 * params * tokens / (peak * matmul_efficiency(tokens, fp8)))


def kv_stream_efficiency(kv_bytes_per_call: float, kernel: DecodeAttentionKernel) -> float:
    """Fraction of the spec bandwidth a call reading ``kv_bytes_per_call`` of KV (or recurrent state) reaches."""
    curve = kernel[1]
    x = max(kv_bytes_per_call, 1.0)
    if x <= curve[0][0]:
        return curve[0][1]
    for (b0, e0), (b1, e1) in zip(curve, curve[1:]):
        if x <= b1:
            return e0 + (e1 - e0) * math.log(x / b0) / math.log(b1 / b0)
    return curve[-1][1]


def decode_attention_call_seconds(kv_bytes_per_call: float, bandwidth: float, kernel: DecodeAttentionKernel) -> float:
    """One layer's decode attention as measured: its floor, or its KV at the efficiency calls of that size reach."""
    return max(kernel[0], kv_bytes_per_call / (bandwidth * kv_stream_efficiency(kv_bytes_per_call, kernel)))


def decode_attention_seconds(kv_bytes: float, attention_flops: float, bandwidth: float, bf16_peak: float,
                             kernel: DecodeAttentionKernel, calls: int, floor: bool = True) -> float:
    """Decode attention over paged KV split evenly over ``calls`` layer calls, beyond the calls' graph nodes
    (or their QK/PV FLOPs if slower). ``floor=False`` (MLA, which has its own floor) keeps only the KV stream."""
    if calls <= 0:
        return attention_flops / (bf16_peak * PREFILL_ATTENTION_EFFICIENCY)
    per_call = kv_bytes / calls
    if floor:
        memory = calls * max(decode_attention_call_seconds(per_call, bandwidth, kernel) - GRAPH_KERNEL_SECONDS, 0.0)
    else:
        memory = kv_bytes / (bandwidth * kv_stream_efficiency(per_call, kernel))
    return max(memory, attention_flops / (bf16_peak * PREFILL_ATTENTION_EFFICIENCY))


@dataclass(frozen=True)
class HardwareFacts:
    """What the step model reads about one GPU and the links between the GPUs of a replica."""

    memory_bandwidth_bytes_per_second: float
    bf16_flops_per_second: float
    fp8_flops_per_second: float | None
    compute_capability_major: int
    interconnect: str  # "nvlink" | "pcie" | "network"
    gpu_name: str = ""  # catalog name: picks the measured decode-attention kernel

    @property
    def weight_stream_efficiency(self) -> float:
        """Fraction of the spec bandwidth vLLM's decode GEMMs stream weights at on this GPU."""
        name = self.gpu_name if self.gpu_name in WEIGHT_STREAM_EFFICIENCY_BY_GPU else (
            WEIGHT_STREAM_GPU_BY_CC_MAJOR.get(self.compute_capability_major, ""))
        return WEIGHT_STREAM_EFFICIENCY_BY_GPU.get(name, WEIGHT_STREAM_EFFICIENCY)

    @property
    def decode_attention_kernel(self) -> DecodeAttentionKernel:
        """(floor seconds per call, efficiency by KV bytes per call) of vLLM's decode attention on this GPU."""
        name = self.gpu_name if self.gpu_name in DECODE_ATTENTION_BY_GPU else (
            DECODE_ATTENTION_GPU_BY_CC_MAJOR.get(self.compute_capability_major, "A100 SXM 80GB"))
        return DECODE_ATTENTION_BY_GPU[name]

    def kv_read_seconds(self, total_bytes: float, calls: int) -> float:
        """Streaming ``total_bytes`` of KV or recurrent state in ``calls`` equal layer calls, at the efficiency
        decode attention reaches on calls of that size (no floor: these reads ride inside larger kernels)."""
        if total_bytes <= 0:
            return 0.0
        per_call = total_bytes / max(calls, 1)
        return total_bytes / (self.memory_bandwidth_bytes_per_second
                              * kv_stream_efficiency(per_call, self.decode_attention_kernel))

    @property
    def allreduce_bus_bytes_per_second(self) -> float:
        if self.interconnect == "network":
            return NETWORK_BUS_BYTES_PER_SECOND
        table = _NVLINK_BUS_BYTES_PER_SECOND if self.interconnect == "nvlink" else _PCIE_BUS_BYTES_PER_SECOND
        return table.get(self.compute_capability_major, min(table.values()))

    @property
    def allreduce_latency_seconds(self) -> float:
        return ALLREDUCE_LATENCY_SECONDS[self.interconnect]

    def allreduce_seconds(self, message_bytes: float, tp: int) -> float:
        """One all-reduce of ``message_bytes`` over ``tp`` ranks: latency plus the ring's 2(tp-1)/tp traffic."""
        return self.allreduce_latency_seconds + 2 * (tp - 1) / tp * message_bytes / self.allreduce_bus_bytes_per_second


@dataclass(frozen=True)
class StageShape:
    """One TP rank of one pipeline stage, as the step model sees it (built by ``shape.py``)."""

    layers: int
    full_attention_layers: int  # full attention, MLA and chunked-local layers (read their whole context)
    sliding_attention_layers: int
    sliding_window: int
    linear_attention_layers: int  # Gated DeltaNet / Mamba
    kv_bytes_per_token_per_layer: float  # one attention layer, this rank
    attention_flops_per_pair_per_layer: float  # QK^T + PV FLOPs per (query, key) pair, this rank
    linear_state_bytes_per_request_per_layer: float
    dense_weight_bytes: float  # everything but routed experts: attention/linear-attention projections, MLPs
    dense_params: float
    moe_layers: int
    experts_on_rank: int
    num_experts: int
    experts_per_token: int
    expert_weight_bytes: float  # one routed expert's weights on this rank (per layer)
    expert_params: float
    shared_expert_layers: int
    lm_head_bytes: float  # last stage only (0 elsewhere)
    lm_head_params: float
    vocab_per_rank: int
    hidden_size: int
    mla_backend: str | None  # "flash_attn_mla" | "flashmla" | None
    fp8_compute: bool
    activation_bytes_per_token: float = 0.0  # bytes non-GEMM kernels move per token, all layers
    moe_tuned_config: bool = False  # vLLM ships a tuned fused-MoE config for this shape and GPU

    @property
    def kernels_per_step(self) -> int:
        mla = self.full_attention_layers if self.mla_backend else 0
        return (
            self.layers * KERNELS_DENSE_LAYER
            + self.moe_layers * KERNELS_MOE_EXTRA
            + self.shared_expert_layers * KERNELS_SHARED_EXPERT
            + mla * KERNELS_MLA_EXTRA
            + self.linear_attention_layers * KERNELS_LINEAR_ATTENTION_EXTRA
        )


@dataclass(frozen=True)
class EngineShape:
    """The whole replica: identical TP ranks, ``pp`` stages, and what decides graphs and CPU overlap."""

    stages: tuple[StageShape, ...]
    tensor_parallel_size: int
    hardware: HardwareFacts
    cuda_graphs: bool  # False with --enforce-eager
    max_capture_size: int  # largest captured batch (tokens); steps above it run eagerly
    async_scheduling: bool
    greedy_sampling: bool = False  # argmax only (vllm bench up to 0.14 sent temperature 0)


@dataclass(frozen=True)
class StepWork:
    """What one step computes (engine totals; the model splits it over pipeline micro-batches)."""

    decode_requests: int = 0
    decode_context_tokens: float = 0.0  # sum over decode requests of the tokens their attention reads
    decode_sliding_tokens: float = 0.0  # the same, each capped at the sliding window
    prefill_tokens: int = 0
    prefill_pairs: float = 0.0  # sum over chunks of n*(c + n/2): causal query-key pairs
    prefill_sliding_pairs: float = 0.0
    prefill_context_tokens: float = 0.0  # cached tokens the chunks attend to (read once)
    prefill_requests: int = 0
    sampled_requests: int = 0  # requests that sample a token this step


class StepCostModel:
    """Seconds per engine step for one ``EngineShape``; ``step_seconds`` is the one entry point."""

    def __init__(self, shape: EngineShape) -> None:
        self.shape = shape
        hw = shape.hardware
        self._bw = hw.memory_bandwidth_bytes_per_second
        self._bf16 = hw.bf16_flops_per_second
        self._fp8 = hw.fp8_flops_per_second

    # -- GPU ---------------------------------------------------------------------------------------------
    def _stage_gpu_seconds(self, st: StageShape, w: StepWork, micro: int) -> tuple[float, int]:
        """(kernel seconds, kernels launched) of one stage for 1/micro of the step's work."""
        tokens = (w.decode_requests + w.prefill_tokens) / micro
        if tokens <= 0:
            return 0.0, 0
        bw, tp = self._bw, self.shape.tensor_parallel_size
        fp8 = st.fp8_compute and self._fp8 is not None
        peak = self._fp8 if fp8 else self._bf16
        assert peak is not None
        padded = self._padded_tokens(tokens, w)
        # Linear layers other than routed experts: one pass over their weights, FLOPs 2*params per token.
        stream = self.shape.hardware.weight_stream_efficiency
        seconds = linear_seconds(st.dense_weight_bytes, st.dense_params, padded, bw, peak, fp8, stream)
        if st.moe_layers:
            seconds += st.moe_layers * self._moe_layer_seconds(st, tokens, peak, fp8)
        if st.lm_head_params:
            rows = max(w.sampled_requests / micro, 1.0)
            seconds += linear_seconds(st.lm_head_bytes, st.lm_head_params, rows, bw, self._bf16,
                                      stream_efficiency=stream)
            # Sampler: fp32 logits rows x vocab, several passes (softmax, sort-based top-k/top-p, penalties);
            # greedy requests take an argmax, one pass.
            passes = 1 if self.shape.greedy_sampling else SAMPLER_PASSES_OVER_LOGITS
            seconds += SAMPLER_FIXED_SECONDS + rows * st.vocab_per_rank * 4 * passes / bw
        # Non-GEMM kernels (norms, rotary, activation, residual adds) read and write every token's
        # activations; negligible in decode, a few percent of a large prefill step.
        seconds += tokens * st.activation_bytes_per_token / (bw * stream)
        seconds += self._attention_seconds(st, w, micro)
        if st.linear_attention_layers:
            requests = (w.decode_requests + w.prefill_requests) / micro
            state = 2 * requests * st.linear_state_bytes_per_request_per_layer  # read + write the state
            seconds += self.shape.hardware.kv_read_seconds(st.linear_attention_layers * state, st.linear_attention_layers)
        if tp > 1:
            seconds += 2 * st.layers * self.shape.hardware.allreduce_seconds(tokens * st.hidden_size * ACTIVATION_BYTES, tp)
        # The all-reduce latency is measured per call inside a CUDA graph: no separate graph-node cost.
        return seconds, st.kernels_per_step

    def _moe_layer_seconds(self, st: StageShape, tokens: float, peak: float, fp8: bool) -> float:
        """One fused-MoE block: stream the touched experts, or compute their padded token blocks.

        The Triton kernel tiles each expert's tokens in blocks of BLOCK_SIZE_M rows and computes whole
        blocks: the default config uses 16 rows when the step has at most E tokens, else 64
        (``get_default_config``), so a decode step of a few hundred tokens over many experts pays for
        mostly empty blocks; tuned configs pick small blocks for small batches (16 assumed).
        """
        touched = st.experts_on_rank * (1 - (1 - st.experts_per_token / st.num_experts) ** tokens)
        pairs = tokens * st.experts_per_token * st.experts_on_rank / st.num_experts  # token-expert rows here
        per_expert = pairs / max(touched, 1e-9)
        if st.moe_tuned_config:
            block, efficiency = 16, matmul_efficiency(per_expert, fp8)
        else:
            block = 16 if tokens <= st.num_experts else 64
            efficiency = min(MOE_DEFAULT_CONFIG_EFFICIENCY, matmul_efficiency(per_expert, fp8))
        rows = touched * math.ceil(per_expert / block) * block
        return max(
            touched * st.expert_weight_bytes / (self._bw * self.shape.hardware.weight_stream_efficiency),
            2 * rows * st.expert_params / (peak * efficiency),
            MOE_LAYER_FLOOR_SECONDS,
        )

    def _attention_seconds(self, st: StageShape, w: StepWork, micro: int) -> float:
        bw, hw = self._bw, self.shape.hardware
        # Full and sliding-window layers read different amounts per call: each kind at its own call size.
        # MLA layers have their own floor (below); other attention layers pay the measured kernel's floor per call.
        decode = 0.0
        for layers, context in ((st.full_attention_layers, w.decode_context_tokens),
                                (st.sliding_attention_layers, w.decode_sliding_tokens)):
            if layers:
                kv_tokens = layers * context / micro  # one query per decode request and context token
                decode += decode_attention_seconds(kv_tokens * st.kv_bytes_per_token_per_layer,
                                                   kv_tokens * st.attention_flops_per_pair_per_layer, bw, self._bf16,
                                                   hw.decode_attention_kernel, layers, floor=not st.mla_backend)
        if st.mla_backend and w.decode_requests:
            decode = max(decode, st.full_attention_layers * MLA_ATTENTION_FLOOR_SECONDS[st.mla_backend])
        if not w.prefill_tokens:
            return decode
        pairs = (w.prefill_pairs * st.full_attention_layers + w.prefill_sliding_pairs * st.sliding_attention_layers) / micro
        attended = (w.prefill_context_tokens + w.prefill_tokens) / micro * (
            st.full_attention_layers + st.sliding_attention_layers
        )
        prefill = max(
            pairs * st.attention_flops_per_pair_per_layer / (self._bf16 * PREFILL_ATTENTION_EFFICIENCY),
            hw.kv_read_seconds(attended * st.kv_bytes_per_token_per_layer,
                               st.full_attention_layers + st.sliding_attention_layers),
        )
        return decode + prefill

    def _padded_tokens(self, tokens: float, w: StepWork) -> float:
        """CUDA graphs pad a batch to the next captured size (1, 2, 4, then multiples of 8; §2.4)."""
        if not self.shape.cuda_graphs or tokens > self.shape.max_capture_size:
            return tokens
        if tokens <= 4:
            return float(1 << max(0, math.ceil(math.log2(max(tokens, 1.0)))))
        return float(math.ceil(tokens / 8) * 8)

    def gpu_seconds(self, w: StepWork) -> float:
        """GPU time of the step through every stage.

        Pipeline parallel: the running requests are split into ``pp`` micro-batches in flight, so a
        request's token takes every stage once at 1/pp of the batch (§1.1 batch queue).
        """
        shape = self.shape
        pp = len(shape.stages)
        micro = pp if w.decode_requests + w.prefill_tokens >= pp else 1
        tokens = w.decode_requests + w.prefill_tokens
        graphed = shape.cuda_graphs and tokens / micro <= shape.max_capture_size
        total = 0.0
        for st in shape.stages:
            kernel_seconds, kernels = self._stage_gpu_seconds(st, w, micro)
            if graphed:
                # Full graphs for pure decode; piecewise graphs (attention launched eagerly in between)
                # for mixed steps: each attention layer then costs a Python launch (§2.2).
                eager_attention = 0 if w.prefill_tokens == 0 else st.full_attention_layers + st.sliding_attention_layers
                stage = kernel_seconds + kernels * GRAPH_KERNEL_SECONDS + eager_attention * EAGER_LAUNCH_SECONDS
            else:
                # Launched from Python: the GPU waits for the CPU whenever launching is the slower side.
                stage = max(kernel_seconds, kernels * EAGER_LAUNCH_SECONDS)
            total += stage
        if pp > 1:
            hw = shape.hardware
            hidden = shape.stages[0].hidden_size
            send = hw.allreduce_latency_seconds + tokens / micro * hidden * ACTIVATION_BYTES / hw.allreduce_bus_bytes_per_second
            total += (pp - 1) * send
        return total

    # -- CPU ---------------------------------------------------------------------------------------------
    def cpu_seconds(self, scheduled_requests: int) -> float:
        base = CPU_STEP_SECONDS if self.shape.async_scheduling else CPU_STEP_SECONDS_SYNC
        return base + CPU_PER_REQUEST_SECONDS * scheduled_requests

    def step_seconds(self, w: StepWork) -> float:
        """Wall time of one engine step: GPU and CPU overlap with async scheduling, add up without."""
        gpu = self.gpu_seconds(w)
        cpu = self.cpu_seconds(w.decode_requests + w.prefill_requests)
        return max(gpu, cpu) if self.shape.async_scheduling else gpu + cpu

    def decode_span_seconds(self, requests: int, context_tokens: float, sliding_tokens: float,
                            sliding_growth: float, steps: int) -> np.ndarray:
        """Durations of ``steps`` consecutive pure-decode steps of the same ``requests``.

        Each step every request adds one token of context, so the KV read grows linearly; only the KV
        terms change, and the attention efficiency curve bends slowly in log bytes, so the steps between
        the exact first and last one are interpolated linearly.
        """
        first = self.step_seconds(StepWork(requests, context_tokens, sliding_tokens, sampled_requests=requests))
        if steps <= 1:
            return np.array([first])
        last_ctx = context_tokens + requests * (steps - 1)
        last_sliding = sliding_tokens + sliding_growth * (steps - 1)
        last = self.step_seconds(StepWork(requests, last_ctx, last_sliding, sampled_requests=requests))
        return np.linspace(first, last, steps)
