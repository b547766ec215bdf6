"""Roofline performance model (pure): decode ITL/throughput, prefill throughput and TTFT, as ranges.

Per GPU rank and per engine step the time is ``max(memory time, compute time) + TP all-reduce time +
step overhead``, where
  * memory = weights read once per step (for MoE only the experts the step's tokens touch:
    E·(1−(1−k/E)^tokens) distinct experts expected) + KV bytes of every running request's context;
  * compute = 2·active_params·tokens (linears) + 4·context·heads·head_dim·layers per token (attention);
  * all-reduce = 2 per layer (after attention and after the MLP), ring cost on NVLink or PCIe.
Pipeline stages run one after another for a given batch, so a step takes ``pp`` stage times.

Efficiency factors come from measurements on H100 80GB HBM3 and H200 (``gpu-calibration.md``) and are
applied as fractions of the GPU's spec-sheet figures to every GPU; they are listed in the output's
``assumptions``. Ranges: *low latency / high throughput* uses the best measured efficiencies and no
prefill interference; *expected* uses typical efficiencies and spreads every request's prefill over
its decode steps (chunked prefill); the pessimistic end lowers the efficiencies further.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from planner_service.engine.models import Interconnect, Performance, Range

# Weight-streaming efficiency of a bf16 matmul at M=1 vs. the bytes of one weight matrix, H100 row of
# gpu-calibration.md divided by the 3.35 TB/s spec: 4096x4096 1288 GB/s, 4096x14336 2178, 8192x28672 2959.
_MATRIX_BYTES_EFFICIENCY = ((4096 * 4096 * 2, 0.384), (4096 * 14336 * 2, 0.650), (8192 * 28672 * 2, 0.883))
_COPY_EFFICIENCY = 0.90  # device-to-device copy: 3022 GB/s of 3.35 TB/s (H100), 4244 of 4.8 (H200)
_KV_READ_EFFICIENCY = 0.91  # decode-shaped SDPA: 3041 GB/s of 3.35 TB/s (H100); 0.93 on H200
_BF16_EFFICIENCY = (0.80, 0.75, 0.60)  # best / typical / low: 797, 786-727, 598 (M=256) of 989 TFLOP/s
_FP8_EFFICIENCY = (0.72, 0.70, 0.45)  # 1428, 1412, 920 (M=256) of 1979 TFLOP/s
_PESSIMISTIC_BANDWIDTH = 0.85  # scheduling jitter, sampling, non-matmul kernels

# Interconnect for TP all-reduce: (bus bytes/s, latency s per all-reduce). NVLink 4 moves ~450 GB/s
# per direction, NCCL reaches ~360; vLLM's custom all-reduce takes ~8 us for decode-sized messages.
# PCIe: ~25 GB/s effective between GPUs through the host bridge, ~25 us per all-reduce.
_LINKS = {Interconnect.NVLINK: (360e9, 8e-6), Interconnect.PCIE: (25e9, 25e-6)}
_STEP_OVERHEAD_SECONDS = 3e-4  # scheduler + sampler + graph launch per step with CUDA graphs
_EAGER_SECONDS_PER_LAYER = 3e-5  # kernel launches per layer without CUDA graphs
_ACTIVATION_BYTES = 2  # bf16 activations in all-reduce messages
_FP8_QUANTIZATIONS = ("fp8", "fbgemm_fp8", "modelopt", "fp8_per_tensor", "fp8_per_block", "fp8_per_channel", "mxfp8")


class ModelShape(BaseModel):
    """What the roofline needs about the model beyond the plan (from ModelArchitecture)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_layers: int = Field(ge=1)
    attention_layers: int | None = Field(default=None, ge=0, description="None = every layer.")
    hidden_size: int = Field(ge=1)
    num_attention_heads: int = Field(ge=1)
    head_dim: int = Field(ge=1)
    num_experts: int = Field(default=0, ge=0)
    experts_per_token: int = Field(default=0, ge=0)
    expert_params: int = Field(default=0, ge=0, description="Parameters in routed experts, all layers.")


