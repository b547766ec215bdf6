"""Synthetic fleets built from the recorded capture shapes, and a small stand-in twin.

Used by the fleet's unit tests and ``benchmarks/fleet.py``. The host shapes copy the numbers of the
real captures: the H100 80GB HBM3 host of ``shared/fixtures/nvidia`` (CUDA total 85017493504 B; the
busy snapshot holds 14099546112 B), an 8-GPU NVSwitch H100 host (all pairs NVLink, NUMA 0 for
GPUs 0-3 and 1 for 4-7) and an A100 80GB host in MIG mode. ``StandInTwin`` is NOT the memory twin:
it is a transparent linear model (weights + fixed overhead + KV) that keeps pure-core tests
independent of the engine's calibration; end-to-end tests and the benchmark use the real twin.
"""

from __future__ import annotations

import hashlib
import math

from planner_service.engine.models import (
    Feasibility,
    GpuSummary,
    ModelSummary,
    OomRisk,
    PerGpuMemory,
    Performance,
    PlanRequest,
    PlanResponse,
    Range,
    VllmConfig,
)
from planner_service.fleet.models import FleetGpu, FleetHost, HostState

GIB = 1 << 30
H100_NAME = "NVIDIA H100 80GB HBM3"
H100_CUDA_TOTAL_BYTES = 85017493504
H100_BUSY_USED_BYTES = 14099546112
A100_NAME = "NVIDIA A100-SXM4-80GB"
A100_CUDA_TOTAL_BYTES = 85174583296


def _uuid(host: str, index: int, suffix: str = "") -> str:
    digest = hashlib.sha256(f"{host}/{index}/{suffix}".encode()).hexdigest()
    return f"GPU-{digest[:8]}-{digest[8:12]}-0000-0000-{index:012d}{suffix}"


def h100_host(host: str, busy: bool = False, address: str | None = None, labels: dict[str, str] | None = None) -> FleetHost:
    """The single-GPU H100 capture (no NVLink, no NUMA), idle or busy."""
    free = H100_CUDA_TOTAL_BYTES - (H100_BUSY_USED_BYTES if busy else 0)
    gpu = FleetGpu(uuid=_uuid(host, 0), index=0, name=H100_NAME, memory_total_bytes=H100_CUDA_TOTAL_BYTES,
                   memory_free_bytes=free, compute_capability="9.0")
    return FleetHost(host=host, address=address or f"{host}:50052", gpus=(gpu,), labels=labels or {}, state=HostState.READY)


