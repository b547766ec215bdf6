"""Model inputs beyond HF config.json: Mistral-format folders, GPT-2-style keys, ModelOpt's hf_quant_config.json,
and the older popular models the bundled catalog gained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.metadata.builders import write_hf_cache_repo, write_safetensors
from helpers.paths import MODEL_CONFIGS
from planner_service.api import run_plan
from planner_service.engine.architecture import parse_architecture
from planner_service.engine.models import HardwareOptions, ModelOptions, PlanRequest
from planner_service.engine.weights import total_params, weights_per_rank
from planner_service.metadata.catalog import list_catalog, load_catalog_source
from planner_service.metadata.hf_cache import load_from_hf_cache
from planner_service.metadata.local import Confinement, load_local_folder

CATALOG_DIR = Path(__file__).resolve().parents[1] / "planner_service" / "metadata" / "catalog"

# params.json of mistralai/Mistral-7B-Instruct-v0.3 (the Mistral-format twin of the HF config in
# shared/model-configs; written here from that repo's layout).
MISTRAL_7B_PARAMS = {"dim": 4096, "n_layers": 32, "head_dim": 128, "hidden_dim": 14336, "n_heads": 32,
                     "n_kv_heads": 8, "norm_eps": 1e-05, "vocab_size": 32768, "rope_theta": 1000000.0}
MIXTRAL_PARAMS = {"dim": 4096, "n_layers": 32, "head_dim": 128, "hidden_dim": 14336, "n_heads": 32, "n_kv_heads": 8,
                  "norm_eps": 1e-05, "vocab_size": 32000, "rope_theta": 1e6,
                  "moe": {"num_experts": 8, "num_experts_per_tok": 2}}


def hf_config(path: str) -> dict:
    return json.loads((MODEL_CONFIGS / path / "config.json").read_text())


def mistral_folder(tmp_path, params: dict, *, with_config: dict | None = None, dtype: str = "BF16"):
    folder = tmp_path / "mistral-model"
    folder.mkdir()
    (folder / "params.json").write_text(json.dumps(params))
    write_safetensors(folder / "consolidated.safetensors", {"tok_embeddings.weight": (dtype, [32, 16])},
                      with_data=False)
    if with_config is not None:
        (folder / "config.json").write_text(json.dumps(with_config))
    return folder


def rank_bytes(config: dict, tp: int = 1) -> float:
    arch = parse_architecture(config)
    return weights_per_rank(arch, 2, tp, range(arch.num_layers), True, True).bytes


def test_mistral_format_folder_is_read_like_vllms_mistral_parser(tmp_path):
    folder = mistral_folder(tmp_path, MISTRAL_7B_PARAMS)
    source = load_local_folder(folder, name=str(folder), confinement=Confinement(None))
    config = source.config
    assert config["architectures"] == ["MistralForCausalLM"] and config["hidden_size"] == 4096
    assert config["max_position_embeddings"] == 128_000  # neither file states it: vLLM's default
    assert config["dtype"] == "bfloat16"  # inferred from consolidated*.safetensors
    assert source.safetensors is not None and "BF16" in source.safetensors.parameters_by_dtype
    # the same architecture as the HF config of the same model: the same bytes per rank (at the same
    # max_position_embeddings, which sizes vLLM's rotary cos/sin cache)
    same_length = {**hf_config("mistralai/Mistral-7B-Instruct-v0.3"), "max_position_embeddings": 128_000}
    assert rank_bytes(config) == rank_bytes(same_length)


def test_params_json_wins_over_config_json_and_borrows_its_missing_fields(tmp_path):
    hf = hf_config("mistralai/Mistral-7B-Instruct-v0.3")
    folder = mistral_folder(tmp_path, MISTRAL_7B_PARAMS, with_config=hf)
    config = load_local_folder(folder, name="m", confinement=Confinement(None)).config
    assert config["model_type"] == "transformer"  # from params.json, as vLLM's parser sets it
    assert config["max_position_embeddings"] == hf["max_position_embeddings"]  # from config.json
    assert parse_architecture(config).derived_max_model_len == hf["max_position_embeddings"]


def test_mistral_format_moe_is_mixtral(tmp_path):
    folder = mistral_folder(tmp_path, MIXTRAL_PARAMS)
    config = load_local_folder(folder, name="m", confinement=Confinement(None)).config
    assert config["architectures"] == ["MixtralForCausalLM"]
    arch = parse_architecture(config)
    assert arch.moe.num_experts == 8 and arch.moe.experts_per_token == 2
    assert rank_bytes(config, 2) == pytest.approx(rank_bytes({**hf_config("mistralai/Mixtral-8x7B-Instruct-v0.1"),
                                                             "max_position_embeddings": 128_000}, 2))


def test_mistral_format_in_the_hf_cache(tmp_path):
    params = json.dumps(MISTRAL_7B_PARAMS).encode()
    shard = (tmp_path / "c.safetensors")
    write_safetensors(shard, {"output.weight": ("BF16", [32, 16])}, with_data=False)
    write_hf_cache_repo(tmp_path / "hub", "mistralai/Mistral-7B-Instruct-v0.3",
                        {"params.json": params, "consolidated.safetensors": shard.read_bytes()}, commit="a" * 40)
    source = load_from_hf_cache("mistralai/Mistral-7B-Instruct-v0.3", revision=None, cache_dir=tmp_path / "hub")
    assert source is not None and source.source == "hf-cache"
    assert source.config["architectures"] == ["MistralForCausalLM"]


def test_gpt2_style_keys_are_understood():
    # openai-community/gpt2 config.json (GPT2Config's own key names)
    gpt2 = {"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
            "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12, "n_positions": 1024, "vocab_size": 50257,
            "layer_norm_epsilon": 1e-05, "bos_token_id": 50256, "eos_token_id": 50256}
    arch = parse_architecture(gpt2)
    assert (arch.num_layers, arch.hidden_size, arch.num_attention_heads, arch.intermediate_size) == (12, 768, 12, 3072)
    assert arch.derived_max_model_len == 1024 and arch.tie_word_embeddings and not arch.gated_mlp
    params, _ = total_params(arch)
    assert params == pytest.approx(124_439_808, rel=2e-3)  # GPT-2 small (biases aside)


def test_modelopt_hf_quant_config_is_applied_like_vllm(tmp_path):
    source = load_catalog_source("nvidia/Llama-3.1-70B-Instruct-FP8")
    assert source is not None and source.config["quantization_config"]["quantization"]["quant_algo"] == "FP8"
    quant = parse_architecture(source.config).quantization
    assert quant.method == "modelopt" and quant.kind == "fp8" and quant.kv_cache_fp8
    # and from a local folder with the file beside config.json
    folder = tmp_path / "modelopt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(hf_config("meta-llama/Llama-3.1-70B-Instruct")))
    (folder / "hf_quant_config.json").write_text(json.dumps(source.config["quantization_config"]))
    local = load_local_folder(folder, name="m", confinement=Confinement(None))
    assert parse_architecture(local.config).quantization.method == "modelopt"


@pytest.mark.parametrize("model_id", ["meta-llama/Meta-Llama-3.1-405B", "meta-llama/Meta-Llama-3.1-70B",
                                      "meta-llama/Meta-Llama-3.1-8B", "mistralai/Mixtral-8x22B-v0.1",
                                      "mistralai/Mixtral-8x7B-v0.1", "Qwen/Qwen3-1.7B", "Qwen/Qwen3-32B-FP8",
                                      "Qwen/Qwen3-30B-A3B-FP8", "nvidia/Llama-3.1-70B-Instruct-FP8"])
def test_added_catalog_models_have_provenance_and_plan(model_id):
    entry = next(e for e in list_catalog() if e.id == model_id)
    assert entry.verified == "partial" and entry.verbatim
    arch = parse_architecture(load_catalog_source(model_id).config)
    assert arch.num_layers > 0
    params, _ = total_params(arch)
    expected = {"meta-llama/Meta-Llama-3.1-405B": 405.9e9, "mistralai/Mixtral-8x22B-v0.1": 140.6e9,
                "mistralai/Mixtral-8x7B-v0.1": 46.7e9, "meta-llama/Meta-Llama-3.1-8B": 8.03e9}.get(model_id)
    if expected:  # parameter counts the model cards state
        assert params == pytest.approx(expected, rel=0.01)


def _partial_rebuild_config(model_id: str, architecture: str, tmp_path, monkeypatch) -> dict:  # noqa: ANN001
    """A package-registry partial rebuild: indexed as such, its provenance covering the keys it writes; offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    entry = next(e for e in list_catalog() if e.id == model_id)
    assert entry.architecture == architecture and entry.verified == "partial" and not entry.verbatim
    provenance = json.loads((CATALOG_DIR / model_id / "provenance.json").read_text())
    config = load_catalog_source(model_id).config
    assert provenance["source_kind"] == "package-registry" and len(provenance["sources"]) >= 2
    assert set(provenance["verified_keys"]) | set(provenance["single_source_arch_keys"]) <= set(config)
    return config


