"""YAML plan profiles: parsing, validation with dotted field paths, overrides and round trips."""

from __future__ import annotations

import pytest

from planner_service.engine.errors import InvalidRequestError
from planner_service.engine.models import BatchingMode, Interconnect, PlanRequest
from planner_service.engine.profile_yaml import (
    ARTIFACT_KINDS,
    OutputOptions,
    dump_profile,
    load_profile,
    parse_profile_mapping,
)

FULL_PROFILE = """
model:
  model: meta-llama/Llama-3.1-8B-Instruct
  kv_cache_dtype: fp8
  max_model_len: 32768
hardware:
  gpu: H100
  num_gpus: 2
  interconnect: nvlink
  tensor_parallel_size: 2
workload:
  prompt_tokens: 2048
  gen_tokens: 512
  concurrency: 32
  batching_mode: throughput
policy:
  gpu_memory_utilization: 0.9
  headroom_gb: 1.5
engine:
  vllm_version: "0.33"
  max_num_seqs: 256
  enable_prefix_caching: false
  kv_cache_memory_bytes: 21474836480
outputs:
  json: true
  emit: command,k8s
  output_dir: out
"""


def test_full_profile_maps_to_request():
    profile = load_profile(FULL_PROFILE)
    request = profile.to_request()
    assert request.model.model == "meta-llama/Llama-3.1-8B-Instruct"
    assert request.model.max_model_len == 32768
    assert request.hardware.interconnect is Interconnect.NVLINK
    assert request.hardware.tensor_parallel_size == 2
    assert request.workload.batching_mode is BatchingMode.THROUGHPUT
    assert request.policy.headroom_gb == 1.5
    assert request.engine.enable_prefix_caching is False
    assert request.engine.kv_cache_memory_bytes == 20 << 30
    assert request.engine.block_size is None  # unset stays None: the planner recommends
    assert profile.outputs == OutputOptions(json=True, emit=["command", "k8s"], output_dir="out")


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("model: {model: m}\nhardware: {tensor_paralel_size: 2}\n", "hardware.tensor_paralel_size"),
        ("model: {model: m, colour: blue}\n", "model.colour"),
        ("model: {model: m}\nworkloads: {concurrency: 2}\n", "workloads"),
        ("model: {model: m}\noutputs: {jsonn: true}\n", "outputs.jsonn"),
    ],
)
def test_unknown_key_names_its_dotted_path(text, path):
    with pytest.raises(InvalidRequestError) as info:
        load_profile(text)
    assert str(info.value).startswith(f"{path}: unknown key")
    assert [v.field for v in info.value.violations] == [path]
    assert "\n" not in str(info.value)


def test_bad_values_name_the_field():
    with pytest.raises(InvalidRequestError) as info:
        load_profile("model: {model: m}\npolicy: {gpu_memory_utilization: 1.5}\nworkload: {concurrency: 0}\n")
    fields = {v.field for v in info.value.violations}
    assert fields == {"policy.gpu_memory_utilization", "workload.concurrency"}


def test_unknown_artifact_kind_is_refused():
    with pytest.raises(InvalidRequestError, match="outputs.emit: .*unknown artifact kind.*pdf"):
        load_profile("model: {model: m}\noutputs: {emit: [command, pdf]}\n")


def test_yaml_errors_are_one_line_with_position():
    with pytest.raises(InvalidRequestError, match=r"^profile: .* at line 3, column 1$"):
        parse_profile_mapping("model:\n  model: [unclosed\n")
    with pytest.raises(InvalidRequestError, match="top level must be a mapping"):
        parse_profile_mapping("- a\n- b\n")
    with pytest.raises(InvalidRequestError, match="hardware: a section must be a mapping"):
        parse_profile_mapping("hardware: H100\n")


def test_missing_model_is_named():
    with pytest.raises(InvalidRequestError, match="^model: is required"):
        load_profile("hardware: {gpu: H100}\n")
    with pytest.raises(InvalidRequestError, match="^model.model: is required"):
        load_profile("model: {revision: main}\n")


def test_overrides_win_over_the_profile():
    profile = load_profile(FULL_PROFILE, {"hardware": {"tensor_parallel_size": 4}, "outputs": {"json": False}})
    request = profile.to_request()
    assert request.hardware.tensor_parallel_size == 4
    assert request.hardware.num_gpus == 2  # untouched keys keep the profile's value
    assert profile.outputs.json_output is False


def test_round_trip_keeps_only_what_was_set():
    profile = load_profile(FULL_PROFILE)
    text = dump_profile(profile.to_request(), profile.outputs)
    again = load_profile(text)
    assert again.to_request() == profile.to_request()
    assert again.outputs == profile.outputs
    minimal = dump_profile(PlanRequest.model_validate({"model": {"model": "m"}}))
    assert minimal == "model:\n  model: m\n"  # defaults are not written out


def test_empty_text_is_an_empty_profile_and_emit_defaults_to_all():
    assert parse_profile_mapping("") == {}
    assert load_profile("", {"model": {"model": "m"}}).outputs.emit == list(ARTIFACT_KINDS)
