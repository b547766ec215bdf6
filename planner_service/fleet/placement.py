"""Placement of one deployment on one host, and the ranked ``Place`` answer over the fleet (pure).

The memory twin is injected as ``evaluate(PlanRequest) -> PlanResponse`` (no I/O here). Each host is
filtered (state, labels, GPU type), then for each tensor-parallel size from small to large the best
GPU group is chosen (``topology.best_group``), the utilization is derived from that group's LIVE free
memory (``sizing.max_utilization``) and the twin is run for exactly that GPU, total and free memory.
The first TP size that fits (and meets the SLO) is the host's placement; otherwise the host is
rejected with the most telling reason.

Twin results are memoised in ``TwinCache`` on (GPU model, CUDA total, TP, interconnect, utilization,
bucketed free memory): across a fleet built from a few GPU shapes, a handful of evaluations serve
thousands of hosts. Ranking: fewest GPUs, better interconnect, more KV capacity, then host and GPU
indices, so equal inputs always give equal answers.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from planner_service.engine.errors import PlannerError
from planner_service.engine.models import HardwareOptions, Interconnect, PlanRequest, PlanResponse
from planner_service.fleet import pinning, sizing
from planner_service.fleet.changes import request_changes
from planner_service.fleet.models import (
    Deployment,
    FleetGpu,
    FleetHost,
    HostState,
    MemorySizing,
    Placement,
    PlacementArtifacts,
    PlaceResponse,
    RejectReason,
    Rejection,
    targets,
)
from planner_service.fleet.topology import NVLINK, Group, best_group, max_group_size

Evaluate = Callable[[PlanRequest], PlanResponse]
Render = Callable[[PlanResponse, PlanRequest, pinning.Pinning, bool], PlacementArtifacts]
GIB = 1 << 30
_TP_SIZES = (1, 2, 4, 8, 16, 32, 64)
# How many rejected hosts an answer names (the rest are counted per reason): a Place answer must not
# grow with the fleet.
CLOSEST_REJECTIONS = 5
# Deployment scopes whose per-host results a TwinCache keeps (each holds one small entry per host).
MAX_RANKINGS = 16


class TwinCache:
    """Memoises twin evaluations; safe to share across calls for one deployment's base request.

    Artifacts are rendered only for the placements an answer returns (``with_artifacts``), by the
    engine's renderers through ``pinning.render`` (``render`` replaces it in tests): with the
    Kubernetes objects for the chosen placements, the commands only for ranked alternatives.
    """

    def __init__(self, evaluate: Evaluate, render: Render | None = None) -> None:
        self._evaluate = evaluate
        self._render = render or pinning.render
        self._results: dict[tuple, PlanResponse | PlannerError] = {}
        self._requests: dict[tuple, PlanRequest] = {}
        self._placement_keys: dict[tuple, tuple] = {}
        self._rendered: dict[tuple, PlacementArtifacts] = {}
        self._changes: dict[tuple, tuple[str, ...]] = {}
        self._rankings: OrderedDict[str, Ranking] = OrderedDict()
        self._rankings_lock = threading.Lock()
        self.evaluations = 0

    def run(self, key: tuple, request: PlanRequest | Callable[[], PlanRequest]) -> PlanResponse:
        """The twin's answer for ``key``; ``request`` may be a factory, built only on a miss."""
        hit = self._results.get(key)
        if hit is None:
            self.evaluations += 1
            if callable(request):
                request = request()
            try:
                hit = self._evaluate(request)
            except PlannerError as exc:  # an impossible TP or similar: remember it like a result
                hit = exc
            self._results[key] = hit
            self._requests[key] = request
        if isinstance(hit, PlannerError):
            raise hit
        return hit

    def ranking(self, scope: str) -> "Ranking":
        """The incremental ranking of one deployment ``scope`` (created on first use; the 16 most
        recently used scopes are kept). Callers hold ``ranking.lock`` while they update or read it."""
        with self._rankings_lock:
            hit = self._rankings.get(scope)
            if hit is None:
                hit = self._rankings[scope] = Ranking()
                while len(self._rankings) > MAX_RANKINGS:
                    self._rankings.popitem(last=False)
            else:
                self._rankings.move_to_end(scope)
            return hit

    def changes(self, key: tuple, asked: PlanRequest, plan: PlanResponse, utilization: float) -> tuple[str, ...]:
        """``request_changes`` memoised per twin key (it depends on nothing else for one cache)."""
        hit = self._changes.get(key)
        if hit is None:
            hit = self._changes[key] = request_changes(asked, plan, utilization)
        return hit

    def remember(self, placement: Placement, key: tuple) -> Placement:
        self._placement_keys[_identity(placement)] = key
        return placement

    def with_artifacts(self, placement: Placement, pin: pinning.Pinning, full: bool = True) -> Placement:
        """Attach artifacts pinned by ``pin``: with the Kubernetes objects (``full``) or commands only."""
        key = self._placement_keys.get(_identity(placement))
        if key is None or placement.artifacts is not None:
            return placement
        render_key = (key, pin, full)
        artifacts = self._rendered.get(render_key)
        if artifacts is None:
            plan = self.run(key, self._requests[key])
            artifacts = self._render(plan, self._requests[key], pin, full)
            if len(self._rendered) > 4096:  # bounded: a long-lived cache sees ever new placements
                self._rendered.clear()
            self._rendered[render_key] = artifacts
        return placement.model_copy(update={"artifacts": artifacts})