def h100_nvlink_host(host: str, gpus: int = 8, used_bytes: dict[int, int] | None = None, address: str | None = None) -> FleetHost:
    """An NVSwitch H100 host: every GPU an NVLink peer of every other; two NUMA nodes."""
    used_bytes = used_bytes or {}
    uuids = [_uuid(host, i) for i in range(gpus)]
    out = tuple(
        FleetGpu(uuid=uuids[i], index=i, name=H100_NAME, memory_total_bytes=H100_CUDA_TOTAL_BYTES,
                 memory_free_bytes=H100_CUDA_TOTAL_BYTES - used_bytes.get(i, 0), compute_capability="9.0",
                 numa_node=0 if i < gpus // 2 else 1, nvlink_peer_uuids=tuple(u for j, u in enumerate(uuids) if j != i))
        for i in range(gpus)
    )
    return FleetHost(host=host, address=address or f"{host}:50052", gpus=out, state=HostState.READY)


def a100_mig_host(host: str, address: str | None = None) -> FleetHost:
    """One A100 80GB in MIG mode with a 3g.40gb and two 2g.20gb instances."""
    parent = _uuid(host, 0)
    gpus = [FleetGpu(uuid=parent, index=0, name=A100_NAME, memory_total_bytes=A100_CUDA_TOTAL_BYTES,
                     memory_free_bytes=A100_CUDA_TOTAL_BYTES, compute_capability="8.0", mig_enabled=True)]
    for i, (profile, size_gib) in enumerate((("3g.40gb", 39.25), ("2g.20gb", 19.5), ("2g.20gb", 19.5))):
        total = int(size_gib * GIB)
        gpus.append(FleetGpu(uuid=f"MIG-{parent[4:]}-{i}", index=0, name=A100_NAME, memory_total_bytes=total,
                             memory_free_bytes=total, compute_capability="8.0", mig_parent_uuid=parent, mig_profile=profile))
    return FleetHost(host=host, address=address or f"{host}:50052", gpus=tuple(gpus), state=HostState.READY)


class StandInTwin:
    """Linear stand-in: per GPU, weights/TP + 2 GiB non-KV; KV tokens at ``kv_bytes_per_token``/TP.

    ``model.params_b`` in the request overrides the parameter count given here.
    """

    def __init__(self, params_b: float = 8.0, kv_bytes_per_token: int = 131072, bytes_per_param: int = 2) -> None:
        self.params_b = params_b
        self.kv_bytes_per_token = kv_bytes_per_token
        self.bytes_per_param = bytes_per_param
        self.calls = 0

    def __call__(self, request: PlanRequest) -> PlanResponse:
        self.calls += 1
        hw = request.hardware
        tp = hw.tensor_parallel_size or 1
        total = int((hw.vram_gb or 80) * GIB)
        u = request.policy.gpu_memory_utilization or 0.9
        budget = math.ceil(total * u)
        params_b = request.model.params_b or self.params_b
        weights = int(params_b * 1e9 * self.bytes_per_param / tp)
        kv = budget - weights - 2 * GIB
        free_ok = hw.free_memory_bytes is None or hw.free_memory_bytes >= budget
        per_token = self.kv_bytes_per_token // tp
        tokens = max(kv, 0) // per_token
        max_len = request.model.max_model_len if isinstance(request.model.max_model_len, int) else 8192
        fits = kv > 0 and free_ok and tokens >= max_len
        error = None if free_ok else "Free memory on device is less than desired GPU memory utilization"
        r = lambda x: Range(low=x * 0.8, expected=x, high=x * 1.2)  # noqa: E731
        return PlanResponse(
            vllm_version="0.33.0", version_profile="stand-in",
            model=ModelSummary(model=request.model.model, source="inline", architecture="StandIn", model_type="stand-in",
                               num_params=int(self.params_b * 1e9), params_source="override", checkpoint_dtype="bfloat16",
                               derived_max_model_len=max_len),
            gpu=GpuSummary(name=hw.gpu or "?", memory_total_bytes=total, num_gpus=tp),
            config=VllmConfig(tensor_parallel_size=tp, pipeline_parallel_size=1, dtype="bfloat16", quantization=None,
                              kv_cache_dtype="auto", max_model_len=max_len, gpu_memory_utilization=u, max_num_seqs=256,
                              max_num_batched_tokens=8192, block_size=16, enable_prefix_caching=True, enforce_eager=False,
                              enable_expert_parallel=False),
            feasibility=Feasibility(fits=fits, oom_risk=OomRisk.NONE if fits else OomRisk.HIGH, error=error,
                                    per_gpu=PerGpuMemory(total_bytes=total, budget_bytes=budget, weights_bytes=weights,
                                                         activation_peak_bytes=GIB, non_torch_bytes=GIB, cuda_graph_bytes=0,
                                                         kv_cache_bytes=kv),
                                    kv_cache_tokens=tokens, num_gpu_blocks=tokens // 16, block_size=16,
                                    max_concurrency=tokens / max_len, max_concurrency_at_tokens=max_len,
                                    kv_bytes_per_token=per_token),
            performance=Performance(decode_tokens_per_second_per_request=r(100.0 * tp),
                                    decode_tokens_per_second_aggregate=r(1000.0 * tp), prefill_tokens_per_second=r(1e4 * tp),
                                    ttft_seconds=r(0.2 / tp), itl_seconds=r(0.01 / tp), memory_bound_until_concurrency=64,
                                    concurrency=request.workload.concurrency),
        )


class BackgroundLoop:
    """An event loop in a daemon thread, for tests that drive servers with sync clients or the CLI."""

    def __init__(self) -> None:
        import asyncio
        import threading

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fleet-test-loop", daemon=True)
        self._thread.start()

    def run(self, coro, timeout_seconds: float = 30.0):  # noqa: ANN001, ANN201
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_seconds)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()
