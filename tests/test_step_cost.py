"""The step model's measured kernel terms: decode attention per GPU (floor and efficiency by call size) and
all-reduce per call.

Constants come from aiconfigurator 0.8.0's vLLM kernel tables (``benchmarks/kernel_tables.py`` prints the fit);
these tests pin how the step model uses them, so a change to the mechanism (not only to a number) fails here.
"""

from __future__ import annotations

import math

import pytest

from planner_service.engine.gpus import lookup_gpu
from planner_service.engine.pipeline import default_interconnect
from planner_service.engine.simulation.shape import hardware_facts
from planner_service.engine.simulation.step_cost import (
    DECODE_ATTENTION_BY_GPU, GRAPH_KERNEL_SECONDS, MIB, WEIGHT_STREAM_EFFICIENCY, WEIGHT_STREAM_EFFICIENCY_BY_GPU,
    EngineShape, HardwareFacts, StageShape, StepCostModel,
    StepWork, decode_attention_call_seconds, decode_attention_seconds, kv_stream_efficiency,
)

GIB = 1024 * MIB


def _facts(gpu: str) -> HardwareFacts:
    spec = lookup_gpu(gpu)
    return hardware_facts(spec, default_interconnect(spec.name))


def _stage(layers: int = 4, kv_bytes_per_token: float = 0.0, hidden: int = 4096, mla: str | None = None) -> StageShape:
    """Attention-only layers without weights: what is left of a step is attention, launches and all-reduces."""
    return StageShape(
        layers=layers, full_attention_layers=layers, sliding_attention_layers=0, sliding_window=0,
        linear_attention_layers=0, kv_bytes_per_token_per_layer=kv_bytes_per_token,
        attention_flops_per_pair_per_layer=0.0, linear_state_bytes_per_request_per_layer=0.0,
        dense_weight_bytes=0.0, dense_params=0.0, moe_layers=0, experts_on_rank=0, num_experts=0,
        experts_per_token=0, expert_weight_bytes=0.0, expert_params=0.0, shared_expert_layers=0,
        lm_head_bytes=0.0, lm_head_params=0.0, vocab_per_rank=0, hidden_size=hidden, mla_backend=mla,
        fp8_compute=False,
    )


def _model(stage: StageShape, hw: HardwareFacts, tp: int = 1) -> StepCostModel:
    return StepCostModel(EngineShape(stages=(stage,), tensor_parallel_size=tp, hardware=hw, cuda_graphs=True,
                                     max_capture_size=512, async_scheduling=True))


@pytest.mark.parametrize("gpu, measured", [("H100", "H100 SXM"), ("H200", "H200"), ("A100 SXM 80GB", "A100 SXM 80GB"),
                                           ("B200", "B200"), ("H100 PCIe", "H100 SXM"), ("L40S", "A100 SXM 80GB"),
                                           ("V100 SXM2 32GB", "A100 SXM 80GB")])
def test_each_gpu_takes_its_measured_attention_kernel_or_its_architectures(gpu, measured):
    assert _facts(gpu).decode_attention_kernel == DECODE_ATTENTION_BY_GPU[measured]


def test_one_tiny_decode_attention_layer_costs_the_measured_floor():
    """A layer's graph node plus the floor beyond it is the measured per-call floor."""
    hw = _facts("H100")
    floor, _ = hw.decode_attention_kernel
    layers = 4
    model = _model(_stage(layers, kv_bytes_per_token=1.0), hw)
    empty = model.gpu_seconds(StepWork(decode_requests=1, decode_context_tokens=0.0, sampled_requests=1))
    per_layer_launches = layers * GRAPH_KERNEL_SECONDS * 9  # the dense layer's 9 kernels, attention's included
    assert empty == pytest.approx(per_layer_launches + layers * (floor - GRAPH_KERNEL_SECONDS))


@pytest.mark.parametrize("per_call_bytes", [4 * MIB, 64 * MIB, 1024 * MIB])
def test_kv_streams_at_the_efficiency_measured_for_calls_of_that_size(per_call_bytes):
    """At a knot of the measured curve a layer call reads its KV at exactly that knot's efficiency (or takes
    the floor when that is longer); each layer of a step is one call of the step's KV per layer."""
    hw = _facts("H100")
    floor, curve = hw.decode_attention_kernel
    efficiency = dict(curve)[per_call_bytes]
    bw = hw.memory_bandwidth_bytes_per_second
    assert kv_stream_efficiency(per_call_bytes, hw.decode_attention_kernel) == efficiency
    call = decode_attention_call_seconds(per_call_bytes, bw, hw.decode_attention_kernel)
    assert call == pytest.approx(max(floor, per_call_bytes / (bw * efficiency)))
    layers = 4
    model = _model(_stage(layers, kv_bytes_per_token=1.0), hw)
    empty = model.gpu_seconds(StepWork(decode_requests=1, decode_context_tokens=0.0, sampled_requests=1))
    full = model.gpu_seconds(StepWork(decode_requests=1, decode_context_tokens=per_call_bytes, sampled_requests=1))
    assert full - empty == pytest.approx(layers * (call - floor))