def _identity(p: Placement) -> tuple:
    return (p.address, p.gpu_uuids, p.gpu_memory_utilization, p.memory_free_bytes)


def needs_fp8(request: PlanRequest, checkpoint_quantization: str | None) -> bool:
    """True when the deployment runs fp8 weights or an fp8 KV cache."""
    names = (request.model.quantization, request.model.kv_cache_dtype, checkpoint_quantization)
    return any(n is not None and "fp8" in n.lower() for n in names)


def _cc_at_least(cc: str | None, wanted: tuple[int, int]) -> bool:
    if not cc:
        return False
    major, _, minor = cc.partition(".")
    try:
        return (int(major), int(minor or 0)) >= wanted
    except ValueError:
        return False


def host_matches(host: FleetHost, deployment: Deployment) -> str | None:
    """None if the host passes the deployment's filter, else why not."""
    f = deployment.filter
    if f.hosts and host.host not in f.hosts:
        return "not in the requested hosts"
    for key, value in sorted(f.labels.items()):
        if host.labels.get(key) != value:
            return f"label {key}={value} not set"
    return None


def _gpu_matches(gpu: FleetGpu, deployment: Deployment) -> bool:
    f = deployment.filter
    if f.gpu_types and not any(t.lower() in gpu.name.lower() for t in f.gpu_types):
        return False
    if f.gpu_uuids and gpu.uuid not in f.gpu_uuids and (gpu.mig_parent_uuid or "") not in f.gpu_uuids:
        return False
    if f.min_free_memory_bytes is not None and gpu.memory_free_bytes < f.min_free_memory_bytes:
        return False
    return True


def _tp_sizes(deployment: Deployment, largest: int) -> list[int]:
    asked = deployment.plan.hardware.tensor_parallel_size
    if asked is not None:
        return [asked]
    return [tp for tp in _TP_SIZES if tp <= max(largest, 1)]


def _twin_request(deployment: Deployment, group: Group, utilization: float, free_bytes: int) -> PlanRequest:
    gpu = group.gpus[0]
    total = min(g.memory_total_bytes for g in group.gpus)
    plan = deployment.plan
    hardware = HardwareOptions(
        gpu=gpu.name,
        num_gpus=len(group.gpus),
        vram_gb=total / GIB,
        interconnect=Interconnect.NVLINK if group.interconnect == NVLINK else Interconnect.PCIE,
        tensor_parallel_size=len(group.gpus),
        pipeline_parallel_size=plan.hardware.pipeline_parallel_size,
        enable_expert_parallel=plan.hardware.enable_expert_parallel,
        free_memory_bytes=free_bytes,
    )
    policy = plan.policy.model_copy(update={"gpu_memory_utilization": utilization})
    return plan.model_copy(update={"hardware": hardware, "policy": policy})


