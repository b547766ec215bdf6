"""The step model's measured kernel terms: decode attention per GPU and all-reduce per call.

Constants come from aiconfigurator 0.8.0's vLLM kernel tables (``benchmarks/kernel_tables.py`` prints the fit);
these tests pin how the step model uses them, so a change to the mechanism (not only to a number) fails here.
"""

from __future__ import annotations

import pytest

from planner_service.engine.gpus import lookup_gpu
from planner_service.engine.pipeline import default_interconnect
from planner_service.engine.simulation.shape import hardware_facts
from planner_service.engine.simulation.step_cost import (
    DECODE_ATTENTION_BY_GPU, GRAPH_KERNEL_SECONDS, EngineShape, HardwareFacts, StageShape, StepCostModel, StepWork,
    decode_attention_seconds,
)


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
    """A layer's graph node plus the floor beyond it is the measured per-call floor; KV bytes add at the
    measured efficiency of the spec bandwidth."""
    hw = _facts("H100")
    floor, efficiency = hw.decode_attention_kernel
    layers = 4
    model = _model(_stage(layers, kv_bytes_per_token=1.0), hw)
    empty = model.gpu_seconds(StepWork(decode_requests=1, decode_context_tokens=0.0, sampled_requests=1))
    per_layer_launches = layers * GRAPH_KERNEL_SECONDS * 9  # the dense layer's 9 kernels, attention's included
    assert empty == pytest.approx(per_layer_launches + layers * (floor - GRAPH_KERNEL_SECONDS))
    context = 1e9  # 1 GB of KV per layer
    full = model.gpu_seconds(StepWork(decode_requests=1, decode_context_tokens=context, sampled_requests=1))
    assert full - empty == pytest.approx(layers * context / (hw.memory_bandwidth_bytes_per_second * efficiency))


def test_mla_layers_keep_their_own_floor_instead():
    hw = _facts("H100")
    seconds = decode_attention_seconds(0.0, 0.0, hw.memory_bandwidth_bytes_per_second, hw.bf16_flops_per_second,
                                       hw.decode_attention_kernel, calls=0)
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
