"""Every quantization method vLLM 0.33 registers, and the checkpoints that declare one.

The registered list is vLLM 0.33.0's ``QuantizationMethods`` Literal
(vllm/model_executor/layers/quantization/__init__.py in the PyPI wheel), copied here as the fact to check
the planner's registry against. Byte counts are checked against the tensor shapes each vLLM method creates
(``create_weights``), computed here from the shapes, not by calling the planner's own formula.
"""

from __future__ import annotations

import json

import pytest

from planner_service.engine.architecture import parse_architecture
from planner_service.engine.errors import InvalidRequestError, UnsupportedArchitectureError
from planner_service.engine.memory import TwinSettings, evaluate
from planner_service.engine.gpus import lookup_gpu
from planner_service.engine.profiles import resolve_profile
from planner_service.engine.quantization import VLLM_QUANTIZATION_METHODS, parse_quantization
from planner_service.engine.weights import weights_per_rank
from planner_service.metadata.catalog import load_catalog_source
from helpers.paths import MODEL_CONFIGS

GIB = 1 << 30
VLLM_033_METHODS = [
    "awq", "auto_awq", "fp8", "fbgemm_fp8", "fp_quant", "modelopt", "modelopt_fp4", "modelopt_mxfp8",
    "modelopt_mixed", "auto_gptq", "gptq", "gptq_marlin", "awq_marlin", "humming", "compressed-tensors",
    "experts_int8", "quark", "moe_wna16", "torchao", "inc", "mxfp4", "gpt_oss_mxfp4", "deepseek_v4_fp8", "online",
    "fp8_per_tensor", "fp8_per_block", "fp8_per_channel", "int8_per_channel_weight_only", "nvfp4_per_token", "mxfp8",
]


def llama_8b() -> dict:
    return json.loads((MODEL_CONFIGS / "meta-llama" / "Llama-3.1-8B-Instruct" / "config.json").read_text())


def test_the_registry_lists_every_method_vllm_033_registers():
    assert sorted(VLLM_QUANTIZATION_METHODS) == sorted(VLLM_033_METHODS)
    assert {how for how, _ in VLLM_QUANTIZATION_METHODS.values()} == {"checkpoint", "selected", "online"}


# One representative quantization_config per method a checkpoint can declare (the keys vLLM's from_config
# reads), and the bytes of one 4096 x 4096 linear it must come to.
K = N = 4096
DECLARED = [
    ("fp8", {"quant_method": "fp8", "weight_block_size": [128, 128]}, K * N + 4 * 32 * 32),
    ("fbgemm_fp8", {"quant_method": "fbgemm_fp8", "modules_to_not_convert": [], "activation_scale_ub": 1200.0},
     K * N + 4 * N),
    ("awq", {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True},
     K * N / 2 + 32 * N * 2 + 32 * N / 2),
    ("gptq", {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False},
     K * N / 2 + 32 * N * 2 + 32 * N / 2 + 4 * K),
    ("compressed-tensors", {"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {
        "num_bits": 8, "type": "float", "strategy": "channel"}}}}, K * N + 4 * N),
    ("quark", {"quant_method": "quark", "export": {"kv_cache_group": [], "pack_method": "reorder"},
               "global_quant_config": {"weight": {"dtype": "fp8_e4m3", "qscheme": "per_tensor"}}}, K * N + 4),
    ("torchao", {"quant_method": "torchao", "quant_type": {"default": {"_type": "Int4WeightOnlyConfig",
                                                                         "_data": {"group_size": 128}}}},
     K * N / 2 + 32 * N * 2 + 32 * N / 2),
    ("inc", {"quant_method": "auto-round", "bits": 4, "group_size": 128, "sym": True,
             "packing_format": "auto_round:auto_gptq"}, K * N / 2 + 32 * N * 2 + 32 * N / 2 + 4 * K),
    ("fp_quant", {"quant_method": "fp_quant", "forward_dtype": "mxfp4"}, K * N / 2 + K * N / 32),
    ("mxfp4", {"quant_method": "mxfp4"}, K * N / 2 + K * N / 32),
    ("mxfp8", {"quant_method": "mxfp8"}, K * N + K * N / 32),
    ("modelopt", {"quant_method": "modelopt", "quantization": {"quant_algo": "FP8"}}, K * N + 4),
    ("modelopt_fp4", {"quant_method": "modelopt", "quantization": {"quant_algo": "NVFP4", "group_size": 16}},
     K * N / 2 + K * N / 16 + 8),
    ("modelopt_mxfp8", {"quant_method": "modelopt", "quantization": {"quant_algo": "MXFP8"}}, K * N + K * N / 32),
    ("modelopt_mixed", {"quant_method": "modelopt", "quantization": {"quant_algo": "MIXED_PRECISION",
     "quantized_layers": {"model.layers.0.mlp": {"quant_algo": "NVFP4"}, "model.layers.1.mlp": {"quant_algo": "NVFP4"},
                          "model.layers.2.mlp": {"quant_algo": "FP8"}}}}, K * N / 2 + K * N / 16 + 8),
]


