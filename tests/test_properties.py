"""Property-based tests of the pure memory twin (``build_plan``) over random valid architectures.

Hypothesis builds config.json dicts for four families (dense GQA, MoE, sliding-window, MLA) and random
GPUs and settings, then runs the engine exactly as the API does (an inline ``ModelSource``). The
properties are the ones a user relies on without thinking about them: only domain errors escape;
memory figures are never negative (except the KV cache when vLLM would refuse to start); more GPU
memory never turns "fits" into "does not fit"; a longer context never needs less KV per request;
an fp8 KV cache never takes more bytes per token than bf16; and the reported tokens, concurrency
and block count agree with each other the way vLLM computes them.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from planner_service.engine.errors import PlannerError
from planner_service.engine.models import (
    EngineOptions,
    HardwareOptions,
    ModelOptions,
    PlanRequest,
    PlanResponse,
    PolicyOptions,
)
from planner_service.engine.plan import build_plan
from planner_service.engine.source import ModelSource

EXAMPLES = settings(
    max_examples=60, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
GPUS = ["H100 SXM", "A100 SXM 80GB", "L40S", "A10G", "H200", "RTX 4090", "B200"]
POW2_HEADS = [8, 16, 32, 64]


# --------------------------------------------------------------------------------------------------
# Strategies: config.json dicts of the four families
# --------------------------------------------------------------------------------------------------


@st.composite
def _attention(draw) -> dict:
    heads = draw(st.sampled_from(POW2_HEADS))
    kv_heads = draw(st.sampled_from([d for d in (1, 2, 4, 8, 16, 32, 64) if heads % d == 0]))
    head_dim = draw(st.sampled_from([64, 128]))
    return {
        "hidden_size": heads * head_dim,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "num_hidden_layers": draw(st.integers(1, 64)),
        "vocab_size": draw(st.sampled_from([32000, 128256, 151936])),
        "max_position_embeddings": draw(st.sampled_from([4096, 8192, 32768, 131072])),
        "torch_dtype": draw(st.sampled_from(["bfloat16", "float16"])),
        "tie_word_embeddings": draw(st.booleans()),
        "rms_norm_eps": 1e-6,
    }


@st.composite
def dense_config(draw) -> dict:
    base = draw(_attention())
    return {**base, "model_type": "llama", "architectures": ["LlamaForCausalLM"],
            "intermediate_size": base["hidden_size"] * draw(st.sampled_from([2, 3, 4]))}


@st.composite
def moe_config(draw) -> dict:
    base = draw(_attention())
    experts = draw(st.sampled_from([8, 16, 64, 128]))
    return {**base, "model_type": "qwen3_moe", "architectures": ["Qwen3MoeForCausalLM"],
            "intermediate_size": base["hidden_size"] * 3, "num_experts": experts,
            "num_experts_per_tok": draw(st.sampled_from([k for k in (1, 2, 4, 8) if k <= experts])),
            "moe_intermediate_size": draw(st.sampled_from([256, 768, 1536]))}


@st.composite
def sliding_config(draw) -> dict:
    base = draw(_attention())
    window = draw(st.sampled_from([512, 1024, 4096]))
    model_type = draw(st.sampled_from(["mistral", "gemma2"]))  # all layers sliding, or every other one
    layers = base["num_hidden_layers"] + (base["num_hidden_layers"] % 2 if model_type == "gemma2" else 0)
    return {**base, "model_type": model_type, "architectures": ["MistralForCausalLM"], "num_hidden_layers": layers,
            "intermediate_size": base["hidden_size"] * 3, "sliding_window": window}


@st.composite
def mla_config(draw) -> dict:
    heads = draw(st.sampled_from([16, 32, 64, 128]))
    hidden = draw(st.sampled_from([2048, 4096, 5120]))
    return {
        "model_type": "deepseek_v2", "architectures": ["DeepseekV2ForCausalLM"],
        "hidden_size": hidden, "num_attention_heads": heads, "num_key_value_heads": heads,
        "num_hidden_layers": draw(st.integers(2, 60)), "vocab_size": 102400,
        "max_position_embeddings": draw(st.sampled_from([4096, 32768, 163840])),
        "intermediate_size": hidden * 5, "kv_lora_rank": draw(st.sampled_from([256, 512])),
        "q_lora_rank": draw(st.sampled_from([None, 1536])), "qk_rope_head_dim": 64, "qk_nope_head_dim": 128,
        "v_head_dim": 128, "n_routed_experts": draw(st.sampled_from([16, 64])), "num_experts_per_tok": 6,
        "moe_intermediate_size": 1408, "n_shared_experts": 2, "first_k_dense_replace": 1, "moe_layer_freq": 1,
        "torch_dtype": "bfloat16",
    }


ANY_CONFIG = st.one_of(dense_config(), moe_config(), sliding_config(), mla_config())
SINGLE_SPEC = st.one_of(dense_config(), moe_config(), mla_config())  # one KV spec: bytes_per_block is simple


@st.composite
def settings_for(draw, config: dict) -> dict:
    heads = config["num_attention_heads"]
    tp = draw(st.sampled_from([t for t in (1, 2, 4, 8) if heads % t == 0]))
    upper = config["max_position_embeddings"]
    return {
        "gpu": draw(st.sampled_from(GPUS)),
        "tp": tp,
        "max_model_len": draw(st.integers(16, upper)),
        "util": draw(st.sampled_from([0.5, 0.8, 0.9, 0.95])),
        "kv_dtype": draw(st.sampled_from([None, "fp8"])),
        "vram_gb": draw(st.sampled_from([None, 24.0, 48.0, 80.0, 141.0])),
    }


def _request(config: dict, s: dict, **overrides) -> PlanRequest:
    s = {**s, **overrides}
    return PlanRequest(
        model=ModelOptions(model="prop", config_json=config, max_model_len=s["max_model_len"],
                           kv_cache_dtype=s["kv_dtype"]),
        hardware=HardwareOptions(gpu=s["gpu"], tensor_parallel_size=s["tp"], num_gpus=s["tp"], vram_gb=s["vram_gb"]),
        policy=PolicyOptions(gpu_memory_utilization=s["util"]),
        engine=EngineOptions(enforce_eager=True),
    )


def _plan(config: dict, s: dict, **overrides) -> PlanResponse | None:
    """The plan, or None when the engine refused with a domain error (the only allowed exception)."""
    request = _request(config, s, **overrides)
    try:
        return build_plan(ModelSource(model="prop", source="inline", config=config), request)
    except PlannerError:
        return None


@st.composite
def config_and_settings(draw, configs=ANY_CONFIG) -> tuple[dict, dict]:
    config = draw(configs)
    return config, draw(settings_for(config))


# --------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------


@EXAMPLES
@given(config_and_settings())
def test_only_domain_errors_and_no_negative_memory(case):
    config, s = case
    response = _plan(config, s)  # any non-domain exception fails the test here
    event(f"family={config['model_type']} fits={None if response is None else response.feasibility.fits}")
    assume(response is not None)
    mem = response.feasibility.per_gpu
    for name in ("total_bytes", "budget_bytes", "weights_bytes", "activation_peak_bytes", "non_torch_bytes",
                 "cuda_graph_bytes"):
        assert getattr(mem, name) >= 0, (name, mem)
    assert mem.budget_bytes <= mem.total_bytes
    f = response.feasibility
    if f.fits:
        assert mem.kv_cache_bytes > 0 and f.num_gpu_blocks > 0 and f.kv_cache_tokens > 0
        assert f.error is None
    else:
        assert f.error, "a plan that does not fit must carry vLLM's error"
    assert f.kv_cache_tokens >= 0 and f.num_gpu_blocks >= 0 and f.max_concurrency >= 0
    assert f.kv_bytes_per_token > 0


@EXAMPLES
@given(config_and_settings(), st.sampled_from([1.25, 1.5, 2.0, 4.0]))
def test_more_gpu_memory_never_turns_fits_into_does_not_fit(case, factor):
    config, s = case
    base_vram = s["vram_gb"] or 40.0
    small = _plan(config, s, vram_gb=base_vram)
    assume(small is not None and small.feasibility.fits)
    big = _plan(config, s, vram_gb=min(4096.0, base_vram * factor))
    assert big is not None and big.feasibility.fits
    assert big.feasibility.per_gpu.kv_cache_bytes >= small.feasibility.per_gpu.kv_cache_bytes
    assert big.feasibility.kv_cache_tokens >= small.feasibility.kv_cache_tokens


@EXAMPLES
@given(config_and_settings(), st.floats(0.05, 0.95))
def test_a_longer_context_never_needs_less_kv(case, shorter_fraction):
    config, s = case
    long_len = s["max_model_len"]
    short_len = max(16, int(long_len * shorter_fraction))
    long_plan, short_plan = _plan(config, s), _plan(config, s, max_model_len=short_len)
    assume(long_plan is not None and short_plan is not None)
    lf, sf = long_plan.feasibility, short_plan.feasibility
    if lf.fits:
        assert sf.fits, "fits at a longer context but not at a shorter one"
    if lf.max_concurrency > 0 and sf.max_concurrency > 0:
        # Blocks one request needs = blocks / concurrency; it may only grow with the context.
        long_blocks = lf.num_gpu_blocks / lf.max_concurrency
        short_blocks = sf.num_gpu_blocks / sf.max_concurrency
        assert short_blocks <= long_blocks * (1 + 1e-6) + 1e-6
        if lf.per_gpu.kv_cache_bytes == sf.per_gpu.kv_cache_bytes:
            assert sf.max_concurrency >= lf.max_concurrency * (1 - 1e-6)


@EXAMPLES
@given(config_and_settings())
def test_fp8_kv_never_needs_more_than_bf16(case):
    config, s = case
    bf16 = _plan(config, s, kv_dtype="auto")
    fp8 = _plan(config, s, kv_dtype="fp8")
    assume(bf16 is not None and fp8 is not None)
    assert fp8.feasibility.kv_bytes_per_token <= bf16.feasibility.kv_bytes_per_token
    if bf16.feasibility.fits:
        assert fp8.feasibility.fits
        assert fp8.feasibility.kv_cache_tokens >= bf16.feasibility.kv_cache_tokens


@EXAMPLES
@given(config_and_settings())
def test_tokens_and_concurrency_agree(case):
    config, s = case
    response = _plan(config, s)
    assume(response is not None and response.feasibility.fits)
    f, max_len = response.feasibility, response.config.max_model_len
    exact = f.max_concurrency * max_len
    # max_concurrency may be rounded for display (2 decimals): allow that much, plus int() truncation.
    assert abs(f.kv_cache_tokens - exact) <= 0.005 * max_len + 1, (f.kv_cache_tokens, f.max_concurrency, max_len)
    assert f.block_size == response.config.block_size


@EXAMPLES
@given(config_and_settings(SINGLE_SPEC))
def test_block_count_matches_the_kv_bytes(case):
    """One KV spec per worker: a block holds ``block_size`` tokens of every layer, so
    ``bytes_per_block = kv_bytes_per_token * block_size`` and blocks = kv_cache_bytes // that."""
    config, s = case
    response = _plan(config, s)
    assume(response is not None and response.feasibility.fits)
    f = response.feasibility
    bytes_per_block = f.kv_bytes_per_token * f.block_size
    assert f.num_gpu_blocks == f.per_gpu.kv_cache_bytes // bytes_per_block, (
        f.num_gpu_blocks, f.per_gpu.kv_cache_bytes, bytes_per_block)


def test_the_strategies_produce_plans_that_fit_and_plans_that_do_not():
    """Guard against vacuous properties: the fixed examples below must cover both outcomes."""
    config = {"model_type": "llama", "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
              "num_hidden_layers": 32, "vocab_size": 128256, "max_position_embeddings": 131072,
              "intermediate_size": 14336, "torch_dtype": "bfloat16"}
    s = {"gpu": "H100 SXM", "tp": 1, "max_model_len": 8192, "util": 0.9, "kv_dtype": None, "vram_gb": None}
    fits = _plan(config, s)
    tiny = _plan(config, s, vram_gb=16.0)
    assert fits is not None and fits.feasibility.fits
    assert tiny is not None and not tiny.feasibility.fits and tiny.feasibility.per_gpu.kv_cache_bytes < 0
    assert math.isfinite(fits.feasibility.max_concurrency)


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
