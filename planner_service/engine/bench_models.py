"""Pydantic models of the performance twin's boundary: ``bench`` (one load) and ``capacity`` (sizing).

The load fields are spelled as ``vllm bench serve`` spells its flags (``num_prompts``, ``request_rate``,
``burstiness``, ``max_concurrency``, ``random_input_len`` ...), with its defaults; ``None`` for the rate
means ``inf`` (every request released at t=0). A bench answer carries the keys ``vllm bench serve
--save-result`` writes (where a simulation can produce them) plus the engine counters and the plan used.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from planner_service.engine.models import PlanRequest, PlanResponse, _Model

SloMetric = Literal["ttft", "tpot", "e2el"]
MAX_PROMPTS = 1_000_000
MAX_RATE = 1e6


class LoadOptions(_Model):
    """One benchmark load, as ``vllm bench serve`` takes it (same names, same defaults)."""

    num_prompts: int = Field(default=1000, ge=1, le=MAX_PROMPTS)
    request_rate: float | None = Field(default=None, gt=0, le=MAX_RATE, description="req/s; None = inf.")
    burstiness: float = Field(default=1.0, gt=0, le=1000, description="Gamma shape of the gaps (1 = Poisson).")
    arrival_process: Literal["gamma", "constant"] = Field(
        default="gamma", description="gamma = vllm bench; constant = evenly spaced (guidellm, inference-perf)."
    )
    max_concurrency: int | None = Field(default=None, ge=1, le=MAX_PROMPTS, description="Client-side cap.")
    dataset_name: Literal["random", "sharegpt"] = "random"
    random_input_len: int = Field(default=1024, ge=1, le=10_000_000)
    random_output_len: int = Field(default=128, ge=1, le=10_000_000)
    random_range_ratio: float = Field(default=0.0, ge=0, lt=1)
    random_prefix_len: int = Field(default=0, ge=0, le=10_000_000)
    sharegpt_mean_input_len: float = Field(default=215.0, ge=4, le=100_000)
    sharegpt_mean_output_len: float = Field(default=200.0, ge=4, le=100_000)
    endpoint_type: Literal["completions", "chat"] = "completions"
    goodput: dict[SloMetric, float] | None = Field(default=None, description="SLO per metric, ms.")
    metric_percentiles: tuple[float, ...] = (99.0,)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)

    @field_validator("goodput")
    @classmethod
    def _positive_slos(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for name, ms in (value or {}).items():
            if not ms > 0:
                raise ValueError(f"{name}: an SLO must be > 0 ms")
        return value or None

    @field_validator("metric_percentiles")
    @classmethod
    def _percentiles(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value:  # none given (an empty repeated field on the wire): bench's default
            return (99.0,)
        if any(not 0 < p < 100 for p in value):
            raise ValueError("percentiles must be in (0, 100)")
        if len(value) > 20:
            raise ValueError("at most 20 percentiles")
        return tuple(sorted(set(value)))


class BenchRequest(_Model):
    """A plan (model, hardware, engine settings) under one load."""

    plan: PlanRequest
    load: LoadOptions = LoadOptions()


class BenchResponse(_Model):
    """What ``vllm bench serve`` would print for this configuration and load, and how it was derived."""

    metrics: dict[str, float | int | None] = Field(
        description="vllm bench serve --save-result keys: completed, duration, throughputs, mean_/median_/"
        "std_/pNN_ x ttft/tpot/itl/e2el (ms), max_output_tokens_per_s, max_concurrent_requests, ..."
    )
    preemptions: int = Field(description="Requests preempted (recomputed) because the KV cache ran out.")
    max_running_requests: int = Field(description="Most requests the engine ran at once.")
    engine_steps: int
    load: LoadOptions
    plan: PlanResponse
    assumptions: list[str] = []

    def save_result(self) -> dict:
        """The ``--json`` object: run info and results keys as ``vllm bench serve --save-result`` writes
        them, then the twin's own keys (``max_concurrent_requests`` is bench's, ``preemptions``,
        ``plan`` and ``assumptions`` are ours)."""
        load = self.load
        info = {
            "endpoint_type": "openai-chat" if load.endpoint_type == "chat" else "openai",
            "backend": "openai-chat" if load.endpoint_type == "chat" else "openai",
            "model_id": self.plan.model.model,
            "num_prompts": load.num_prompts,
            "request_rate": load.request_rate if load.request_rate is not None else "inf",
            "burstiness": load.burstiness,
            "max_concurrency": load.max_concurrency,
        }
        metrics = dict(self.metrics)
        if load.goodput is None:
            metrics.pop("request_goodput", None)
        return {
            **info,
            **metrics,
            "preemptions": self.preemptions,
            "plan": self.plan.model_dump(mode="json"),
            "assumptions": list(self.assumptions),
        }


class SloTarget(_Model):
    """A latency objective at a percentile, e.g. p99 TTFT <= 500 ms."""

    metric: SloMetric
    milliseconds: float = Field(gt=0, le=1e9)


class CapacityRequest(_Model):
    """Size a deployment: which configuration, how many replicas, for a request rate under SLOs."""

    plan: PlanRequest = Field(description="Model, and any hardware/engine settings to hold fixed.")
    request_rate: float = Field(gt=0, le=MAX_RATE, description="Total req/s to serve.")
    slos: list[SloTarget] = Field(min_length=1)
    percentile: float = Field(default=99.0, gt=0, lt=100)
    load: LoadOptions = Field(default_factory=LoadOptions, description="Lengths, endpoint, seed (rate is searched).")
    gpus: list[str] = Field(default_factory=list, description="GPU types to consider; empty = the catalog's.")
    max_gpus_per_replica: int = Field(default=8, ge=1, le=64)
    max_options: int = Field(default=5, ge=1, le=100)

    @model_validator(mode="after")
    def _unique_slos(self) -> "CapacityRequest":
        names = [s.metric for s in self.slos]
        if len(set(names)) != len(names):
            raise ValueError("slos: each metric at most once")
        return self


class CapacityOption(_Model):
    """One configuration that meets the SLOs, with its replica count for the requested rate."""

    gpu: str
    gpus_per_replica: int
    tensor_parallel_size: int
    pipeline_parallel_size: int
    quantization: str | None
    kv_cache_dtype: str
    max_num_seqs: int
    max_num_batched_tokens: int
    max_rate_per_replica: float = Field(description="Highest req/s one replica serves within the SLOs.")
    replicas: int
    total_gpus: int
    predicted: dict[str, float] = Field(description="Percentile latencies (ms) per replica at the target share.")
    serve_command: str


class CapacityResponse(_Model):
    request_rate: float
    percentile: float
    slos: list[SloTarget]
    options: list[CapacityOption] = Field(description="Best first: fewest total GPUs, then most headroom.")
    rejected: list[str] = Field(default_factory=list, description="Configurations tried that cannot meet the SLOs.")
    assumptions: list[str] = []