@pytest.mark.parametrize(("method", "qc", "expected"), DECLARED, ids=[d[0] for d in DECLARED])
def test_each_declarable_method_is_sized_from_its_config(method, qc, expected):
    quant = parse_quantization({**llama_8b(), "quantization_config": qc})
    assert quant.method == method
    assert quant.linear_bytes(K, N, 2) == pytest.approx(expected)


def test_every_checkpoint_method_of_the_registry_is_covered_above():
    declared = {m for m, (how, _) in VLLM_QUANTIZATION_METHODS.items() if how == "checkpoint"}
    assert declared <= {d[0] for d in DECLARED}


@pytest.mark.parametrize("method", ["awq_marlin", "gptq_marlin", "auto_gptq", "moe_wna16", "humming"])
def test_methods_vllm_selects_for_a_checkpoint_are_accepted_with_it(method):
    qc = {"quant_method": "gptq" if "gptq" in method or method in ("moe_wna16", "humming") else "awq",
          "bits": 4, "group_size": 128}
    if method == "awq_marlin":
        qc["quant_method"] = "awq"
    quant = parse_quantization({**llama_8b(), "quantization_config": qc}, method)
    assert quant.kind in ("awq", "gptq")


def test_a_different_method_for_a_quantized_checkpoint_is_refused():
    with pytest.raises(UnsupportedArchitectureError, match="does not match"):
        parse_quantization({**llama_8b(), "quantization_config": {"quant_method": "awq", "bits": 4}}, "fp8")


@pytest.mark.parametrize("method", ["fp8", "fp8_per_tensor", "fp8_per_block", "fp8_per_channel", "mxfp8",
                                    "experts_int8", "int8_per_channel_weight_only", "nvfp4_per_token", "online"])
def test_online_methods_on_an_unquantized_checkpoint(method):
    quant = parse_quantization(llama_8b(), method)
    assert quant is not None and not quant.what_if


def test_a_method_vllm_does_not_register_is_refused_with_the_list():
    with pytest.raises(UnsupportedArchitectureError, match="not a vLLM 0.33 quantization method"):
        parse_quantization(llama_8b(), "squeezellm")
    with pytest.raises(InvalidRequestError, match="group_size"):
        parse_quantization({**llama_8b(), "quantization_config": {"quant_method": "awq", "group_size": [1, 2]}})


# --------------------------------------------------------------------------------------------------
# fbgemm_fp8: Meta's Llama-3.1-405B(-Instruct)-FP8
# --------------------------------------------------------------------------------------------------

def llama_405b_fp8() -> dict:
    """The bundled (verified) Meta-Llama-3.1-405B config with the quantization_config Meta's FP8 release
    carries: fbgemm_fp8, attention of every layer and the MLPs of the first and last layers left in bf16
    (written here from that release's layout; the FP8 repo's config itself could not be verified)."""
    source = load_catalog_source("meta-llama/Meta-Llama-3.1-405B")
    assert source is not None
    config = dict(source.config)
    keep = [f"model.layers.{i}.self_attn.{p}_proj" for i in range(126) for p in "qkvo"]
    keep += [f"model.layers.{i}.mlp.{p}_proj" for i in (0, 125) for p in ("gate", "up", "down")]
    config["quantization_config"] = {"quant_method": "fbgemm_fp8", "activation_scale_ub": 1200.0,
                                     "modules_to_not_convert": [*keep, "lm_head"]}
    return config