def test_yi_34b_plans_offline_from_the_catalog(tmp_path, monkeypatch):
    """01-ai/Yi-34B: six shape keys agreed by three files xinference 4.1.0's collector read (HF config.json at a
    pinned revision, the ModelScope copy, a GGUF header); the rest are stated planning assumptions."""
    config = _partial_rebuild_config("01-ai/Yi-34B", "LlamaForCausalLM", tmp_path, monkeypatch)
    arch = parse_architecture(config)
    assert (arch.num_kv_heads, arch.head_dim) == (8, 128)  # GQA 56/8, 7168 / 56
    h, inter, vocab, layers, kv = 7168, 20480, 64000, 60, 8 * 128
    by_hand = 2 * vocab * h + h + layers * (h * h + 2 * h * kv + h * h + 3 * h * inter + 2 * h)
    assert total_params(arch)[0] == by_hand == pytest.approx(34.39e9, rel=0.001)  # the published 34B
    response = run_plan(PlanRequest(model=ModelOptions(model="01-ai/Yi-34B"), hardware=HardwareOptions(gpu="H100")))
    assert response.model.source == "catalog" and response.config.max_model_len == 4096
    assert response.feasibility.fits and response.config.tensor_parallel_size == 1  # 64 GiB of bf16 on 80 GB
    # KV per token: 60 layers x 8 KV heads x 128 x (K + V) x 2 bytes
    per_token = response.feasibility.per_gpu.kv_cache_bytes / response.feasibility.kv_cache_tokens
    assert per_token == pytest.approx(60 * 8 * 128 * 2 * 2, rel=0.01)