def test_larger_calls_stream_closer_to_the_spec_bandwidth():
    """The measured efficiency climbs with the call's size: 1 GiB of KV in one call is read faster per byte
    than the same GiB in 64 calls of 16 MiB (the step model must not price KV as one affine stream)."""
    hw = _facts("H100")
    bw = hw.memory_bandwidth_bytes_per_second
    one = decode_attention_seconds(1024 * MIB, 0.0, bw, hw.bf16_flops_per_second, hw.decode_attention_kernel, 1)
    many = decode_attention_seconds(1024 * MIB, 0.0, bw, hw.bf16_flops_per_second, hw.decode_attention_kernel, 64)
    assert many > 2 * one
    knots = dict(hw.decode_attention_kernel[1])
    between = knots[64 * MIB] + (knots[128 * MIB] - knots[64 * MIB]) * math.log2(100 / 64)  # log-linear in bytes
    assert kv_stream_efficiency(100 * MIB, hw.decode_attention_kernel) == pytest.approx(between)
    assert kv_stream_efficiency(64 * GIB, hw.decode_attention_kernel) == knots[max(knots)]  # flat beyond the ends


def test_mla_layers_keep_their_own_floor_instead():
    hw = _facts("H100")
    seconds = decode_attention_seconds(0.0, 0.0, hw.memory_bandwidth_bytes_per_second, hw.bf16_flops_per_second,
                                       hw.decode_attention_kernel, calls=2, floor=False)
    assert seconds == 0.0
    mla = _model(_stage(2, mla="flash_attn_mla"), hw)
    dense = _model(_stage(2), hw)
    work = StepWork(decode_requests=1, decode_context_tokens=0.0, sampled_requests=1)
    assert mla._attention_seconds(mla.shape.stages[0], work, 1) == pytest.approx(2 * 30e-6)
    assert dense._attention_seconds(dense.shape.stages[0], work, 1) == pytest.approx(
        2 * (hw.decode_attention_kernel[0] - GRAPH_KERNEL_SECONDS))


def test_a_tensor_parallel_step_pays_each_all_reduce_once_at_its_in_graph_latency():
    """Two all-reduces per layer, each at the latency measured inside a CUDA graph (which already holds the
    graph node): the TP step is exactly the TP-1 step plus those calls."""
    hw = _facts("H100")
    stage = _stage(layers=8, hidden=8192)
    work = StepWork(decode_requests=16, decode_context_tokens=0.0, sampled_requests=16)
    single, split = _model(stage, hw, tp=1).gpu_seconds(work), _model(stage, hw, tp=2).gpu_seconds(work)
    message = 16 * 8192 * 2
    assert split - single == pytest.approx(2 * 8 * hw.allreduce_seconds(message, 2))
    assert hw.allreduce_seconds(message, 2) < 7e-6  # aiconfigurator: 6.3 us at 256 KB, tp 2, H100 graph rows


@pytest.mark.parametrize("gpu, efficiency", [
    ("A100 SXM 80GB", WEIGHT_STREAM_EFFICIENCY_BY_GPU["A100 SXM 80GB"]), ("B200", WEIGHT_STREAM_EFFICIENCY_BY_GPU["B200"]),
    ("L40S", WEIGHT_STREAM_EFFICIENCY_BY_GPU["L40S"]), ("RTX 3090", WEIGHT_STREAM_EFFICIENCY_BY_GPU["A100 SXM 80GB"]),
    ("H100", WEIGHT_STREAM_EFFICIENCY), ("H200", WEIGHT_STREAM_EFFICIENCY), ("V100 SXM2 32GB", WEIGHT_STREAM_EFFICIENCY),
])
def test_a_decode_step_streams_weights_at_its_gpus_measured_fraction(gpu, efficiency):
    """One decode token over 10 GB of weights costs the weights at the GPU's measured streaming fraction (A100's
    HBM2e well below Hopper's), on top of the same launches as an empty step."""
    hw = _facts(gpu)
    assert hw.weight_stream_efficiency == efficiency
    weights = _stage(layers=1)
    heavy = StageShape(**{**weights.__dict__, "dense_weight_bytes": 10e9, "dense_params": 5e9})
    work = StepWork(decode_requests=1, decode_context_tokens=0.0, sampled_requests=1)
    step = _model(heavy, hw).gpu_seconds(work) - _model(weights, hw).gpu_seconds(work)
    assert step == pytest.approx(10e9 / (hw.memory_bandwidth_bytes_per_second * efficiency))
    assert WEIGHT_STREAM_EFFICIENCY_BY_GPU["A100 SXM 80GB"] < 0.8 < WEIGHT_STREAM_EFFICIENCY
