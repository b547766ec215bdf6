"""What every artifact renderer needs, gathered once from a plan: the ``Deployment`` model.

Renderers are pure functions of a Deployment, so they can be reused by fleet placement (which adds
GPU UUIDs and a hostname) without re-running the plan.
"""

from __future__ import annotations

import math
import re

import yaml
from pydantic import BaseModel, ConfigDict, Field

from planner_service.engine.models import PlanRequest, PlanResponse, VllmConfig

DEFAULT_PORT = 8000
HF_CACHE_IN_CONTAINER = "/root/.cache/huggingface"
IMAGE_REPOSITORY = "vllm/vllm-openai"

# Startup budget for the Kubernetes startupProbe: first start downloads and loads the weights.
# 100 MB/s is a pessimistic sustained download+load rate (a cold PVC and the HF CDN); the fixed part
# covers the CUDA context, profiling, torch.compile and CUDA-graph capture.
STARTUP_FIXED_SECONDS = 300
STARTUP_BYTES_PER_SECOND = 100 * 10**6
PROBE_PERIOD_SECONDS = 10


class Deployment(BaseModel):
    """A planned vLLM instance, ready to render."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model: str
    revision: str | None = None
    vllm_version: str
    config: VllmConfig
    trust_remote_code: bool = False
    dtype: str | None = Field(default=None, description="Emit --dtype (user asked for a non-auto dtype).")
    quantization: str | None = Field(default=None, description="Emit --quantization (not from the checkpoint).")
    block_size: int | None = Field(default=None, description="Emit --block-size (the user set it).")
    weights_bytes_total: int = Field(ge=0, description="All ranks' weights; sizes the startup probe.")
    gpu_uuids: list[str] = Field(default_factory=list, description="Pin to these GPUs (fleet placement).")
    hostname: str | None = Field(default=None, description="Pin to this node (kubernetes.io/hostname).")
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535)
    serve_flags: frozenset[str] | None = Field(
        default=None, description="Long flags the target vLLM accepts; None = do not filter."
    )

    @property
    def num_gpus(self) -> int:
        c = self.config
        return c.tensor_parallel_size * c.pipeline_parallel_size * c.data_parallel_size

    @property
    def image(self) -> str:
        return f"{IMAGE_REPOSITORY}:v{self.vllm_version}"

    @property
    def name(self) -> str:
        """A DNS-1123 label derived from the model id (Kubernetes object and compose service names)."""
        base = self.model.rstrip("/").split("/")[-1].lower()
        label = re.sub(r"[^a-z0-9-]+", "-", base).strip("-")
        return ("vllm-" + label)[:63].rstrip("-") or "vllm"

    @property
    def cpu_request(self) -> int:
        # Tokenization, the API server and one worker process per GPU each want a core or two.
        return 2 + 2 * self.num_gpus

    @property
    def memory_request_gib(self) -> int:
        # Host RAM for the API server and workers; safetensors are mmapped through the page cache.
        return 16 + 8 * self.num_gpus

    @property
    def startup_seconds(self) -> int:
        return STARTUP_FIXED_SECONDS + math.ceil(self.weights_bytes_total / STARTUP_BYTES_PER_SECOND)

    @property
    def startup_failure_threshold(self) -> int:
        return max(30, math.ceil(self.startup_seconds / PROBE_PERIOD_SECONDS))


def deployment_from_plan(
    response: PlanResponse,
    request: PlanRequest,
    *,
    gpu_uuids: list[str] | None = None,
    hostname: str | None = None,
    port: int = DEFAULT_PORT,
    serve_flags: frozenset[str] | None = None,
) -> Deployment:
    config = response.config
    user_quant = request.model.quantization
    emit_quant = user_quant or (config.quantization if config.quantization != response.model.quantization else None)
    if response.model.quantization_what_if:
        emit_quant = None  # the quantized checkpoint served instead declares its own method
    user_dtype = request.model.dtype
    return Deployment(
        model=request.model.model,
        revision=request.model.revision,
        vllm_version=response.vllm_version,
        config=config,
        trust_remote_code=request.model.trust_remote_code,
        dtype=user_dtype if user_dtype != "auto" else None,
        quantization=emit_quant,
        block_size=config.block_size if request.engine.block_size is not None else None,
        weights_bytes_total=response.feasibility.per_gpu.weights_bytes * config.tensor_parallel_size
        * config.pipeline_parallel_size * config.data_parallel_size,
        gpu_uuids=list(gpu_uuids or []),
        hostname=hostname,
        port=port,
        serve_flags=serve_flags,
    )


class _NoAliasDumper(yaml.SafeDumper):
    """Shared sub-objects (labels, probes) are written out in full, not as &anchors/*aliases."""

    def ignore_aliases(self, data) -> bool:  # noqa: ANN001 (PyYAML hook)
        return True


def dump_yaml(document: object) -> str:
    return yaml.dump(document, Dumper=_NoAliasDumper, sort_keys=False, default_flow_style=False)


def dump_yaml_all(documents: list) -> str:
    return yaml.dump_all(documents, Dumper=_NoAliasDumper, sort_keys=False, default_flow_style=False)