_PLACEMENT_FIELDS_SET = set(Placement.model_fields)  # pydantic copies it before any change (model_copy)


def _evaluate_group(
    deployment: Deployment, host: FleetHost, group: Group, utilization: float, cache: TwinCache, policy: sizing.SizingPolicy
) -> Placement:
    total = min(g.memory_total_bytes for g in group.gpus)
    free_for_twin = sizing.bucket_free(group.min_free_bytes, policy) - policy.startup_overhead_bytes
    key = (group.gpus[0].name, total, len(group.gpus), group.interconnect, utilization, free_for_twin)
    plan = cache.run(key, lambda: _twin_request(deployment, group, utilization, free_for_twin))
    feas = plan.feasibility
    perf = plan.performance
    gpu = group.gpus[0]
    # Every value below is computed here from validated inputs: skip pydantic's validation (this runs
    # for every host whose inventory changed, thousands of times per Place on a busy fleet). The
    # rankings keep one per host and deployment, so they share one fields-set (~2 KiB each otherwise).
    placement = Placement.model_construct(
        _PLACEMENT_FIELDS_SET,
        host=host.host,
        address=host.address,
        gpu_uuids=group.uuids,
        gpu_indices=tuple(g.index for g in group.gpus),
        gpu_name=gpu.name + (f" MIG {gpu.mig_profile}" if gpu.is_mig_instance and gpu.mig_profile else ""),
        mig=gpu.is_mig_instance,
        tensor_parallel_size=len(group.gpus),
        interconnect=group.interconnect,
        numa_node=group.numa_node,
        gpu_memory_utilization=utilization,
        memory_total_bytes=total,
        memory_free_bytes=group.min_free_bytes,
        requested_memory_bytes=sizing.requested_bytes(total, utilization),
        reserved_bytes=sizing.reserved_bytes(total, utilization, policy),
        fits=feas.fits,
        kv_cache_tokens=feas.kv_cache_tokens,
        max_concurrency=feas.max_concurrency,
        max_model_len=plan.config.max_model_len,
        kv_cache_bytes=feas.per_gpu.kv_cache_bytes,
        weights_bytes=feas.per_gpu.weights_bytes,
        ttft_seconds=perf.ttft_seconds.expected if perf else None,
        itl_seconds=perf.itl_seconds.expected if perf else None,
        decode_tokens_per_second=perf.decode_tokens_per_second_aggregate.expected if perf else None,
        warnings=tuple(feas.warnings) + ((feas.error,) if feas.error else ()),
        kv_cache_dtype=plan.config.kv_cache_dtype,
        adjustments=cache.changes(key, deployment.plan, plan, utilization),
    )
    return cache.remember(placement, key)


def _slo_violation(deployment: Deployment, placement: Placement) -> str | None:
    if deployment.max_ttft_seconds is not None and placement.ttft_seconds is not None:
        if placement.ttft_seconds > deployment.max_ttft_seconds:
            return f"TTFT {placement.ttft_seconds:.3f}s > SLO {deployment.max_ttft_seconds:.3f}s"
    if deployment.max_itl_seconds is not None and placement.itl_seconds is not None:
        if placement.itl_seconds > deployment.max_itl_seconds:
            return f"ITL {placement.itl_seconds * 1000:.1f}ms > SLO {deployment.max_itl_seconds * 1000:.1f}ms"
    return None


def _workload_tokens(deployment: Deployment) -> int:
    w = deployment.plan.workload
    return w.concurrency * (w.prompt_tokens + w.gen_tokens)


