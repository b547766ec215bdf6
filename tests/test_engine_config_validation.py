"""Boundary validation of config.json in ``parse_architecture`` / ``parse_quantization``.

Every real config (shared + fixtures) must still parse; every malformed field must raise
``InvalidRequestError`` naming the dotted path of the field, never crash or plan nonsense.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import pytest

from planner_service.engine.architecture import parse_architecture
from planner_service.engine.errors import InvalidRequestError, UnsupportedArchitectureError

REPO = Path(__file__).resolve().parents[1]
CONFIG_ROOTS = (Path("/work/shared/model-configs"), REPO / "tests" / "fixtures" / "engine" / "model-configs")
REAL_CONFIGS = sorted(p for root in CONFIG_ROOTS if root.is_dir() for p in root.rglob("config.json"))
QWEN3_8B = next(p for p in REAL_CONFIGS if p.parent.name == "Qwen3-8B")
QWEN3_MOE = next(p for p in REAL_CONFIGS if p.parent.name == "Qwen3-30B-A3B")
MISTRAL = next(p for p in REAL_CONFIGS if p.parent.name == "Mistral-7B-Instruct-v0.3")
NESTED = next(p for p in REAL_CONFIGS if "text_config" in json.loads(p.read_text()))
P = "model.config_json."


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _with(path: Path, **changes) -> dict:
    config = _load(path)
    config.update(changes)
    return config


def test_there_are_real_configs_to_check():
    assert len(REAL_CONFIGS) >= 30


@pytest.mark.parametrize("path", REAL_CONFIGS, ids=lambda p: "/".join(p.parts[-3:-1]))
def test_every_real_config_still_parses(path):
    arch = parse_architecture(_load(path))
    assert arch.num_layers >= 1 and arch.hidden_size >= 1
    assert 1 <= arch.num_kv_heads <= arch.num_attention_heads
    assert arch.derived_max_model_len >= 1


BAD = [
    # (id, base, changes, violated field, words the message must contain)
    ("layers-string", QWEN3_8B, {"num_hidden_layers": "36"}, "num_hidden_layers", "integer"),
    ("layers-float", QWEN3_8B, {"num_hidden_layers": 36.5}, "num_hidden_layers", "integer"),
    ("layers-absurd", QWEN3_8B, {"num_hidden_layers": 10**30}, "num_hidden_layers", "10000"),
    ("layers-zero", QWEN3_8B, {"num_hidden_layers": 0}, "num_hidden_layers", "greater than or equal to 1"),
    ("hidden-nan", QWEN3_8B, {"hidden_size": math.nan}, "hidden_size", "integer"),
    ("hidden-inf", QWEN3_8B, {"hidden_size": math.inf}, "hidden_size", "integer"),
    ("hidden-bool", QWEN3_8B, {"hidden_size": True}, "hidden_size", "integer"),
    ("hidden-list", QWEN3_8B, {"hidden_size": [4096]}, "hidden_size", "integer"),
    ("hidden-absurd", QWEN3_8B, {"hidden_size": 2_000_000}, "hidden_size", "1000000"),
    ("kv-heads-zero", QWEN3_8B, {"num_key_value_heads": 0}, "num_key_value_heads", "greater than or equal to 1"),
    ("kv-heads-not-dividing", QWEN3_8B, {"num_key_value_heads": 5}, "num_key_value_heads", "divide"),
    ("kv-heads-above-heads", QWEN3_8B, {"num_key_value_heads": 64}, "num_key_value_heads", "divide"),
    ("vocab-negative", QWEN3_8B, {"vocab_size": -1}, "vocab_size", "greater than or equal to 1"),
    ("vocab-absurd", QWEN3_8B, {"vocab_size": 10**8}, "vocab_size", "10000000"),
    ("intermediate-object", QWEN3_8B, {"intermediate_size": {"a": 1}}, "intermediate_size", "integer"),
    ("positions-zero", QWEN3_8B, {"max_position_embeddings": 0}, "max_position_embeddings", "greater"),
    ("positions-negative", QWEN3_8B, {"max_position_embeddings": -1}, "max_position_embeddings", "greater"),
    ("positions-absurd", QWEN3_8B, {"max_position_embeddings": 10**9}, "max_position_embeddings", "100000000"),
    ("dtype-unknown", QWEN3_8B, {"torch_dtype": "int3"}, "torch_dtype", "bfloat16"),
    ("dtype-number", QWEN3_8B, {"torch_dtype": 16}, "torch_dtype", "string"),
    ("architectures-int", QWEN3_8B, {"architectures": 5}, "architectures", "list"),
    ("architectures-of-ints", QWEN3_8B, {"architectures": [1]}, "architectures", "list"),
    ("topk-above-experts", QWEN3_MOE, {"num_experts": 4, "num_experts_per_tok": 8}, "num_experts_per_tok", "exceeds"),
    ("experts-negative", QWEN3_MOE, {"num_experts": -8}, "num_experts", "greater than or equal to 0"),
    ("sliding-negative", MISTRAL, {"sliding_window": -4096}, "sliding_window", "greater than or equal to 0"),
    ("rope-factor-string", QWEN3_8B, {"rope_scaling": {"rope_type": "yarn", "factor": "big"}},
     "rope_scaling.factor", "number"),
    ("rope-factor-nan", QWEN3_8B, {"rope_scaling": {"rope_type": "linear", "factor": math.nan}},
     "rope_scaling.factor", "finite"),
    ("rope-not-object", QWEN3_8B, {"rope_scaling": "yarn"}, "rope_scaling", "json object"),
    ("layer-types-not-strings", QWEN3_8B, {"layer_types": [1] * 36}, "layer_types.0", "string"),
    ("partial-rotary-above-one", QWEN3_8B, {"partial_rotary_factor": 2.0}, "partial_rotary_factor", "1"),
    ("vision-hidden-string", QWEN3_8B, {"vision_config": {"hidden_size": "1024"}}, "vision_config.hidden_size",
     "integer"),
    ("quant-string", QWEN3_8B, {"quantization_config": "fp8"}, "quantization_config", "json object"),
    ("quant-list", QWEN3_8B, {"quantization_config": ["fp8"]}, "quantization_config", "json object"),
    ("quant-bits-string", QWEN3_8B, {"quantization_config": {"quant_method": "awq", "bits": "4"}},
     "quantization_config.bits", "integer"),
    ("quant-block-short", QWEN3_8B, {"quantization_config": {"quant_method": "fp8", "weight_block_size": [128]}},
     "quantization_config.weight_block_size", "at least 2"),
]


@pytest.mark.parametrize(("base", "changes", "field", "words"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_field_is_rejected_with_its_dotted_path(base, changes, field, words):
    with pytest.raises(InvalidRequestError) as caught:
        parse_architecture(_with(base, **changes))
    fields = [v.field for v in caught.value.violations]
    assert P + field in fields, fields
    violation = next(v for v in caught.value.violations if v.field == P + field)
    assert words.lower() in violation.description.lower(), violation.description
    assert str(caught.value).startswith(P)


def test_nested_text_config_field_path_names_the_sub_config():
    config = _load(NESTED)
    config["text_config"]["hidden_size"] = "big"
    with pytest.raises(InvalidRequestError) as caught:
        parse_architecture(config)
    assert [v.field for v in caught.value.violations] == [P + "text_config.hidden_size"]


def test_every_bad_field_is_reported_at_once():
    config = _with(QWEN3_8B, hidden_size=-1, vocab_size="x", num_hidden_layers=1.5)
    with pytest.raises(InvalidRequestError) as caught:
        parse_architecture(config)
    assert {v.field for v in caught.value.violations} == {P + "hidden_size", P + "vocab_size",
                                                          P + "num_hidden_layers"}
    assert "(+2 more)" in str(caught.value)


def test_missing_required_field_is_unsupported_with_violation():
    config = _load(QWEN3_8B)
    del config["num_attention_heads"]
    with pytest.raises(UnsupportedArchitectureError) as caught:
        parse_architecture(config)
    assert [v.field for v in caught.value.violations] == [P + "num_attention_heads"]


def test_null_optional_fields_and_zero_sliding_window_still_parse():
    # null means "absent" in transformers configs; sliding_window 0 means "no sliding window".
    arch = parse_architecture(_with(MISTRAL, sliding_window=0, head_dim=None, rope_scaling=None))
    assert arch.sliding_window is None
    assert arch.head_dim == arch.hidden_size // arch.num_attention_heads


def test_valid_quantization_still_parses():
    arch = parse_architecture(_with(QWEN3_8B, quantization_config={"quant_method": "awq", "bits": 4,
                                                                  "group_size": 128, "zero_point": True}))
    assert arch.quantization is not None and arch.quantization.kind == "awq" and arch.quantization.bits == 4


def test_parse_does_not_mutate_its_input_and_stays_fast():
    config = _load(REAL_CONFIGS[0])
    before = copy.deepcopy(config)
    start = time.perf_counter()
    for _ in range(200):
        parse_architecture(config)
    per_call_seconds = (time.perf_counter() - start) / 200
    assert config == before
    assert per_call_seconds < 0.005


def test_no_rope_layers_of_the_wrong_length_is_rejected_not_an_index_error():
    with pytest.raises(InvalidRequestError) as caught:
        parse_architecture(_with(QWEN3_8B, attention_chunk_size=8192, no_rope_layers=[1, 0]))
    assert [v.field for v in caught.value.violations] == [P + "no_rope_layers"]
