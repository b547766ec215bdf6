"""benchmarks/perf_accuracy.py replays inference-perf runs with the tokens the server generated.

Those runs send ``ignore_eos`` with one ``max_tokens``, so vLLM generates exactly that many tokens per request;
the client counts fewer for Llama-2-7B (it re-tokenizes the streamed text, and the end-of-sequence tokens the
base model keeps emitting print as nothing). The replay, the derived TPOT and the output-throughput reference must
all use the generated count, or the replay runs shorter requests (less concurrency) than the server did.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "perf_accuracy.py"


@pytest.fixture(scope="module")
def perf_accuracy():
    spec = importlib.util.spec_from_file_location("perf_accuracy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their module by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def _case(module, case_id: str) -> dict:
    cases = json.loads(module.CASES_FILE.read_text())["cases"]
    return next(c for c in cases if c["id"] == case_id)


def test_a_run_whose_client_undercounts_is_replayed_with_the_generated_tokens(perf_accuracy):
    case = _case(perf_accuracy, "blis-training-llama-2-7b-tp1-codegen-stage1")
    b, r, extra = case["benchmark"], case["results"], case["results_extra"]
    assert b["ignore_eos"] and extra["output_len_mean"] < 0.8 * b["output_len"]  # the undercount this is about
    replay = perf_accuracy.replay_for(case)
    assert replay.load.random_output_len == b["output_len"] == 247
    assert replay.tpot_reference == pytest.approx((r["median_e2el_ms"] - r["median_ttft_ms"]) / 246)
    assert replay.output_throughput_reference == pytest.approx(r["request_throughput"] * 247)
    assert replay.output_throughput_reference > 1.2 * r["output_token_throughput"]


def test_a_vllm_bench_serve_run_keeps_its_printed_references(perf_accuracy):
    case = _case(perf_accuracy, "gpustack-glm-4.x-h200-vllm-random-2000in-100out")
    replay = perf_accuracy.replay_for(case)
    assert replay.tpot_source == "printed"
    assert replay.tpot_reference == case["results"]["median_tpot_ms"]
    assert replay.output_throughput_reference == case["results"]["output_token_throughput"]
