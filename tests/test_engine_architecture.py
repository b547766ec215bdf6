"""The generic config.json reader and the quantization parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner_service.engine.architecture import parse_architecture
from planner_service.engine.errors import InvalidRequestError, UnsupportedArchitectureError
from planner_service.engine.quantization import parse_quantization

FIXTURES = Path(__file__).parent / "fixtures" / "engine" / "model-configs"
SHARED = Path("/work/shared/model-configs")


def cfg(name: str) -> dict:
    return json.loads((FIXTURES / name / "config.json").read_text())


def all_config_paths() -> list[Path]:
    root = SHARED if SHARED.exists() else FIXTURES
    return sorted(root.rglob("config.json"))


@pytest.mark.parametrize("path", all_config_paths(), ids=lambda p: p.parent.name)
def test_every_verified_config_parses(path):
    a = parse_architecture(json.loads(path.read_text()))
    assert a.num_layers == len(a.layer_kinds) > 0
    assert a.head_dim > 0 and a.vocab_size > 0 and a.derived_max_model_len >= 2048


def test_dense_gqa_llama():
    a = parse_architecture(cfg("meta-llama/Llama-3.1-8B-Instruct"))
    assert (a.num_kv_heads, a.head_dim, a.intermediate_size) == (8, 128, 14336)
    assert set(a.layer_kinds) == {"full"} and a.moe is None and a.mla is None
    assert a.derived_max_model_len == 131072  # llama3 rope is taken as already scaled


def test_multimodal_text_config_and_interleaved_sliding_gemma3():
    a = parse_architecture(cfg("google/gemma-3-27b-it"))
    assert a.model_type == "gemma3_text" and a.num_layers == 62
    assert a.layer_kinds.count("sliding") == 52 and a.sliding_window == 1024
    assert [i for i, k in enumerate(a.layer_kinds) if k == "full"][:2] == [5, 11]
    assert a.tie_word_embeddings and a.vision_params > 0
    assert a.derived_max_model_len == 131072  # Gemma 3 skips the linear rope factor


def test_gpt_oss_layer_types_moe_and_mxfp4():
    a = parse_architecture(cfg("openai/gpt-oss-120b"))
    assert a.layer_kinds[:2] == ("sliding", "full") and a.sliding_window == 128
    assert a.moe is not None and (a.moe.num_experts, a.moe.experts_per_token) == (128, 4)
    assert a.quantization.kind == "mxfp4" and not a.quantization.quantizes("attention")


def test_mla_and_dense_first_k_layers_deepseek():
    a = parse_architecture(cfg("deepseek-ai/DeepSeek-V3"))
    assert a.mla is not None and (a.mla.kv_lora_rank, a.mla.qk_rope_head_dim) == (512, 64)
    assert a.moe.moe_layers[:4] == (False, False, False, True)
    assert a.moe.shared_intermediate_size == 2048
    assert a.quantization.kind == "fp8" and a.quantization.block_size == (128, 128)


def test_chunked_local_attention_llama4():
    a = parse_architecture(cfg("meta-llama/Llama-4-Scout-17B-16E-Instruct"))
    assert a.attention_chunk_size == 8192
    assert a.layer_kinds[:4] == ("chunked", "chunked", "chunked", "full")
    assert a.moe.num_experts == 16 and a.intermediate_size == 16384


def test_gated_deltanet_hybrid_qwen3_next():
    a = parse_architecture(cfg("Qwen/Qwen3-Next-80B-A3B-Instruct"))
    assert a.layer_kinds[:4] == ("mamba", "mamba", "mamba", "full")
    assert a.mamba.kind == "gdn" and a.mamba.num_v_heads == 32
    assert a.moe.shared_intermediate_size == 512 and a.head_dim == 256


def test_nemotron_h_and_jamba_patterns():
    nemo = {"model_type": "nemotron_h", "hidden_size": 4096, "num_hidden_layers": 6, "num_attention_heads": 32,
            "num_key_value_heads": 8, "vocab_size": 131072, "intermediate_size": 21504,
            "hybrid_override_pattern": "M-M*-M", "mamba_num_heads": 128, "mamba_head_dim": 64, "n_groups": 8,
            "ssm_state_size": 128, "conv_kernel": 4, "max_position_embeddings": 8192}
    a = parse_architecture(nemo)
    assert a.layer_kinds == ("mamba", "none", "mamba", "full", "none", "mamba")
    assert a.mamba.kind == "mamba2" and a.mamba.ssm_dtype_fp32
    assert a.mlp_layers == (False, True, False, False, True, False)
    jamba = {"model_type": "jamba", "hidden_size": 4096, "num_hidden_layers": 8, "num_attention_heads": 32,
             "num_key_value_heads": 8, "vocab_size": 65536, "intermediate_size": 14336, "attn_layer_period": 8,
             "attn_layer_offset": 4, "num_experts": 16, "num_experts_per_tok": 2, "expert_layer_period": 2,
             "expert_layer_offset": 1, "mamba_d_state": 16, "mamba_d_conv": 4, "mamba_expand": 2}
    j = parse_architecture(jamba)
    assert j.layer_kinds.count("full") == 1 and j.layer_kinds[4] == "full"
    assert j.mamba.kind == "mamba1" and j.mamba.intermediate_size == 8192
    assert j.moe.moe_layers == (False, True) * 4


def test_head_dim_differs_from_hidden_over_heads_and_mqa():
    a = parse_architecture(cfg("google/gemma-2-9b-it"))
    assert a.head_dim == 256 != a.hidden_size // a.num_attention_heads
    falcon = {"model_type": "falcon", "hidden_size": 4544, "num_hidden_layers": 32, "num_attention_heads": 71,
              "vocab_size": 65024, "multi_query": True, "intermediate_size": 18176}
    assert parse_architecture(falcon).num_kv_heads == 1


def test_max_model_len_rules():
    base = {"model_type": "llama", "hidden_size": 1024, "num_hidden_layers": 2, "num_attention_heads": 8,
            "vocab_size": 1000, "intermediate_size": 4096}
    assert parse_architecture({**base, "max_position_embeddings": 4096,
                               "rope_scaling": {"rope_type": "linear", "factor": 4.0}}).derived_max_model_len == 16384
    assert parse_architecture({**base, "max_position_embeddings": 32768,
                               "rope_scaling": {"type": "yarn", "factor": 4.0}}).derived_max_model_len == 32768
    assert parse_architecture({**base, "max_position_embeddings": 8192, "seq_length": 4096}).derived_max_model_len == 4096
    assert parse_architecture({**base, "max_position_embeddings": 8192,
                               "model_max_length": 16384}).derived_max_model_len == 16384
    assert parse_architecture(base).derived_max_model_len == 2048
    longrope = parse_architecture({**base, "max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
                                   "rope_scaling": {"type": "longrope", "long_factor": [1.0], "short_factor": [1.0]}})
    assert (longrope.derived_max_model_len, longrope.default_max_model_len) == (131072, 4096)


def test_unknown_architecture_names_the_missing_fields():
    with pytest.raises(UnsupportedArchitectureError) as err:
        parse_architecture({"model_type": "mystery", "hidden_size": 10})
    message = str(err.value)
    for field in ("num_hidden_layers", "num_attention_heads", "vocab_size"):
        assert field in message
    assert isinstance(err.value, InvalidRequestError)
    with pytest.raises(UnsupportedArchitectureError, match="layer_types"):
        parse_architecture({"model_type": "x", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1,
                            "vocab_size": 8, "intermediate_size": 8, "layer_types": ["weird_attention"]})


def test_quantization_formats():
    awq = parse_quantization({"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128,
                                                      "zero_point": True}})
    # qweight K*N/2 + qzeros (K/g)*N/2 + fp16 scales (K/g)*N*2
    assert awq.linear_bytes(4096, 4096, 2) == 4096 * 4096 / 2 + 32 * 4096 / 2 + 32 * 4096 * 2
    gptq = parse_quantization({"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128}})
    assert gptq.linear_bytes(4096, 4096, 2) == awq.linear_bytes(4096, 4096, 2) + 4 * 4096  # + g_idx
    with pytest.raises(UnsupportedArchitectureError, match="desc_act"):
        parse_quantization({"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128,
                                                    "desc_act": True}})
    fp8 = parse_quantization({"quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}})
    assert fp8.linear_bytes(7168, 2048, 2) == 7168 * 2048 + 4 * 16 * 56
    w8a8 = parse_quantization({"quantization_config": {
        "quant_method": "compressed-tensors", "format": "int-quantized",
        "config_groups": {"g": {"weights": {"num_bits": 8, "type": "int", "strategy": "channel"}}}}})
    assert w8a8.kind == "int8" and w8a8.linear_bytes(1024, 512, 2) == 1024 * 512 + 4 * 512
    w4a16 = parse_quantization({"quantization_config": {
        "quant_method": "compressed-tensors", "format": "pack-quantized",
        "config_groups": {"g": {"weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128,
                                            "symmetric": True}}}}})
    assert w4a16.kind == "wna16" and w4a16.linear_bytes(1024, 512, 2) == 1024 * 512 / 2 + 8 * 512 * 2
    nvfp4 = parse_quantization({"quantization_config": {"quant_method": "modelopt",
                                                        "quantization": {"quant_algo": "NVFP4",
                                                                         "kv_cache_quant_algo": "FP8"}}})
    assert nvfp4.kind == "nvfp4" and nvfp4.kv_cache_fp8
    mx = parse_quantization({"quantization_config": {"quant_method": "mxfp4"}})
    assert mx.linear_bytes(2880, 2880, 2) == 2880 * 2880 * (0.5 + 1 / 32)
    assert parse_quantization({}, "fp8").kind == "fp8"
    with pytest.raises(UnsupportedArchitectureError):
        parse_quantization({"quantization_config": {"quant_method": "bitsandbytes"}})
    with pytest.raises(UnsupportedArchitectureError, match="quant_method"):
        parse_quantization({"quantization_config": {"quant_method": "secret-sauce"}})