def test_qwen_v1_config_is_read_like_vllms_qwen_py():
    """QWenLMHeadModel (model_type qwen): config.json's intermediate_size is twice the gated MLP width
    (vLLM's qwen.py: ``QWenMLP(hidden_size, config.intermediate_size // 2)``), c_attn carries a bias,
    head_dim is hidden_size // num_attention_heads and the length comes from ``seq_length``."""
    config = load_catalog_source("Qwen/Qwen-7B").config
    arch = parse_architecture(config)
    assert arch.architectures == ("QWenLMHeadModel",) and arch.model_type == "qwen"
    assert arch.intermediate_size == config["intermediate_size"] // 2 == 11008
    assert arch.attention_bias and arch.gated_mlp and not arch.tie_word_embeddings
    assert (arch.num_kv_heads, arch.head_dim) == (32, 128)  # MHA: Qwen v1 has no num_key_value_heads key
    assert arch.derived_max_model_len == 8192 and arch.max_len_source == "seq_length"
    h, inter, vocab, layers = 4096, 11008, 151936, 32
    by_hand = 2 * vocab * h + h + layers * (h * 3 * h + 3 * h + h * h + 3 * h * inter + 2 * h)
    assert total_params(arch)[0] == by_hand
    # another family with the same keys keeps its intermediate_size as stated
    assert parse_architecture({**config, "model_type": "llama", "architectures": ["LlamaForCausalLM"]}
                              ).intermediate_size == 22016


def test_qwen_7b_plans_offline_from_the_catalog(tmp_path, monkeypatch):
    _partial_rebuild_config("Qwen/Qwen-7B", "QWenLMHeadModel", tmp_path, monkeypatch)
    response = run_plan(PlanRequest(model=ModelOptions(model="Qwen/Qwen-7B"), hardware=HardwareOptions(gpu="L4")))
    assert response.model.source == "catalog" and response.model.architecture == "QWenLMHeadModel"
    assert response.model.num_params == pytest.approx(7.72e9, rel=0.01)  # the model card's 7.72B
    assert response.feasibility.fits and response.config.tensor_parallel_size == 1  # one 24 GB L4
    assert response.config.max_model_len == 8192
