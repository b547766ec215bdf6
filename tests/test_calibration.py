"""The memory twin against real vLLM startup logs: the acceptance table of benchmarks/accuracy.py."""

from __future__ import annotations

import importlib.util
import statistics
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy.py"
_spec = importlib.util.spec_from_file_location("engine_accuracy", _PATH)
accuracy = importlib.util.module_from_spec(_spec)
assert _spec.loader is not None
sys.modules["engine_accuracy"] = accuracy  # dataclasses look their module up while the file executes
_spec.loader.exec_module(accuracy)


@pytest.fixture(scope="module")
def rows():
    return accuracy.run_table()


def test_every_logged_case_is_either_included_or_excluded_with_a_reason():
    logged = set(accuracy.load_log_cases())
    included = {c.id for c in accuracy.included_cases()}
    excluded = set(accuracy.EXCLUDED)
    assert not included & excluded
    assert logged == included | excluded
    assert all(reason.strip() for reason in accuracy.EXCLUDED.values())


def test_weights_within_two_percent(rows):
    checked = [r for r in rows if r.weights[1] is not None]
    assert len(checked) >= 12
    for r in checked:
        pred, rep = r.weights
        assert abs(pred - rep) / rep <= 0.02, (r.id, pred, rep)


def test_available_kv_memory_median_and_worst(rows):
    errors = {r.id: abs(r.kv[0] - r.kv[1]) for r in rows if r.kv[1] is not None and r.started}
    assert len(errors) >= 12
    assert statistics.median(errors.values()) <= 0.5
    for cid, err in errors.items():
        assert err <= 1.5, (cid, err)


def test_kv_tokens_and_concurrency_median_within_three_percent(rows):
    tokens = [abs(r.tokens[0] - r.tokens[1]) / r.tokens[1] for r in rows if r.started and r.tokens[1]]
    conc = [abs(r.concurrency[0] - r.concurrency[1]) / r.concurrency[1]
            for r in rows if r.started and r.concurrency[1]]
    assert len(tokens) >= 10 and len(conc) >= 10
    assert statistics.median(tokens) <= 0.03
    assert statistics.median(conc) <= 0.03


def test_start_and_refusal_predicted_for_every_case(rows):
    assert any(not r.started for r in rows)
    for r in rows:
        assert r.predicted_fits == r.started, (r.id, r.error)
        assert (r.error is None) == r.started


def test_refusals_carry_vllms_message(rows):
    by_id = {r.id: r for r in rows}
    gpt_oss = by_id["vllm23278-gpt-oss-120b-h100-default"].error
    assert gpt_oss.startswith("No available memory for the cache blocks.")
    free = by_id["imageworks-llava15-7b-awq-4080-freemem-fail"].error
    assert free.startswith("Free memory on device cuda:0 (13.58/15.99 GiB) on startup is less than desired GPU memory "
                           "utilization (0.85, 13.59 GiB).")


def test_summary_is_computed_over_the_whole_table(rows):
    summary = accuracy.summarize(rows)
    assert summary["cases"] == len(accuracy.included_cases())
    assert summary["start_mismatches"] == 0
    assert summary["weights_rel_worst"] <= 0.02
