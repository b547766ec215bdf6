"""KV-cache specs, page sizes, grouping and capacity: the reference's worked examples and hand computations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner_service.engine.architecture import parse_architecture
from planner_service.engine.gpus import lookup_gpu
from planner_service.engine.kv_cache import (
    attention_bytes_per_token,
    build_layout,
    capacity,
    check_fit,
    estimate_max_model_len,
    mamba_page_bytes,
)
from planner_service.engine.memory import TwinSettings, evaluate
from planner_service.engine.profiles import resolve_profile

FIXTURES = Path(__file__).parent / "fixtures" / "engine" / "model-configs"
GIB = 1 << 30


def arch(name: str, **kwargs):
    return parse_architecture(json.loads((FIXTURES / name / "config.json").read_text()), **kwargs)


def test_llama31_8b_worked_example():
    """§2.7: 60 GiB of KV at L=131072 -> 30,720 blocks, 491,520 tokens, 3.75x; fit needs (8192+1) x 2 MiB."""
    a = arch("meta-llama/Llama-3.1-8B-Instruct")
    layout = build_layout(a, range(32), 1, "auto", 2, 2, 16, 1)
    assert layout.groups[0].spec.page_bytes == 65_536
    assert layout.bytes_per_block == 2 * 1024 * 1024
    blocks = 60 * GIB // layout.bytes_per_block
    assert blocks == 30_720
    assert layout.blocks_per_request(131_072, 16_384) == 8_192
    tokens, conc = capacity(layout, blocks, 131_072, 16_384, "concurrency")
    assert (tokens, conc) == (491_520, 3.75)
    fit = check_fit(layout, 60 * GIB, 131_072, 16_384, reserve_null_block=True)
    assert fit.fits and fit.needed_bytes == 8_192 * 2 * 1024 * 1024


def test_gemma3_27b_worked_example():
    """§2.7: 52 sliding + 10 full layers -> 1 full + 6 SW groups, 8 padding slots, 14,726 blocks per request."""
    a = arch("google/gemma-3-27b-it")
    layout = build_layout(a, range(62), 1, "auto", 2, 2, 16, 1)
    assert layout.groups[0].spec.page_bytes == 128 * 1024
    kinds = sorted((g.spec.kind, g.num_layers) for g in layout.groups)
    assert kinds == [("full", 10)] + [("sliding", 8)] * 2 + [("sliding", 9)] * 4
    assert layout.padding_layers == 8
    assert layout.bytes_per_block == 10 * 128 * 1024
    assert layout.blocks_per_request(131_072, 16_384) == 14_726
    # 0.10-0.20: the window adds MNBT (no async scheduling), not 2 x MNBT
    assert layout.blocks_per_request(131_072, 8_192) == 8_192 + 6 * ((1023 + 8192 + 15) // 16 + 1)


def test_mla_page_is_the_latent_and_not_sharded_by_tp():
    a = arch("deepseek-ai/DeepSeek-V3")
    for tp in (1, 8):
        assert attention_bytes_per_token(a, tp, "auto", 2) == (512 + 64) * 2
    layout = build_layout(a, range(61), 8, "auto", 2, 2, 64, 1)
    assert layout.groups[0].spec.kind == "mla"
    assert layout.groups[0].spec.page_bytes == 64 * 576 * 2
    assert layout.bytes_per_block == 61 * 64 * 576 * 2
    assert attention_bytes_per_token(a, 8, "fp8", 1) == 576
    assert attention_bytes_per_token(a, 8, "fp8_ds_mla", 1) == 656


def test_sliding_window_page_and_blocks_gemma2():
    a = arch("google/gemma-2-9b-it")  # 42 layers alternating, window 4096, 8 KV heads x 256
    layout = build_layout(a, range(42), 1, "auto", 2, 2, 16, 1)
    page = 2 * 16 * 8 * 256 * 2
    assert {g.spec.page_bytes for g in layout.groups} == {page}
    assert layout.bytes_per_block == 21 * page  # equal buckets of 21 -> one group each
    assert layout.blocks_per_request(8192, 4096) == 512 + ((4095 + 4096 + 15) // 16 + 1)


def test_gqa_replication_when_tp_exceeds_kv_heads():
    a = arch("Qwen/Qwen2-7B-Instruct")  # 4 KV heads x 128
    assert attention_bytes_per_token(a, 2, "auto", 2) == 2 * 2 * 128 * 2
    assert attention_bytes_per_token(a, 4, "auto", 2) == 2 * 1 * 128 * 2
    assert attention_bytes_per_token(a, 8, "auto", 2) == 2 * 1 * 128 * 2  # replicated: stops shrinking
    layout = build_layout(a, range(28), 8, "auto", 2, 2, 16, 1)
    assert layout.groups[0].spec.page_bytes == 16 * 512


def test_qwen3_next_hybrid_pages_tp2_fp8_match_the_log():
    """The L40S log prints block size 1072 for TP2 with fp8 KV."""
    a = arch("Qwen/Qwen3-Next-80B-A3B-Instruct")
    state = mamba_page_bytes(a, 2, 2)
    assert state == ((2 * 16 * 128 + 32 * 128) // 2 * 3 + 16 * 128 * 128) * 2 == 548_864
    layout = build_layout(a, range(48), 2, "fp8", 1, 2, 16, 1)
    assert layout.block_size == 1072  # 16 * cdiv(548864, 16 * 512)
    assert len(layout.groups) == 4  # 12 attention + 3 x 12 linear-attention layers
    assert layout.bytes_per_block == 12 * 1072 * 512
    assert layout.blocks_per_request(32768, 8192) == 31 + 3


def test_qwen3_next_hybrid_pages_tp1_bf16_hand_computed():
    a = arch("Qwen/Qwen3-Next-80B-A3B-Instruct")
    state = (8192 * 3 + 32 * 128 * 128) * 2  # conv (2*16*128 + 32*128) x 3 + ssm 32 x 128 x 128, bf16
    assert mamba_page_bytes(a, 1, 2) == state == 1_097_728
    layout = build_layout(a, range(48), 1, "auto", 2, 2, 16, 3)
    per_token = 2 * 2 * 256 * 2
    assert layout.block_size == 16 * -(-state // (16 * per_token)) == 544
    assert all(g.spec.page_bytes == 544 * per_token for g in layout.groups)
    # prefix caching ("align" mode) holds 3 state pages per linear-attention group
    assert layout.blocks_per_request(4096, 16384) == -(-4096 // 544) + 3 * 3


def test_chunked_local_attention_disables_the_hybrid_manager():
    a = arch("meta-llama/Llama-4-Scout-17B-16E-Instruct")
    layout = build_layout(a, range(48), 1, "auto", 2, 2, 16, 1)
    assert layout.hybrid_manager_disabled
    assert [g.spec.kind for g in layout.groups] == ["full"]
    assert layout.bytes_per_block == 48 * 2 * 16 * 8 * 128 * 2


def test_estimated_max_model_len_single_group_formula():
    a = arch("meta-llama/Llama-3.1-8B-Instruct")
    layout = build_layout(a, range(32), 1, "auto", 2, 2, 16, 1)
    kv = 5 * GIB + 12345
    blocks = kv // layout.bytes_per_block
    fit = check_fit(layout, kv, 131_072, 4096, reserve_null_block=True)
    assert not fit.fits
    assert fit.estimated_max_model_len == (blocks - 1) * 16
    assert estimate_max_model_len(layout, 0, 1000, 4096) == 0


def _settings(**kw) -> TwinSettings:
    base = dict(tensor_parallel_size=1, pipeline_parallel_size=1, dtype="bfloat16", kv_cache_dtype="auto",
                max_model_len=131072, max_model_len_upper=131072, gpu_memory_utilization=0.92,
                max_num_seqs=256, max_num_batched_tokens=2048)
    base.update(kw)
    return TwinSettings(**base)


def test_does_not_fit_message_is_vllms_text():
    a = arch("meta-llama/Llama-3.1-8B-Instruct")
    result = evaluate(a, lookup_gpu("RTX 4090"), _settings(), resolve_profile(None))
    assert not result.fits
    w = result.binding
    check = w.kv_cache_bytes - w.layout.bytes_per_block
    estimated = (w.kv_cache_bytes // w.layout.bytes_per_block - 1) * 16
    assert result.estimated_max_model_len == estimated
    assert result.error == (
        "To serve at least one request with the model's max seq len (131072), (16.00 GiB KV cache is needed, "
        f"which is larger than the available KV cache memory ({round(check / GIB, 2):.2f} GiB). Based on the "
        f"available memory, the estimated maximum model length is {estimated}. Try increasing "
        "`gpu_memory_utilization` (which also controls CPU memory on the CPU backend) or decreasing "
        "`max_model_len` when initializing the engine. See "
        "https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details."
    )
    assert result.kv_cache_tokens == 0


def test_auto_fit_takes_the_largest_length_that_fits():
    a = arch("meta-llama/Llama-3.1-8B-Instruct")
    result = evaluate(a, lookup_gpu("RTX 4090"), _settings(max_model_len=None), resolve_profile(None))
    assert result.fits
    w = result.binding
    assert result.max_model_len == (w.kv_cache_bytes // w.layout.bytes_per_block - 1) * 16
    assert any("Auto-fit" in x for x in result.warnings)


def test_kv_cache_memory_bytes_ignores_utilization_and_graphs():
    a = arch("meta-llama/Llama-3.1-8B-Instruct")
    gpu, profile = lookup_gpu("H100"), resolve_profile(None)
    fixed = 10 * GIB
    for util in (0.5, 0.9):
        r = evaluate(a, gpu, _settings(max_model_len=8192, gpu_memory_utilization=util,
                                       kv_cache_memory_bytes=fixed), profile)
        assert r.binding.kv_cache_bytes == fixed
        assert r.num_blocks == fixed // (2 * 1024 * 1024)


def test_enforce_eager_drops_the_cuda_graph_estimate():
    a = arch("meta-llama/Llama-3.1-8B-Instruct")
    gpu, profile = lookup_gpu("H100"), resolve_profile("0.33")
    graphs = evaluate(a, gpu, _settings(max_model_len=8192), profile).binding
    eager = evaluate(a, gpu, _settings(max_model_len=8192, enforce_eager=True), profile).binding
    assert graphs.cuda_graph_bytes > 0 and eager.cuda_graph_bytes == 0
    assert eager.kv_cache_bytes - graphs.kv_cache_bytes == graphs.cuda_graph_bytes
    # 0.10-0.20 do not subtract it
    old = resolve_profile("0.11")
    assert (evaluate(a, gpu, _settings(max_model_len=8192), old).binding.kv_cache_bytes
            == evaluate(a, gpu, _settings(max_model_len=8192, enforce_eager=True), old).binding.kv_cache_bytes)


def test_free_memory_check_uses_vllms_text():
    a = arch("meta-llama/Llama-3.1-8B-Instruct")
    gpu = lookup_gpu("H100")
    r = evaluate(a, gpu, _settings(max_model_len=8192, free_memory_bytes=60 * GIB), resolve_profile(None))
    assert not r.fits
    assert r.error == (
        "Free memory on device cuda:0 (60.00/79.18 GiB) on startup is less than desired GPU memory utilization "
        "(0.92, 72.84 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes."
    )


@pytest.mark.parametrize("pp", [2, 3])
def test_pipeline_parallel_capacity_is_the_minimum_over_stages(pp):
    a = arch("meta-llama/Llama-3.1-8B-Instruct")
    r = evaluate(a, lookup_gpu("H100"), _settings(max_model_len=8192, pipeline_parallel_size=pp),
                 resolve_profile(None))
    assert len(r.workers) == pp
    assert r.num_blocks == min(w.num_blocks for w in r.workers)
    assert sum(len(w.layers) for w in r.workers) == a.num_layers
    # the first stage holds the embedding, the last the LM head and the sampler peak
    assert r.workers[-1].activation_peak_bytes > r.workers[0].activation_peak_bytes


def test_mamba2_hybrid_page_with_fp32_ssm_state_nemotron_h():
    cfg = {"model_type": "nemotron_h", "hidden_size": 4096, "num_hidden_layers": 6, "num_attention_heads": 32,
           "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 131072, "intermediate_size": 21504,
           "hybrid_override_pattern": "M-M*-M", "mamba_num_heads": 128, "mamba_head_dim": 64, "n_groups": 8,
           "ssm_state_size": 128, "conv_kernel": 4, "max_position_embeddings": 8192}
    a = parse_architecture(cfg)
    conv = 3 * (128 * 64 + 2 * 8 * 128) * 2  # (kernel-1) x (intermediate + 2 groups x state), bf16
    ssm = 128 * 64 * 128 * 4  # heads x head_dim x state, fp32 for NemotronH
    assert mamba_page_bytes(a, 1, 2) == conv + ssm == 4_255_744
    layout = build_layout(a, range(6), 1, "auto", 2, 2, 16, 1)
    per_token = 2 * 8 * 128 * 2
    assert layout.block_size == 16 * -(-(conv + ssm) // (16 * per_token))
    # 3 Mamba layers + 1 attention layer: group size 1 -> 4 groups, no padding
    assert len(layout.groups) == 4 and layout.padding_layers == 0
    assert layout.bytes_per_block == layout.block_size * per_token
    # TP 2: heads and groups split; groups stay whole when n_groups % tp == 0
    assert mamba_page_bytes(a, 2, 2) == (3 * (128 * 64 + 2 * 8 * 128) // 2) * 2 + 64 * 64 * 128 * 4


def test_old_profile_messages_and_no_null_block_reserve():
    a = arch("meta-llama/Llama-3.1-8B-Instruct")
    old = resolve_profile("0.11.0")
    result = evaluate(a, lookup_gpu("RTX 4090"), _settings(gpu_memory_utilization=0.9), old)
    w = result.binding
    assert not result.fits
    estimated = (w.kv_cache_bytes // w.layout.bytes_per_block) * 16  # no block held back before 0.29
    assert result.estimated_max_model_len == estimated
    assert result.error == (
        "To serve at least one request with the models's max seq len (131072), (16.00 GiB KV cache is needed, "
        f"which is larger than the available KV cache memory ({round(w.kv_cache_bytes / GIB, 2):.2f} GiB). Based on "
        f"the available memory, the estimated maximum model length is {estimated}. Try increasing "
        "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine. See "
        "https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details."
    )