class PerfInputs(BaseModel):
    """Everything the model reads, per GPU rank; built from a PlanResponse by ``pipeline``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory_bandwidth_bytes_per_second: float = Field(gt=0)
    bf16_flops_per_second: float = Field(gt=0)
    fp8_flops_per_second: float | None = None
    interconnect: Interconnect = Interconnect.NVLINK
    tensor_parallel_size: int = Field(ge=1)
    pipeline_parallel_size: int = Field(ge=1)
    weights_bytes_per_rank: int = Field(gt=0)
    kv_bytes_per_token_per_rank: int = Field(ge=0)
    num_params: int = Field(gt=0)
    num_active_params: int | None = None
    fp8_compute: bool = False
    enforce_eager: bool = False
    max_num_seqs: int = Field(ge=1)
    max_num_batched_tokens: int = Field(ge=1)
    kv_cache_tokens: int = Field(ge=0)
    prompt_tokens: int = Field(ge=1)
    gen_tokens: int = Field(ge=1)
    concurrency: int = Field(ge=1)
    shape: ModelShape | None = None


class _Eff(BaseModel):
    weights: float
    kv: float
    compute: float


def matrix_efficiency(matrix_bytes: float) -> float:
    """Weight-streaming efficiency, log-linear between the measured matrix sizes (clamped at the ends)."""
    points = _MATRIX_BYTES_EFFICIENCY
    if matrix_bytes <= points[0][0]:
        return points[0][1]
    for (b0, e0), (b1, e1) in zip(points, points[1:]):
        if matrix_bytes <= b1:
            return e0 + (e1 - e0) * math.log(matrix_bytes / b0) / math.log(b1 / b0)
    return points[-1][1]


def expected_experts_fraction(experts_per_token: int, num_experts: int, tokens: float) -> float:
    """Expected share of experts a batch of ``tokens`` touches: 1 − (1 − k/E)^tokens."""
    if num_experts <= 0 or experts_per_token <= 0:
        return 1.0
    return 1.0 - (1.0 - min(experts_per_token, num_experts) / num_experts) ** max(tokens, 0.0)


class Roofline:
    """Step-time arithmetic for one PerfInputs; all times in seconds, per pipeline stage unless noted."""

    def __init__(self, inp: PerfInputs) -> None:
        self.inp = inp
        self.ranks = inp.tensor_parallel_size * inp.pipeline_parallel_size
        shape = inp.shape
        self.layers_per_rank = (shape.num_layers / inp.pipeline_parallel_size) if shape else None
        active = inp.num_active_params or inp.num_params
        if inp.num_active_params is None and shape and shape.num_experts and shape.expert_params:
            active = inp.num_params - shape.expert_params * (1 - shape.experts_per_token / shape.num_experts)
        self.active_params_per_rank = active / self.ranks
        # Bytes per parameter as loaded (quantized weights move fewer bytes).
        bytes_per_param = inp.weights_bytes_per_rank * self.ranks / inp.num_params
        if shape and shape.num_experts and shape.expert_params:
            expert_bytes = shape.expert_params * bytes_per_param / self.ranks
            self.expert_bytes_per_rank = min(expert_bytes, inp.weights_bytes_per_rank)
            self.moe_k, self.moe_e = shape.experts_per_token, shape.num_experts
        elif inp.num_active_params and inp.num_active_params < inp.num_params:
            # No expert layout known: treat the inactive share as experts with k/E = active/total.
            self.expert_bytes_per_rank = inp.weights_bytes_per_rank * (1 - inp.num_active_params / inp.num_params)
            self.moe_k, self.moe_e = inp.num_active_params, inp.num_params
        else:
            self.expert_bytes_per_rank, self.moe_k, self.moe_e = 0.0, 0, 0
        matrices = 4 * (self.layers_per_rank or 32)  # qkv, o, gate_up, down per layer
        self.weight_efficiency = matrix_efficiency(inp.weights_bytes_per_rank / matrices)
        peak_fp8 = inp.fp8_compute and inp.fp8_flops_per_second
        self.peak_flops = inp.fp8_flops_per_second if peak_fp8 else inp.bf16_flops_per_second
        self.compute_eff = _FP8_EFFICIENCY if peak_fp8 else _BF16_EFFICIENCY

    def efficiencies(self, case: int) -> _Eff:
        """case 0 = best, 1 = typical, 2 = pessimistic."""
        if case == 0:
            return _Eff(weights=max(_COPY_EFFICIENCY, self.weight_efficiency), kv=0.93, compute=self.compute_eff[0])
        if case == 1:
            return _Eff(weights=self.weight_efficiency, kv=_KV_READ_EFFICIENCY, compute=self.compute_eff[1])
        return _Eff(
            weights=self.weight_efficiency * _PESSIMISTIC_BANDWIDTH,
            kv=_KV_READ_EFFICIENCY * _PESSIMISTIC_BANDWIDTH,
            compute=self.compute_eff[2],
        )

    def weights_read_bytes(self, tokens: float) -> float:
        dense = self.inp.weights_bytes_per_rank - self.expert_bytes_per_rank
        return dense + self.expert_bytes_per_rank * expected_experts_fraction(self.moe_k, self.moe_e, tokens)

    def attention_flops(self, query_tokens: float, context_tokens: float) -> float:
        shape = self.inp.shape
        if shape is None:
            return 0.0
        layers = shape.num_layers if shape.attention_layers is None else shape.attention_layers
        per_pair = 4 * shape.num_attention_heads * shape.head_dim * layers  # QK^T and PV
        return per_pair * query_tokens * context_tokens / self.ranks

    def allreduce_seconds(self, tokens: float) -> float:
        tp = self.inp.tensor_parallel_size
        if tp == 1:
            return 0.0
        bandwidth, latency = _LINKS[self.inp.interconnect]
        hidden = self.inp.shape.hidden_size if self.inp.shape else 4096
        message = tokens * hidden * _ACTIVATION_BYTES
        per_call = latency + 2 * (tp - 1) / tp * message / bandwidth
        return 2 * (self.layers_per_rank or 32) * per_call

    def overhead_seconds(self) -> float:
        eager = self.inp.enforce_eager * _EAGER_SECONDS_PER_LAYER * (self.layers_per_rank or 32)
        return _STEP_OVERHEAD_SECONDS + eager

    def stage_seconds(
        self,
        eff: _Eff,
        decode_tokens: float,
        context: float,
        prefill_tokens: float = 0.0,
        prefill_context: float = 0.0,
        prefill_kv_tokens: float = 0.0,
    ) -> tuple[float, float, float]:
        """(total, memory, compute) seconds of one step on one stage.

        Each decoding request reads its whole context (``context`` tokens of KV). Prefill attention
        keeps KV tiles on chip, so a prefill chunk moves only ``prefill_kv_tokens`` of KV (its prior
        context once, and its own tokens written); its queries still see ``prefill_context`` keys on
        average, which is what costs FLOPs.
        """
        tokens = decode_tokens + prefill_tokens
        bandwidth = self.inp.memory_bandwidth_bytes_per_second
        kv_bytes = (decode_tokens * context + prefill_kv_tokens) * self.inp.kv_bytes_per_token_per_rank
        memory = self.weights_read_bytes(tokens) / (bandwidth * eff.weights) + kv_bytes / (bandwidth * eff.kv)
        flops = 2 * self.active_params_per_rank * tokens
        flops += self.attention_flops(decode_tokens, context) + self.attention_flops(prefill_tokens, prefill_context)
        compute = flops / (self.peak_flops * eff.compute)
        total = max(memory, compute) + self.allreduce_seconds(tokens) + self.overhead_seconds()
        return total, memory, compute

    def prefill_seconds(self, eff: _Eff, prompt_tokens: int) -> float:
        """One prompt alone, in chunks of max_num_batched_tokens, through every stage."""
        chunk = self.inp.max_num_batched_tokens
        done, seconds = 0, 0.0
        while done < prompt_tokens:
            size = min(chunk, prompt_tokens - done)
            # Causal attention: the chunk's queries see on average the earlier tokens plus half the chunk.
            seconds += self.stage_seconds(eff, 0, 0, size, done + size / 2, done + size)[0]
            done += size
        return seconds * self.inp.pipeline_parallel_size


def decode_batch(inp: PerfInputs) -> int:
    """Requests decoding together: the concurrency, capped by max_num_seqs and by what the KV cache holds."""
    per_request = inp.prompt_tokens + inp.gen_tokens
    kv_fit = max(1, inp.kv_cache_tokens // per_request) if inp.kv_cache_tokens else inp.concurrency
    return max(1, min(inp.concurrency, inp.max_num_seqs, kv_fit))


_MAX_RIDGE_SEARCH = 1 << 20


def memory_bound_until(roof: Roofline) -> int:
    """Largest decode batch whose linear layers are still limited by weight streaming (typical case).

    Only the weights-vs-matmul ridge is searched: KV reads grow with the batch as fast as attention
    FLOPs, so attention stays memory-bound at any batch and would hide the ridge.
    """
    eff = roof.efficiencies(1)
    bandwidth = roof.inp.memory_bandwidth_bytes_per_second * eff.weights
    flops_per_token = 2 * roof.active_params_per_rank / (roof.peak_flops * eff.compute)

    def memory_bound(batch: int) -> bool:
        return roof.weights_read_bytes(batch) / bandwidth >= flops_per_token * batch

    if not memory_bound(1):
        return 0
    lo, hi = 1, 2
    while memory_bound(hi):
        lo, hi = hi, hi * 2
        if hi > _MAX_RIDGE_SEARCH:
            return _MAX_RIDGE_SEARCH
    while hi - lo > 1:  # memory_bound(lo) and not memory_bound(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if memory_bound(mid) else (lo, mid)
    return lo


def estimate_performance(inp: PerfInputs) -> Performance:
    roof = Roofline(inp)
    pp = inp.pipeline_parallel_size
    batch = decode_batch(inp)
    context = inp.prompt_tokens + inp.gen_tokens / 2  # average context over a request's decode
    # Chunked prefill in steady state: each step also carries batch × prompt/gen prompt tokens.
    prefill_per_step = min(batch * inp.prompt_tokens / inp.gen_tokens, max(0, inp.max_num_batched_tokens - batch))
    half_prompt = inp.prompt_tokens / 2  # a prompt token attends to half the prompt on average
    cases = [roof.efficiencies(case) for case in (0, 1, 2)]
    itl = [
        pp * roof.stage_seconds(cases[0], batch, context)[0],
        pp * roof.stage_seconds(cases[1], batch, context, prefill_per_step, half_prompt, prefill_per_step)[0],
        pp * roof.stage_seconds(cases[2], batch, context, prefill_per_step, half_prompt, prefill_per_step)[0],
    ]
    prefill = [roof.prefill_seconds(eff, inp.prompt_tokens) for eff in cases]
    # TTFT: alone (best) / alone + waiting for one running step (typical) / a burst of `batch` prompts.
    ttft = Range(low=prefill[0], expected=prefill[1] + itl[1], high=batch * prefill[2] + itl[2])
    assumptions = _assumptions(inp, roof, batch, context)
    return Performance(
        decode_tokens_per_second_per_request=Range(low=1 / itl[2], expected=1 / itl[1], high=1 / itl[0]),
        decode_tokens_per_second_aggregate=Range(low=batch / itl[2], expected=batch / itl[1], high=batch / itl[0]),
        prefill_tokens_per_second=Range(
            low=inp.prompt_tokens / prefill[2],
            expected=inp.prompt_tokens / prefill[1],
            high=inp.prompt_tokens / prefill[0],
        ),
        ttft_seconds=ttft,
        itl_seconds=Range(low=itl[0], expected=itl[1], high=itl[2]),
        memory_bound_until_concurrency=memory_bound_until(roof),
        concurrency=batch,
        assumptions=assumptions,
    )


def _assumptions(inp: PerfInputs, roof: Roofline, batch: int, context: float) -> list[str]:
    notes = [
        f"roofline per GPU rank; weight streaming at {roof.weight_efficiency:.0%} of spec bandwidth (bf16 matmul of "
        "this matrix size on H100, gpu-calibration.md), up to 90% (large copy) and down to "
        f"{roof.weight_efficiency * _PESSIMISTIC_BANDWIDTH:.0%}",
        f"KV reads at {_KV_READ_EFFICIENCY:.0%} of spec bandwidth (measured decode attention)",
        f"matmul compute at {roof.compute_eff[2]:.0%}-{roof.compute_eff[0]:.0%} of spec "
        f"{'fp8' if roof.peak_flops == inp.fp8_flops_per_second and inp.fp8_compute else 'bf16'} peak",
        "efficiency factors measured on H100/H200 are applied as fractions of spec to every GPU",
        f"decode batch {batch} requests at an average context of {context:.0f} tokens; "
        "prefill of new requests is spread over decode steps (chunked prefill) in the expected case",
        f"{_STEP_OVERHEAD_SECONDS * 1e3:.1f} ms scheduler/sampler overhead per step"
        + (f" plus {_EAGER_SECONDS_PER_LAYER * 1e6:.0f} us per layer without CUDA graphs" if inp.enforce_eager else ""),
    ]
    if batch < inp.concurrency:
        notes.append(
            f"only {batch} of {inp.concurrency} requests run at once (max_num_seqs or KV capacity); the rest queue"
        )
    if inp.tensor_parallel_size > 1:
        bandwidth, latency = _LINKS[inp.interconnect]
        notes.append(
            f"TP all-reduce twice per layer over {inp.interconnect.value}: {bandwidth / 1e9:.0f} GB/s, "
            f"{latency * 1e6:.0f} us each"
        )
    if inp.pipeline_parallel_size > 1:
        notes.append("pipeline stages run one after another for a batch (no micro-batch overlap assumed)")
    if roof.moe_e:
        notes.append("MoE: a step reads only the experts its tokens touch, E*(1-(1-k/E)^tokens) expected")
    if inp.shape is None:
        notes.append("model shape unknown: attention FLOPs omitted, 32 layers and hidden 4096 assumed for overheads")
    notes.append("KV read assumes full attention on every layer (sliding-window layers read less)")
    return notes