def expected_405b_fp8_rank_bytes(tp: int) -> float:
    """Bytes of one TP rank, from the tensor shapes (bf16 = 2 bytes, fp8 = 1 byte + fp32 per-channel scale)."""
    h, inter, vocab, heads, kv, hd, layers = 16384, 53248, 128256, 128, 8, 128, 126
    embed = 2 * (vocab // tp) * h * 2  # embed_tokens + lm_head (not tied)
    attn = ((h * (heads // tp + 2 * kv // tp) * hd) + (heads // tp * hd) * h) * 2
    mlp_bf16 = 3 * h * inter // tp * 2
    mlp_fp8 = 3 * h * inter // tp + 4 * (2 * inter // tp + h)
    norms = layers * 2 * h * 2 + h * 2
    rope = 131072 * hd * 2
    return embed + layers * attn + 2 * mlp_bf16 + (layers - 2) * mlp_fp8 + norms + rope


def test_llama_405b_fp8_plans_and_weighs_what_its_tensors_weigh():
    arch = parse_architecture(llama_405b_fp8())
    assert arch.quantization.method == "fbgemm_fp8"
    got = weights_per_rank(arch, 2, 8, range(126), True, True).bytes
    assert got == pytest.approx(expected_405b_fp8_rank_bytes(8), rel=1e-9)
    settings = TwinSettings(tensor_parallel_size=8, pipeline_parallel_size=1, dtype="bfloat16",
                            kv_cache_dtype="auto", max_model_len=32768, max_model_len_upper=131072,
                            gpu_memory_utilization=0.92, max_num_seqs=256, max_num_batched_tokens=8192)
    result = evaluate(arch, lookup_gpu("H200"), settings, resolve_profile(None))
    assert result.fits and result.binding.weights_bytes / GIB == pytest.approx(got / GIB, rel=1e-3)


def test_llama_405b_fp8_through_the_cli(capsys, tmp_path, monkeypatch):
    from clients.cli.main import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "Llama-3.1-405B-Instruct-FP8"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(llama_405b_fp8()))
    code = main(["plan", "-m", str(folder), "--gpu", "H100", "--gpus", "8", "--max-model-len", "16k", "--json"])
    reply = json.loads(capsys.readouterr().out)
    assert code == 0 and reply["model"]["quantization"] == "fbgemm_fp8"
    assert reply["config"]["tensor_parallel_size"] == 8 and reply["feasibility"]["fits"]


# --------------------------------------------------------------------------------------------------
# what-if: the seed's -q awq|gptq|int8 on an unquantized checkpoint
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "kind"), [("awq", "awq"), ("gptq", "gptq"), ("int8", "int8")])
def test_what_if_quantization_is_sized_as_that_checkpoint_and_labelled(capsys, monkeypatch, method, kind):
    from clients.cli.main import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    quant = parse_quantization(llama_8b(), method)
    assert quant.what_if and quant.kind == kind
    code = main(["plan", "-m", "meta-llama/Llama-3.1-8B-Instruct", "--gpu", "L4", "-q", method, "--json"])
    reply = json.loads(capsys.readouterr().out)
    assert code == 0
    assert reply["model"]["quantization_what_if"] is True
    assert any(w.startswith("what-if:") for w in reply["feasibility"]["warnings"])
    assert "--quantization" not in reply["artifacts"]["serve_command"]  # the quantized repo declares it
    bf16 = 14.99 * GIB  # Llama-3.1-8B in bf16 ("Model loading took 14.99 GiB", shared calibration)
    ratio = reply["feasibility"]["per_gpu"]["weights_bytes"] / bf16
    assert ratio < (0.6 if kind == "int8" else 0.4)


def test_fp8_on_an_unquantized_checkpoint_is_vllms_own_online_quantization(capsys, monkeypatch):
    from clients.cli.main import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["plan", "-m", "meta-llama/Llama-3.1-8B-Instruct", "--gpu", "L4", "-q", "fp8", "--json"])
    reply = json.loads(capsys.readouterr().out)
    assert code == 0 and reply["model"]["quantization_what_if"] is False
    assert "--quantization fp8" in reply["artifacts"]["serve_command"]