def _fit_workload(
    deployment: Deployment, host: FleetHost, group: Group, top: Placement, cache: TwinCache, policy: sizing.SizingPolicy
) -> Placement:
    """Smallest utilization whose KV cache still holds the workload (binary search; KV grows with u)."""
    need = _workload_tokens(deployment)
    if top.kv_cache_tokens < need:
        return top
    steps = sizing.utilization_steps(0.01, top.gpu_memory_utilization)
    lo, hi, best = 0, len(steps) - 1, top
    while lo <= hi:
        mid = (lo + hi) // 2
        candidate = _evaluate_group(deployment, host, group, steps[mid], cache, policy)
        if (candidate.fits and candidate.kv_cache_tokens >= need and _slo_violation(deployment, candidate) is None
                and not (deployment.strict and candidate.adjustments)):
            best, hi = candidate, mid - 1
        else:
            lo = mid + 1
    return best


def place_on_host(
    deployment: Deployment,
    host: FleetHost,
    cache: TwinCache,
    policy: sizing.SizingPolicy,
    *,
    fp8: bool = False,
    free: Mapping[str, int] | None = None,
    sizing_mode: MemorySizing = MemorySizing.MAX_FREE,
) -> Placement | Rejection:
    """The best placement of one replica on this host given the remaining ``free`` budget, or why not."""
    if host.state is not HostState.READY:
        reason = f"host is {host.state.value}" + (f": {host.state_reason}" if host.state_reason else "")
        return Rejection(host=host.host, reason=RejectReason.STATE, message=reason)
    why = host_matches(host, deployment)
    if why:
        return Rejection(host=host.host, reason=RejectReason.FILTERED, message=why)
    matching = [g for g in targets(host) if _gpu_matches(g, deployment)]
    if not matching:
        return Rejection(host=host.host, reason=RejectReason.FILTERED, message="no GPU matches the GPU filters")
    candidates = [g for g in matching if g.placeable]
    if not candidates:
        allocated = [g for g in matching if g.allocated_to is not None]
        if allocated:
            holders = ", ".join(sorted({g.allocated_to or "" for g in allocated})[:3])
            return Rejection(host=host.host, reason=RejectReason.ALLOCATED,
                             message=f"every matching GPU is allocated to a pod ({holders})")
        why = next((g.health_reason for g in matching if g.health_reason), "unhealthy")
        return Rejection(host=host.host, reason=RejectReason.UNHEALTHY, message=f"no healthy GPU: {why}")
    if fp8 and policy.require_native_fp8:
        native = [g for g in candidates if _cc_at_least(g.compute_capability, (8, 9))]
        if not native:
            ccs = ",".join(sorted({g.compute_capability or "?" for g in candidates}))
            return Rejection(host=host.host, reason=RejectReason.NO_FP8, message=f"no fp8 support (compute capability {ccs} < 8.9)")
        candidates = native
    largest = max_group_size(candidates)
    sizes = _tp_sizes(deployment, largest)
    if sizes and sizes[0] > largest:
        only_mig = all(g.is_mig_instance for g in candidates)
        detail = "MIG instances run TP=1 only" if only_mig else f"host has {largest} usable GPU(s) of one model"
        return Rejection(host=host.host, reason=RejectReason.TP_IMPOSSIBLE, message=f"TP={sizes[0]} impossible: {detail}")
    cap = deployment.plan.policy.gpu_memory_utilization
    last: Rejection | None = None
    for tp in sizes:
        group = best_group(candidates, tp, free, min_free_bytes=policy.startup_overhead_bytes + 1)
        if group is None:
            last = last or Rejection(
                host=host.host, reason=RejectReason.INSUFFICIENT_FREE_MEMORY, message=f"no {tp} GPU(s) with free memory left"
            )
            continue
        total = min(g.memory_total_bytes for g in group.gpus)
        utilization = sizing.max_utilization(total, group.min_free_bytes, policy, cap)
        if utilization is None:
            last = Rejection(
                host=host.host,
                reason=RejectReason.INSUFFICIENT_FREE_MEMORY,
                message=f"too little free memory: {group.min_free_bytes / GIB:.2f} GiB free on {','.join(group.uuids)}",
            )
            continue
        try:
            placement = _evaluate_group(deployment, host, group, utilization, cache, policy)
        except PlannerError as exc:
            last = Rejection(host=host.host, reason=RejectReason.INVALID, message=f"TP={tp}: {' '.join(str(exc).split())}")
            continue
        if not placement.fits:
            mig = group.gpus[0].is_mig_instance
            reason = RejectReason.MIG_TOO_SMALL if mig else RejectReason.DOES_NOT_FIT
            what = "MIG slice too small" if mig else f"does not fit at TP={tp}"
            err = placement.warnings[-1] if placement.warnings else f"KV cache {placement.kv_cache_bytes / GIB:.2f} GiB"
            last = Rejection(host=host.host, reason=reason, message=f"{what} (u={utilization:.2f}): {err}")
            continue
        slo = _slo_violation(deployment, placement)
        if slo:
            last = Rejection(host=host.host, reason=RejectReason.SLO, message=f"TP={tp}: {slo}")
            continue
        if deployment.strict and placement.adjustments:
            last = Rejection(host=host.host, reason=RejectReason.WOULD_CHANGE_REQUEST,
                             message=f"TP={tp} (strict): would run {'; '.join(placement.adjustments)}")
            continue
        if sizing_mode is MemorySizing.FIT_WORKLOAD:
            placement = _fit_workload(deployment, host, group, placement, cache, policy)
        return placement
    return last or Rejection(host=host.host, reason=RejectReason.TP_IMPOSSIBLE, message="no tensor-parallel size to try")


