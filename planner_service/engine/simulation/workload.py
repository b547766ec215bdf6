"""The requests of a benchmark run, generated as ``vllm bench serve`` generates them (pure, seeded).

Reference ``vllm-engine-and-bench.md`` §4 (``vllm/benchmarks/serve.py`` and ``datasets``):

* random dataset: input lengths uniform on the integers ``[floor(in*(1-r)), ceil(in*(1+r))]``, outputs on
  ``[max(1, floor(out*(1-r))), ceil(out*(1+r))]``; an optional shared prefix of ``prefix_len`` tokens
  (``--random-prefix-len``) in front of every prompt; the dataset has its own ``default_rng(seed)``;
* arrivals: ``--request-rate inf`` releases every request at t=0; otherwise gaps ~ Gamma(shape=burstiness,
  scale=1/(rate*burstiness)) from the global numpy RNG seeded with ``--seed``, the first request included,
  then rescaled so the last arrival is exactly at ``N/rate``; ``constant`` spaces them evenly (what
  guidellm's and inference-perf's constant profiles do);
* ``sharegpt``: the ShareGPT file itself is not bundled; its length distribution is modelled as
  log-normal inputs and outputs (sigma 1.0, a heavy right tail), truncated as vLLM's ShareGPT sampler
  filters (both >= 4 tokens, input <= 1024, input + output <= 2048) and scaled to the given means.
  Default means 215 / 200 tokens: the 1,000-prompt ShareGPT runs in shared/calibration printed
  214,465 input and ~199,900 output tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

SHAREGPT_SIGMA = 1.0
SHAREGPT_MEAN_INPUT = 215
SHAREGPT_MEAN_OUTPUT = 200
_SHAREGPT_MAX_INPUT = 1024
_SHAREGPT_MAX_TOTAL = 2048


@dataclass(frozen=True)
class Workload:
    """Per request (same index everywhere): when the client releases it and its lengths."""

    release_seconds: np.ndarray  # float64, non-decreasing
    input_tokens: np.ndarray  # int64, prompt tokens the engine sees (shared prefix included)
    output_tokens: np.ndarray  # int64, tokens generated (max_tokens; EOS not modelled)
    shared_prefix_tokens: int = 0

    @property
    def size(self) -> int:
        return int(self.input_tokens.size)


def random_lengths(rng: np.random.Generator, n: int, input_len: int, output_len: int, range_ratio: float,
                   prefix_len: int) -> tuple[np.ndarray, np.ndarray]:
    low_in, high_in = int(np.floor(input_len * (1 - range_ratio))), int(np.ceil(input_len * (1 + range_ratio)))
    low_out = max(1, int(np.floor(output_len * (1 - range_ratio))))
    high_out = int(np.ceil(output_len * (1 + range_ratio)))
    inputs = rng.integers(max(1, low_in), max(1, high_in) + 1, size=n)
    outputs = rng.integers(low_out, high_out + 1, size=n)
    return inputs.astype(np.int64) + prefix_len, outputs.astype(np.int64)


def _lognormal_with_mean(rng: np.random.Generator, n: int, mean: float, upper: int) -> np.ndarray:
    """Log-normal draws clipped to [4, upper], with mu chosen so the clipped mean is ``mean``."""
    unit = rng.standard_normal(n)
    lo, hi = -5.0, 12.0
    for _ in range(60):  # bisection on mu: the clipped mean is monotone in it
        mu = (lo + hi) / 2
        values = np.clip(np.exp(mu + SHAREGPT_SIGMA * unit), 4, upper)
        lo, hi = (mu, hi) if values.mean() < mean else (lo, mu)
    return np.rint(np.clip(np.exp((lo + hi) / 2 + SHAREGPT_SIGMA * unit), 4, upper)).astype(np.int64)


def sharegpt_lengths(rng: np.random.Generator, n: int, mean_input: float, mean_output: float,
                     truncate: bool = True) -> tuple[np.ndarray, np.ndarray]:
    max_input = _SHAREGPT_MAX_INPUT if truncate else 1 << 20
    inputs = _lognormal_with_mean(rng, n, mean_input, max_input)
    outputs = _lognormal_with_mean(rng, n, mean_output, 1 << 20)
    if truncate:
        outputs = np.minimum(outputs, np.maximum(4, _SHAREGPT_MAX_TOTAL - inputs))
    return inputs, outputs


def release_times(n: int, request_rate: float | None, burstiness: float, seed: int,
                  process: Literal["gamma", "constant"] = "gamma") -> np.ndarray:
    """Client release time of each request (seconds from the benchmark start)."""
    if request_rate is None or not np.isfinite(request_rate):
        return np.zeros(n)
    if process == "constant":
        return np.arange(1, n + 1, dtype=float) / request_rate
    state = np.random.RandomState(seed)  # vllm bench: np.random.seed(args.seed); np.random.gamma(...)
    gaps = state.gamma(shape=burstiness, scale=1.0 / (request_rate * burstiness), size=n)
    delays = np.cumsum(gaps)
    if delays[-1] > 0:
        delays *= (n / request_rate) / delays[-1]  # normalize_factor: last arrival exactly at N / rate
    return delays
