"""Weights per GPU worker: TP sharding, KV replication, vocab padding, tied embeddings, MoE and EP, PP."""

from __future__ import annotations

import json
from pathlib import Path

from planner_service.engine.architecture import parse_architecture
from planner_service.engine.weights import pp_layer_ranges, total_params, weights_per_rank

FIXTURES = Path(__file__).parent / "fixtures" / "engine" / "model-configs"
GIB = 1 << 30


def arch(name: str, **changes):
    cfg = json.loads((FIXTURES / name / "config.json").read_text())
    cfg.update(changes)
    return parse_architecture(cfg)


def rank(a, tp=1, layers=None, first=True, last=True, ep=False, dt=2):
    return weights_per_rank(a, dt, tp, layers if layers is not None else range(a.num_layers), first, last, ep)


def test_parameter_counts_match_published_ones():
    assert total_params(arch("meta-llama/Llama-3.1-8B-Instruct"))[0] == 8_030_261_248
    assert total_params(arch("Qwen/Qwen3-0.6B"))[0] == 596_049_920  # tied embeddings counted once
    full, active = total_params(arch("Qwen/Qwen3-30B-A3B"))
    assert round(full / 1e9, 1) == 30.5 and 3.3e9 < active < 3.4e9  # 3.3B active + embeddings


def test_llama_8b_bytes_equal_model_loading_took():
    a = arch("meta-llama/Llama-3.1-8B-Instruct")
    # 8,030,261,248 params x 2 B + the 131072 x 128 bf16 rotary cache
    assert rank(a).bytes == 8_030_261_248 * 2 + 131072 * 128 * 2
    assert round(rank(a).bytes / GIB, 2) == 14.99


def test_vocab_is_padded_to_64_and_split_by_tp():
    a = arch("meta-llama/Llama-3.1-8B-Instruct", vocab_size=128_001)
    b = arch("meta-llama/Llama-3.1-8B-Instruct", vocab_size=128_064)
    assert rank(a).params == rank(b).params
    emb_tp1 = rank(a, layers=range(0), last=False).params
    emb_tp4 = rank(a, tp=4, layers=range(0), last=False).params
    assert emb_tp1 == 128_064 * 4096 and emb_tp4 == emb_tp1 // 4


def test_tied_embeddings_stored_once_except_across_pp_stages():
    a = arch("Qwen/Qwen3-0.6B")
    untied = arch("Qwen/Qwen3-0.6B", tie_word_embeddings=False)
    emb = 151_936 * 1024
    assert rank(untied).params - rank(a).params == emb
    first, last = pp_layer_ranges(a.num_layers, 2)
    stage0 = rank(a, layers=first, first=True, last=False).params
    stage1 = rank(a, layers=last, first=False, last=True).params
    assert stage0 + stage1 == rank(untied).params  # under PP the tied head is a second copy


def test_kv_projection_replicated_when_tp_exceeds_kv_heads():
    a = arch("Qwen/Qwen2-7B-Instruct")  # 28 heads, 4 KV heads
    attn = lambda tp: rank(a, tp=tp, layers=range(1), first=False, last=False).params  # noqa: E731
    # tp 4 -> 1 KV head per rank; tp 8 would also be 1 (replicated), so k/v per rank stop shrinking
    assert attn(2) > attn(4)
    kv_tp4 = 2 * 3584 * 128  # k and v of one head
    q_o_tp4 = 2 * 3584 * (28 // 4) * 128
    mlp_tp4 = 3 * 3584 * (18944 // 4)
    assert attn(4) == kv_tp4 + q_o_tp4 + mlp_tp4 + (28 // 4 + 2) * 128 + 2 * 3584


def test_moe_with_and_without_expert_parallel():
    a = arch("Qwen/Qwen3-30B-A3B")  # 128 experts
    tp4 = rank(a, tp=4).bytes
    ep4 = rank(a, tp=4, ep=True).bytes
    assert abs(tp4 - ep4) / tp4 < 0.01  # 32 whole experts vs 1/4 of each: same bytes when E % ep == 0
    odd = arch("Qwen/Qwen3-30B-A3B", num_experts=130)
    assert rank(odd, tp=4, ep=True).bytes > rank(odd, tp=4).bytes  # rank 0 holds 33 experts


def test_quantized_checkpoints_are_smaller_by_their_format():
    bf16 = arch("Qwen/Qwen3-235B-A22B-FP8", quantization_config=None)
    fp8 = arch("Qwen/Qwen3-235B-A22B-FP8")
    ratio = rank(fp8, tp=4).bytes / rank(bf16, tp=4).bytes
    assert 0.50 < ratio < 0.52  # linears at 1 B + block scales; embeddings, norms, routers stay bf16
    mx = arch("openai/gpt-oss-120b")
    assert round(rank(mx).bytes / GIB, 1) == 65.9  # "Model loading took 65.9651 GiB" (H100, Marlin MXFP4)


def test_pp_layer_split():
    assert [len(r) for r in pp_layer_ranges(27, 2)] == [14, 13]
    assert [len(r) for r in pp_layer_ranges(32, 3)] == [11, 11, 10]
    assert [len(r) for r in pp_layer_ranges(61, 4)] == [15, 15, 16, 15]