def rank_key(p: Placement) -> tuple:
    link_rank = 0 if p.interconnect != "pcie" else 1
    return (p.tensor_parallel_size, link_rank, -p.max_concurrency, -p.kv_cache_tokens, p.host, p.gpu_indices, p.gpu_uuids)


Entry = tuple[FleetHost, "Placement | Rejection", tuple]


@dataclass
class Ranking:
    """One deployment scope's per-host results, kept across snapshots and updated incrementally.

    ``entries`` maps an agent address to (the host object it was computed from, the result against the
    untouched budget, its sort key); ``placed`` and ``rejected`` hold (sort key, address) in order,
    and ``counts`` the rejections per reason. The registry keeps an unchanged host's object across
    snapshots (and the reservation book an unchanged adjusted copy), so ``update`` re-plans exactly
    the hosts whose object is new: after 5 % of 10,000 agents reported, 500 hosts are re-planned, each
    moved in the sorted lists by bisection, and the rest costs one dictionary lookup. A host's result
    does not depend on other hosts, so reusing it is exact. Read and update under ``lock``.
    """

    lock: threading.Lock = field(default_factory=threading.Lock)
    hosts: Sequence[FleetHost] | None = None  # the sequence last ranked (identity)
    entries: dict[str, Entry] = field(default_factory=dict)
    placed: list[tuple[tuple, str]] = field(default_factory=list)
    rejected: list[tuple[tuple, str]] = field(default_factory=list)
    counts: dict[RejectReason, int] = field(default_factory=dict)

    def update(self, deployment: Deployment, hosts: Sequence[FleetHost], cache: TwinCache, policy: sizing.SizingPolicy,
               fp8: bool, mode: MemorySizing) -> None:
        if hosts is self.hosts:
            return
        entries = self.entries
        for host in hosts:
            hit = entries.get(host.address)
            if hit is not None and hit[0] is host:
                continue
            result = place_on_host(deployment, host, cache, policy, fp8=fp8, sizing_mode=mode)
            key = rank_key(result) if isinstance(result, Placement) else closeness(result, host)
            if hit is not None:
                self._drop(host.address, hit)
            entries[host.address] = entry = (host, result, key)
            self._add(host.address, entry)
        if len(entries) > len(hosts):  # hosts left the fleet (or the view): forget them
            present = {h.address for h in hosts}
            for address in [a for a in entries if a not in present]:
                self._drop(address, entries.pop(address))
        self.hosts = hosts

    def _add(self, address: str, entry: Entry) -> None:
        _, result, key = entry
        if isinstance(result, Placement):
            bisect.insort(self.placed, (key, address))
        else:
            bisect.insort(self.rejected, (key, address))
            self.counts[result.reason] = self.counts.get(result.reason, 0) + 1

    def _drop(self, address: str, entry: Entry) -> None:
        _, result, key = entry
        ordered = self.placed if isinstance(result, Placement) else self.rejected
        i = bisect.bisect_left(ordered, (key, address))
        if i < len(ordered) and ordered[i] == (key, address):
            del ordered[i]
        if not isinstance(result, Placement):
            self.counts[result.reason] -= 1
            if not self.counts[result.reason]:
                del self.counts[result.reason]

    def host(self, address: str) -> FleetHost:
        return self.entries[address][0]

    def result(self, address: str) -> "Placement | Rejection":
        return self.entries[address][1]

    def top(self, n: int) -> list[Placement]:
        return [self.entries[address][1] for _, address in self.placed[:n]]  # type: ignore[misc]

    def closest(self, n: int = CLOSEST_REJECTIONS) -> tuple[Rejection, ...]:
        return tuple(self.entries[address][1] for _, address in self.rejected[:n])  # type: ignore[misc]


