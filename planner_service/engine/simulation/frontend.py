"""The API server between the benchmark client and the engine (pure): what TTFT and ITL add on top.

``vllm serve`` runs one API-server process (by default; ``--api-server-count``) with one asyncio loop
that renders the chat template and tokenises each new request before the engine sees it, and
detokenises every engine output and frames it as an SSE message (reference ``vllm-engine-and-bench.md``
§3). Modelled as one FIFO server: ingesting a request costs a fixed time per endpoint plus a time per
prompt token; delivering a step's output costs a time per streamed token. When the server falls behind
(very many streams, very short steps) deliveries queue, which is how a single API process limits
throughput.

Constants (calibrated: global values on shared/calibration/vllm-benchmarks.json):
* fixed cost per request: ~10 ms on ``/v1/chat/completions`` (chat template, role chunk, reasoning
  parser hooks) - a bare ``vllm serve`` on a tiny model showed TTFT p50 16.9 ms at concurrency 1 (chat,
  streaming, ray-project/ray#59681), an upper bound that includes a short prefill; a few ms on
  ``/v1/completions``;
* tokenisation ~1 us per prompt token (HF fast tokenizers, one thread);
* ~15 us (completions) / 25 us (chat) per streamed token: incremental detokenisation, the SSE chunk
  and its JSON (chat chunks carry ``choices[].delta`` objects).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Endpoint = Literal["completions", "chat"]

REQUEST_LATENCY_SECONDS: dict[str, float] = {"completions": 4e-3, "chat": 18e-3}
REQUEST_CPU_SECONDS: dict[str, float] = {"completions": 0.3e-3, "chat": 1.5e-3}
TOKENIZE_SECONDS_PER_TOKEN = 1e-6
STREAM_SECONDS_PER_TOKEN: dict[str, float] = {"completions": 40e-6, "chat": 100e-6}


@dataclass
class ApiServer:
    """One API-server process: a FIFO server shared by request ingestion and output delivery."""

    endpoint: Endpoint
    busy_until: float = 0.0  # the one event loop: ingestion and output processing share it

    @property
    def per_token_seconds(self) -> float:
        return STREAM_SECONDS_PER_TOKEN[self.endpoint]

    def ingest(self, send_seconds: float, prompt_tokens: int) -> float:
        """When the engine receives a request the client sent at ``send_seconds``."""
        start = max(send_seconds, self.busy_until)
        self.busy_until = start + REQUEST_CPU_SECONDS[self.endpoint] + TOKENIZE_SECONDS_PER_TOKEN * prompt_tokens
        return self.busy_until + REQUEST_LATENCY_SECONDS[self.endpoint]

    def deliver(self, step_end_seconds: float, tokens: int) -> float:
        """When the client receives the tokens one engine step produced."""
        start = max(step_end_seconds, self.busy_until)
        self.busy_until = start + self.per_token_seconds * tokens
        return self.busy_until

    def deliver_span(self, step_ends: np.ndarray, tokens_per_step: int) -> np.ndarray:
        """``deliver`` for consecutive steps of the same size, vectorised (d_k = max(end_k, d_{k-1}) + c)."""
        cost = self.per_token_seconds * tokens_per_step
        steps = np.arange(step_ends.size, dtype=float)
        starts = np.maximum(step_ends - steps * cost, self.busy_until)
        delivered = np.maximum.accumulate(starts) + (steps + 1) * cost
        self.busy_until = float(delivered[-1])
        return delivered
