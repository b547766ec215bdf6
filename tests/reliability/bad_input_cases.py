"""The table of malformed ``PlannerService.Plan`` requests of ``tests/test_bad_input.py``.

Each row: an id, a builder of the raw protobuf request (what any gRPC client can send, so the
pydantic validation of the SDK cannot hide a server-side gap), the acceptable status codes and,
for rows the current code answers wrongly, ``bug``: the row becomes a strict xfail naming the defect.
Local-folder rows refer to the model root of ``reliability.helpers.make_model_root``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable

import grpc

from reliability.helpers import CATALOG_MODEL, MODEL_CONFIGS, qwen3_8b_config
from vllm_planner.v1 import planner_pb2

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED

@dataclass(frozen=True)
class Case:
    id: str
    request: Callable[[], planner_pb2.PlanRequest]
    expect: frozenset  # acceptable status codes (most rows allow exactly one)
    bug: str | None = None  # set when the current code answers wrongly: the row is a strict xfail


def plan_request(model: str = CATALOG_MODEL, **sections) -> Callable[[], planner_pb2.PlanRequest]:
    model_fields = {"model": model, **sections.pop("model_fields", {})}
    sections.setdefault("hardware", planner_pb2.HardwareOptions(gpu="H100"))  # the engine has no default GPU
    return lambda: planner_pb2.PlanRequest(model=planner_pb2.ModelOptions(**model_fields), **sections)


def _inline_text(text: str) -> Callable[[], planner_pb2.PlanRequest]:
    return lambda: planner_pb2.PlanRequest(model=planner_pb2.ModelOptions(model="inline", config_json=text),
                                           hardware=planner_pb2.HardwareOptions(gpu="H100"))


def _inline(base: Callable[[], dict] = qwen3_8b_config, **changes) -> Callable[[], planner_pb2.PlanRequest]:
    """A real config.json (Qwen3-8B by default) with ``changes`` applied (``None`` deletes the key)."""
    def build() -> planner_pb2.PlanRequest:
        config = base()
        for key, value in changes.items():
            if value is None:
                config.pop(key, None)
            else:
                config[key] = value
        return planner_pb2.PlanRequest(model=planner_pb2.ModelOptions(model="inline", config_json=json.dumps(config)),
                                       hardware=planner_pb2.HardwareOptions(gpu="H100"))
    return build


def _moe() -> dict:
    return json.loads((MODEL_CONFIGS / "Qwen" / "Qwen3-30B-A3B" / "config.json").read_text())


def _mistral() -> dict:  # honours sliding_window
    return json.loads((MODEL_CONFIGS / "mistralai" / "Mistral-7B-Instruct-v0.3" / "config.json").read_text())


def _hw(**fields) -> Callable[[], planner_pb2.PlanRequest]:
    if "gpu" not in fields and "vram_gb" not in fields:
        fields["gpu"] = "H100"
    return plan_request(hardware=planner_pb2.HardwareOptions(**fields))


def _policy(**fields) -> Callable[[], planner_pb2.PlanRequest]:
    return plan_request(policy=planner_pb2.PolicyOptions(**fields))


def _workload(**fields) -> Callable[[], planner_pb2.PlanRequest]:
    return plan_request(workload=planner_pb2.WorkloadOptions(**fields))


def _engine(**fields) -> Callable[[], planner_pb2.PlanRequest]:
    return plan_request(engine=planner_pb2.EngineOptions(**fields))


def _model(**fields) -> Callable[[], planner_pb2.PlanRequest]:
    return plan_request(model_fields=fields)


def _nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"x": value}
    return value


def C(id: str, request, *codes: grpc.StatusCode, bug: str | None = None) -> Case:  # noqa: N802
    return Case(id, request, frozenset(codes), bug)


NAN, INF = math.nan, math.inf

CASES: list[Case] = [
    # --- model names ---------------------------------------------------------------------------
    C("empty-model-id", plan_request(""), INVALID, NOT_FOUND),
    C("blank-model-id", plan_request("   "), INVALID, NOT_FOUND),
    C("missing-model-section", lambda: planner_pb2.PlanRequest(), INVALID, NOT_FOUND),
    C("unknown-repo-hub-down", plan_request("nobody-at-all/does-not-exist-xyz"), UNAVAILABLE),
    C("invalid-repo-id-chars", plan_request("not a repo!!"), INVALID, NOT_FOUND),
    C("huge-model-id", plan_request("a" * 100_000), INVALID, NOT_FOUND),
    C("nul-in-model-id", plan_request("qwen3-8b\x00/../../etc"), INVALID, NOT_FOUND, DENIED),
    C("bad-revision-traversal", _model(model="some-org/some-model", revision="../../etc"), INVALID),
    C("empty-revision", _model(model="some-org/some-model", revision="  "), INVALID),
    # --- path traversal and confinement (the sentinel lives in ../outside) -------------------
    C("traversal-etc", plan_request("../../etc"), DENIED),
    C("traversal-to-sentinel", plan_request("../outside/secret-model"), DENIED),
    C("traversal-dotdot", plan_request(".."), DENIED),
    C("traversal-through-good-folder", plan_request("qwen3-8b/../../outside/secret-model"), DENIED),
    C("absolute-etc", plan_request("/etc"), DENIED),
    C("absolute-root", plan_request("/"), DENIED),
    C("home-tilde", plan_request("~/models"), DENIED),
    C("symlink-escape-bare", plan_request("escape-link"), DENIED),
    C("symlink-escape-dotslash", plan_request("./escape-link"), DENIED),
    C("symlinked-config-file", plan_request("./linked-config"), DENIED),
    C("symlinked-config-file-bare", plan_request("linked-config"), DENIED),
    C("backslash-traversal", plan_request("..\\..\\etc"), DENIED, NOT_FOUND, INVALID),
    # --- local folders that are not models ----------------------------------------------------
    C("folder-without-config", plan_request("./empty-folder"), NOT_FOUND),
    C("folder-does-not-exist", plan_request("./no-such-folder"), NOT_FOUND),
    C("folder-config-is-a-dir", plan_request("./config-is-dir"), NOT_FOUND, INVALID),
    C("folder-names-a-file", plan_request("./qwen3-8b/config.json"), INVALID),
    C("folder-bad-json", plan_request("./bad-json"), INVALID),
    C("folder-json-is-a-list", plan_request("./list-json"), INVALID),
    C("folder-config-5mib", plan_request("./huge"), INVALID),
    C("folder-config-nested-5000", plan_request("./deep"), INVALID),
    C("folder-zero-layers", plan_request("./zero-layers"), INVALID),
    # --- inline config.json: malformed --------------------------------------------------------
    C("inline-not-json", _inline_text("{not json"), INVALID),
    C("inline-list", _inline_text("[1, 2]"), INVALID),
    C("inline-null", _inline_text("null"), INVALID),
    C("inline-string", _inline_text('"hello"'), INVALID),
    C("inline-empty-object", _inline_text("{}"), INVALID),
    C("inline-empty-text", _inline_text(""), INVALID),
    C("inline-nested-200", _inline(extra=_nested(200)), INVALID),
    C("inline-nested-text-100k", _inline_text("[" * 100_000 + "]" * 100_000), INVALID),
    C("inline-5mib", _inline(pad="x" * (5 << 20)), INVALID),
    # --- inline config.json: adversarial values -----------------------------------------------
    C("layers-zero", _inline(num_hidden_layers=0), INVALID),
    C("layers-negative", _inline(num_hidden_layers=-4), INVALID),
    C("layers-string", _inline(num_hidden_layers="36"), INVALID),
    C("layers-float", _inline(num_hidden_layers=36.5), INVALID),
    C("layers-absurd", _inline(num_hidden_layers=10**30), INVALID),
    C("layers-missing", _inline(num_hidden_layers=None), INVALID),
    C("hidden-zero", _inline(hidden_size=0), INVALID),
    C("hidden-negative", _inline(hidden_size=-4096), INVALID),
    C("hidden-nan", _inline(hidden_size=NAN), INVALID),
    C("hidden-inf", _inline(hidden_size=INF), INVALID),
    C("hidden-bool", _inline(hidden_size=True), INVALID),
    C("hidden-list", _inline(hidden_size=[4096]), INVALID),
    C("heads-zero", _inline(num_attention_heads=0), INVALID),
    C("kv-heads-zero", _inline(num_key_value_heads=0), INVALID),
    C("kv-heads-not-dividing", _inline(num_key_value_heads=5), INVALID),
    C("kv-heads-above-heads", _inline(num_key_value_heads=64), INVALID),
    C("head-dim-negative", _inline(head_dim=-128), INVALID),
    C("vocab-negative", _inline(vocab_size=-1), INVALID),
    C("intermediate-object", _inline(intermediate_size={"a": 1}), INVALID),
    C("max-positions-zero", _inline(max_position_embeddings=0), INVALID),
    C("max-positions-negative", _inline(max_position_embeddings=-1), INVALID),
    C("torch-dtype-unknown", _inline(torch_dtype="int3"), INVALID),
    C("architectures-not-list", _inline(architectures=5), INVALID),
    C("moe-experts-negative", _inline(_moe, num_experts=-8), INVALID),
    C("moe-topk-above-experts", _inline(_moe, num_experts=4, num_experts_per_tok=8), INVALID),
    C("sliding-window-negative", _inline(_mistral, sliding_window=-4096), INVALID),
    C("rope-factor-string", _inline(rope_scaling={"rope_type": "yarn", "factor": "big"}), INVALID),
    C("quant-config-string", _inline(quantization_config="fp8"), INVALID),
    # --- numbers of the request ---------------------------------------------------------------
    C("util-zero", _policy(gpu_memory_utilization=0.0), INVALID),
    C("util-negative", _policy(gpu_memory_utilization=-0.5), INVALID),
    C("util-above-one", _policy(gpu_memory_utilization=1.5), INVALID),
    C("util-nan", _policy(gpu_memory_utilization=NAN), INVALID),
    C("util-inf", _policy(gpu_memory_utilization=INF), INVALID),
    C("overhead-nan", _policy(overhead_gb=NAN), INVALID),
    C("overhead-negative", _policy(overhead_gb=-1.0), INVALID),
    C("fragmentation-multiplier-too-big", _policy(fragmentation_factor=1000.0), INVALID),  # >= 1: seed multiplier
    C("headroom-inf", _policy(headroom_gb=INF), INVALID),
    C("vram-nan", _hw(vram_gb=NAN), INVALID),
    C("vram-negative", _hw(vram_gb=-80.0), INVALID),
    C("vram-inf", _hw(vram_gb=INF), INVALID),
    C("num-gpus-zero", _hw(num_gpus=0), INVALID),
    C("num-gpus-negative", _hw(num_gpus=-8), INVALID),
    C("free-memory-negative", _hw(free_memory_bytes=-1), INVALID),
    C("tp-zero", _hw(tensor_parallel_size=0), INVALID),
    C("tp-3-not-dividing-heads", _hw(tensor_parallel_size=3), INVALID),
    C("tp-7-not-dividing-heads", _hw(tensor_parallel_size=7), INVALID),
    C("tp-absurd", _hw(tensor_parallel_size=1 << 40), INVALID),
    C("pp-zero", _hw(pipeline_parallel_size=0), INVALID),
    C("pp-above-layers", _hw(pipeline_parallel_size=512), INVALID),
    C("params-b-nan", _model(params_b=NAN), INVALID),
    C("params-b-negative", _model(params_b=-7.0), INVALID),
    C("params-b-inf", _model(params_b=INF), INVALID),
    C("max-model-len-zero", _model(max_model_len=0), INVALID),
    C("max-model-len-negative", _model(max_model_len=-5), INVALID),
    C("max-model-len-absurd", _model(max_model_len=1 << 62), INVALID, OK),
    C("prompt-tokens-zero", _workload(prompt_tokens=0), INVALID),
    C("gen-tokens-negative", _workload(gen_tokens=-1), INVALID),
    C("concurrency-zero", _workload(concurrency=0), INVALID),
    C("max-num-seqs-zero", _engine(max_num_seqs=0), INVALID),
    C("max-batched-negative", _engine(max_num_batched_tokens=-1), INVALID),
    C("block-size-zero", _engine(block_size=0), INVALID),
    C("kv-cache-bytes-negative", _engine(kv_cache_memory_bytes=-1), INVALID),
    # --- names and enums ----------------------------------------------------------------------
    C("gpu-unknown", _hw(gpu="Z9000 Ultra"), NOT_FOUND),
    C("gpu-garbage", _hw(gpu="\x00\x01\x02"), NOT_FOUND, INVALID),
    C("dtype-unknown", _model(dtype="int4"), INVALID),
    C("dtype-empty", _model(dtype=""), INVALID),
    C("bf16-on-v100", lambda: planner_pb2.PlanRequest(
        model=planner_pb2.ModelOptions(model=CATALOG_MODEL, dtype="bfloat16"),
        hardware=planner_pb2.HardwareOptions(gpu="T4")), INVALID),
    C("kv-dtype-unknown", _model(kv_cache_dtype="fp3"), INVALID),
    C("quantization-unknown", _model(quantization="bogus-quant"), INVALID),
    C("vllm-version-future", _engine(vllm_version="99.0"), INVALID),
    C("vllm-version-garbage", _engine(vllm_version="not-a-version"), INVALID),
    C("interconnect-enum-99", _hw(interconnect=99), INVALID),
    C("batching-mode-enum-42", _workload(batching_mode=42), INVALID),
    # --- oversized message (server limit 32 MiB) ----------------------------------------------
    C("oversized-40mib", _inline_text('{"pad": "' + "x" * (40 << 20) + '"}'), EXHAUSTED),
]
