"""build_plan: settings resolution, recommendations, policy fields and the filled PlanResponse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner_service.engine.errors import (
    GpuNotFoundError,
    InvalidRequestError,
    UnsupportedVersionError,
)
from planner_service.engine.models import (
    GIB,
    EngineOptions,
    HardwareOptions,
    ModelOptions,
    OomRisk,
    PlanRequest,
    PolicyOptions,
)
from planner_service.engine.plan import build_plan
from planner_service.engine.source import ModelSource, SafetensorsSummary

FIXTURES = Path(__file__).parent / "fixtures" / "engine" / "model-configs"


def source(name: str, **kw) -> ModelSource:
    return ModelSource(model=name, source="catalog", config=json.loads((FIXTURES / name / "config.json").read_text()),
                       **kw)


LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


def plan(name=LLAMA, src=None, model=None, hardware=None, engine=None, policy=None):
    req = PlanRequest(model=ModelOptions(model=name, **(model or {})),
                      hardware=HardwareOptions(**(hardware or {"gpu": "H100"})),
                      engine=EngineOptions(**(engine or {})), policy=PolicyOptions(**(policy or {})))
    return build_plan(src or source(name), req)


def test_default_plan_fills_every_part_one_owns():
    r = plan()
    assert r.version_profile == "vllm-0.30-0.33" and r.vllm_version == "0.33.0"
    assert r.model.num_params == 8_030_261_248 and r.model.params_source == "computed"
    assert r.gpu.name == "H100 SXM" and r.gpu.memory_total_bytes == 85017493504 and r.gpu.num_gpus == 1
    c = r.config
    assert (c.tensor_parallel_size, c.max_model_len, c.gpu_memory_utilization) == (1, 131072, 0.92)
    assert (c.max_num_batched_tokens, c.max_num_seqs, c.block_size, c.kv_cache_dtype) == (8192, 1024, 16, "auto")
    f = r.feasibility
    assert f.fits and f.error is None and f.oom_risk == OomRisk.NONE
    assert f.kv_bytes_per_token == 32 * 2 * 8 * 128 * 2
    assert f.kv_cache_tokens == int(f.num_gpu_blocks / 8192 * 131072)
    assert f.per_gpu.budget_bytes == -(-85017493504 * 92 // 100)
    assert (f.per_gpu.budget_bytes - f.per_gpu.weights_bytes - f.per_gpu.activation_peak_bytes
            - f.per_gpu.non_torch_bytes - f.per_gpu.cuda_graph_bytes) == f.per_gpu.kv_cache_bytes
    settings = {e.setting for e in r.explanations}
    assert {"tensor_parallel_size", "max_model_len", "dtype", "kv_cache_dtype", "gpu_memory_utilization",
            "max_num_seqs", "max_num_batched_tokens", "block_size", "gpu"} <= settings
    assert r.performance is None and r.artifacts is None and r.fixes == []


def test_recommended_tp_is_the_smallest_that_fits():
    name = "meta-llama/Llama-3.1-8B-Instruct"
    r = plan(name, hardware={"gpu": "RTX 4090", "num_gpus": 4})
    tp = r.config.tensor_parallel_size
    assert r.feasibility.fits and tp == 2
    assert r.config.max_model_len == 131072
    smaller = plan(name, hardware={"gpu": "RTX 4090", "tensor_parallel_size": tp // 2},
                   model={"max_model_len": 131072})
    assert not smaller.feasibility.fits


def test_derived_length_that_does_not_fit_is_reduced_when_not_set():
    r = plan(hardware={"gpu": "RTX 4090", "tensor_parallel_size": 1})
    assert r.feasibility.fits and 4096 < r.config.max_model_len < 131072
    note = next(e for e in r.explanations if e.setting == "max_model_len")
    assert note.source == "recommended" and "does not fit" in note.reason


def test_user_length_is_evaluated_as_given_with_vllms_error():
    r = plan(model={"max_model_len": 131072}, hardware={"gpu": "RTX 4090", "tensor_parallel_size": 1})
    f = r.feasibility
    assert not f.fits and f.oom_risk == OomRisk.HIGH
    assert f.error.startswith("To serve at least one request with the model's max seq len (131072)")
    assert f"estimated maximum model length is {f.estimated_max_model_len}." in f.error
    assert r.config.max_model_len == 131072 and f.kv_cache_tokens == 0


def test_user_length_above_derived_is_refused():
    r = plan(model={"max_model_len": 200_000})
    assert not r.feasibility.fits
    assert r.feasibility.error.startswith("User-specified max_model_len (200000) is greater than the derived")


def test_auto_max_model_len():
    r = plan(model={"max_model_len": "auto"}, hardware={"gpu": "RTX 4090", "tensor_parallel_size": 1})
    assert r.feasibility.fits and r.config.max_model_len < 131072


def test_impossible_tp_raises_with_a_field_violation():
    with pytest.raises(InvalidRequestError) as err:
        plan("Qwen/Qwen2-7B-Instruct", hardware={"gpu": "H100", "tensor_parallel_size": 3})
    assert err.value.violations[0].field == "hardware.tensor_parallel_size"
    assert "divisible by tensor parallel size (3)" in str(err.value)


def test_version_and_gpu_errors():
    with pytest.raises(UnsupportedVersionError):
        plan(engine={"vllm_version": "0.5.3"})
    with pytest.raises(GpuNotFoundError):
        plan(hardware={"gpu": "H1000"})
    custom = plan(hardware={"vram_gb": 40})
    assert custom.gpu.memory_total_bytes == 40 * GIB


def test_old_profile_defaults():
    r = plan(engine={"vllm_version": "0.11.0"}, model={"max_model_len": 16000})
    assert r.version_profile == "vllm-0.11" and r.config.gpu_memory_utilization == 0.90
    assert r.feasibility.kv_cache_tokens == r.feasibility.num_gpu_blocks * 16


def test_params_override_and_safetensors_counts():
    base = plan(model={"max_model_len": 8192})
    bigger = plan(model={"max_model_len": 8192, "params_b": 16.06})
    assert bigger.model.params_source == "override" and bigger.model.num_params == 16_060_000_000
    assert bigger.feasibility.per_gpu.weights_bytes == pytest.approx(2 * base.feasibility.per_gpu.weights_bytes, rel=1e-3)
    st = SafetensorsSummary(parameters_by_dtype={"BF16": 8_030_261_248})
    exact = plan(src=source(LLAMA, safetensors=st))
    assert exact.model.params_source == "safetensors" and exact.model.num_params == 8_030_261_248


def test_fp8_kv_cache_halves_bytes_per_token_and_doubles_capacity():
    auto = plan(model={"max_model_len": 8192})
    fp8 = plan(model={"max_model_len": 8192, "kv_cache_dtype": "fp8"})
    assert fp8.feasibility.kv_bytes_per_token * 2 == auto.feasibility.kv_bytes_per_token
    assert abs(fp8.feasibility.num_gpu_blocks - 2 * auto.feasibility.num_gpu_blocks) <= 1


def test_policy_fields():
    base = plan(model={"max_model_len": 8192})
    over = plan(model={"max_model_len": 8192}, policy={"overhead_gb": 2})
    assert base.feasibility.per_gpu.kv_cache_bytes - over.feasibility.per_gpu.kv_cache_bytes == 2 * GIB
    # MNS pinned: a recommended MNS follows the KV capacity, which would move the activation peak too.
    pinned = {"max_num_seqs": 1024}
    frag = plan(model={"max_model_len": 8192}, policy={"fragmentation_factor": 0.5}, engine=pinned)
    base = plan(model={"max_model_len": 8192}, engine=pinned)
    assert frag.feasibility.per_gpu.kv_cache_bytes == int(base.feasibility.per_gpu.kv_cache_bytes * 0.5)
    tight = plan(model={"max_model_len": 8192}, policy={"headroom_gb": 60},
                 hardware={"gpu": "H100", "tensor_parallel_size": 1})
    assert tight.feasibility.fits and tight.feasibility.oom_risk == OomRisk.MEDIUM
    # when recommending, the headroom is kept: one H100 leaves < 60 GiB spare, two do not
    assert plan(model={"max_model_len": 8192}, policy={"headroom_gb": 60}).config.tensor_parallel_size == 2
    util = plan(model={"max_model_len": 8192}, policy={"gpu_memory_utilization": 0.5})
    assert util.config.gpu_memory_utilization == 0.5
    assert next(e for e in util.explanations if e.setting == "gpu_memory_utilization").source == "user"


def test_pre_ampere_gpu_gets_fp16():
    r = plan("Qwen/Qwen3-0.6B", hardware={"gpu": "T4"})
    assert r.config.dtype == "float16" and r.feasibility.fits


def test_free_memory_below_budget_refuses_to_start():
    # A user-set utilization is evaluated as given (an unset one is capped to what is free).
    r = plan(model={"max_model_len": 8192}, hardware={"gpu": "H100", "free_memory_bytes": 50 * GIB},
             policy={"gpu_memory_utilization": 0.92})
    assert not r.feasibility.fits
    assert r.feasibility.error.startswith("Free memory on device cuda:0 (50.00/79.18 GiB) on startup is less than")


def test_mla_pipeline_and_expert_parallel_plan():
    r = plan("deepseek-ai/DeepSeek-V2-Lite", hardware={"gpu": "L4", "tensor_parallel_size": 2,
                                                       "pipeline_parallel_size": 2},
             model={"max_model_len": 1024}, engine={"enforce_eager": True})
    assert r.feasibility.fits and r.config.pipeline_parallel_size == 2 and r.gpu.num_gpus == 4
    assert r.feasibility.kv_bytes_per_token == 14 * 576 * 2  # stage 0 (14 layers) binds; latent not sharded
    ep = plan("Qwen/Qwen3-30B-A3B", hardware={"gpu": "H100", "tensor_parallel_size": 2,
                                              "enable_expert_parallel": True}, model={"max_model_len": 8192})
    assert ep.config.enable_expert_parallel and ep.feasibility.fits


def test_twin_inputs_rerun_the_plan_exactly_and_cheaply():
    from planner_service.engine.memory import evaluate
    from planner_service.engine.plan import twin_inputs

    req = PlanRequest(model=ModelOptions(model=LLAMA), hardware=HardwareOptions(gpu="RTX 4090", num_gpus=1))
    src = source(LLAMA)
    r = build_plan(src, req)
    inputs = twin_inputs(src, req, r)
    again = evaluate(inputs.arch, inputs.gpu, inputs.settings, inputs.profile)
    assert again.num_blocks == r.feasibility.num_gpu_blocks and again.kv_cache_tokens == r.feasibility.kv_cache_tokens
    longer = evaluate(inputs.arch, inputs.gpu, inputs.settings.model_copy(update={"max_model_len": 131072}),
                      inputs.profile)
    assert not longer.fits and longer.error.startswith("To serve at least one request")