def place(
    deployment: Deployment,
    hosts: Sequence[FleetHost],
    cache: TwinCache,
    policy: sizing.SizingPolicy | None = None,
    *,
    fp8: bool = False,
    max_results: int = 10,
) -> PlaceResponse:
    """Rank one placement per host, then choose ``replicas`` of them together without over-commit."""
    from planner_service.fleet.packing import assign_replicas  # packing builds on this module

    policy = policy or sizing.SizingPolicy()
    mode = deployment.sizing or MemorySizing.MAX_FREE
    # Everything that changes a host's answer besides the host itself (replicas/name/pinning do not).
    scope = deployment.model_dump_json(exclude={"name", "replicas", "gpu_pinning"}) + policy.model_dump_json() + f"{fp8}{mode.value}"
    ranking = cache.ranking(scope)
    # Held for the whole answer: Place is CPU-bound Python (one thread runs at a time anyway), and a
    # concurrent Place of the same deployment then reuses this one's work instead of repeating it.
    with ranking.lock:
        ranking.update(deployment, hosts, cache, policy, fp8, mode)
        selected, unplaced = assign_replicas(deployment, hosts, {}, cache, policy, fp8=fp8, sizing_mode=mode, ranking=ranking)
        label = deployment.display_name
        chosen = [
            cache.with_artifacts(p, pinning.decide(ranking.host(p.address), p, label, i, deployment.gpu_pinning))
            for i, p in enumerate(selected)
        ]
        full = {_identity(p): p for p in chosen}
        ranked_out = tuple(
            full.get(_identity(p))
            or cache.with_artifacts(p, pinning.decide(ranking.host(p.address), p, label, None, deployment.gpu_pinning), full=False)
            for p in ranking.top(max_results)
        )
        return PlaceResponse(
            deployment=label,
            placements=ranked_out,
            selected=tuple(chosen),
            rejections=ranking.closest(),
            rejection_counts=dict(ranking.counts),
            unplaced_replicas=len(unplaced),
            hosts_considered=len(hosts),
        )


# Closest to fitting first: a host that fits but misses the SLO, then one whose model does not fit
# the memory it has, then one without enough free memory, ... down to hosts that were never candidates.
_CLOSENESS = (
    RejectReason.WOULD_CHANGE_REQUEST, RejectReason.SLO, RejectReason.DOES_NOT_FIT, RejectReason.MIG_TOO_SMALL, RejectReason.INSUFFICIENT_FREE_MEMORY,
    RejectReason.BUDGET_EXHAUSTED, RejectReason.TP_IMPOSSIBLE, RejectReason.NO_FP8, RejectReason.INVALID,
    RejectReason.ALLOCATED, RejectReason.UNHEALTHY, RejectReason.FILTERED, RejectReason.STATE,
)
_RANK = {reason: i for i, reason in enumerate(_CLOSENESS)}


def closeness(rejection: Rejection, host: FleetHost) -> tuple:
    """Sort key of a rejection, closest to fitting first: by reason (``_CLOSENESS``), then the most
    free memory on one placement target of the host, then host name (deterministic)."""
    return (_RANK.get(rejection.reason, len(_RANK)), -host.max_free_bytes, rejection.host)
