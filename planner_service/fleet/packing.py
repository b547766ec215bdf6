"""Assigning replicas and whole fleet plans without over-committing any GPU (pure).

A per-GPU budget (bytes still free, keyed by agent address and GPU/MIG UUID) starts at each GPU's live free memory.
Each chosen placement subtracts its ``reserved_bytes`` (vLLM's ``ceil(T x u)`` plus the pre-snapshot
overhead) from every GPU of its group, and the next replica is planned against what remains, so two
deployments may share a GPU only when both fit in its free memory. Greedy and deterministic: hosts are
visited sorted by name, deployments in the order given (that order is the priority), candidates are
ranked with ``placement.rank_key`` after
spreading replicas over hosts, so the same input always yields the same plan.
"""

from __future__ import annotations

import heapq
from typing import Callable, Iterable, Sequence

from planner_service.fleet import pinning, sizing
from planner_service.fleet.models import (
    Assignment,
    Deployment,
    FleetHost,
    FleetPlanRequest,
    FleetPlanResponse,
    GpuBudget,
    MemorySizing,
    Placement,
    Rejection,
    Unplaced,
)
from planner_service.fleet.placement import Ranking, TwinCache, place_on_host, rank_key

# For each deployment: the twin cache to use and whether it needs fp8 support.
Prepare = Callable[[Deployment], tuple[TwinCache, bool]]


def _summarise(rejections: Sequence[Rejection], limit: int = 4) -> str:
    if not rejections:
        return "no hosts in the fleet"
    parts = [f"{r.host}: {r.message}" for r in sorted(rejections, key=lambda r: r.host)[:limit]]
    more = len(rejections) - limit
    return "; ".join(parts) + (f"; and {more} more host(s)" if more > 0 else "")


def assign_replicas(
    deployment: Deployment,
    hosts: Sequence[FleetHost],
    budget: dict[str, dict[str, int]],
    cache: TwinCache,
    policy: sizing.SizingPolicy,
    *,
    fp8: bool = False,
    sizing_mode: MemorySizing = MemorySizing.MAX_FREE,
    ranking: Ranking | None = None,
) -> tuple[list[Placement], list[str]]:
    """Choose ``deployment.replicas`` placements one by one, charging ``budget`` (mutated) for each.

    ``budget`` is ``{agent address: {GPU/MIG UUID: bytes still free}}``, filled lazily: a host
    without an entry still has its live free memory. It is keyed by address first because a UUID is
    only as unique as the planner can trust (replayed captures, cloned VM images). ``ranking`` holds
    every host's result against the untouched budget, in rank order (``place`` passes it, read under
    its lock); without it every host is planned here. Candidates are taken by (replicas already on
    that host, rank): replicas spread across hosts first (a host failure takes fewer down). Hosts not
    yet chosen all count zero replicas, so they are taken straight from the rank order, and only
    hosts re-planned after a pick wait in a heap: a pick costs O(log n), not a pass over the fleet.
    """
    if ranking is None:
        by_address = {h.address: h for h in hosts}
        untouched = {a: _evaluate(deployment, h, budget, cache, policy, fp8) for a, h in sorted(by_address.items())}
        order = sorted((rank_key(p), a) for a, p in untouched.items() if isinstance(p, Placement))
        host_of, result_of = by_address.__getitem__, untouched.__getitem__
        all_addresses: Callable[[], Iterable[str]] = untouched.keys
    else:
        order = ranking.placed
        host_of, result_of = ranking.host, ranking.result
        all_addresses = ranking.entries.keys
    current: dict[str, Placement | Rejection] = {}  # results re-planned after a pick (reduced budget)
    heap: list[tuple[int, tuple, str]] = []  # (replicas on that host, rank, address) of re-planned hosts
    picked: set[str] = set()
    position = 0
    selected: list[Placement] = []
    unplaced: list[str] = []
    used_hosts: dict[str, int] = {}
    for _ in range(deployment.replicas):
        while position < len(order) and order[position][1] in picked:
            position += 1
        if position < len(order):  # zero replicas on it: ahead of every re-planned host
            address = order[position][1]
            position += 1
        elif heap:
            address = heapq.heappop(heap)[2]
        else:
            results = [current.get(a) or result_of(a) for a in all_addresses()]
            unplaced.append(_summarise([r for r in results if isinstance(r, Rejection)]))
            continue
        best = current.get(address) or result_of(address)
        host = host_of(address)
        if sizing_mode is MemorySizing.FIT_WORKLOAD:
            # Hosts are ranked by what they could give; only the chosen one is shrunk to the workload
            # (a binary search over utilization), which keeps a fleet plan linear in the host count.
            fitted = _evaluate(deployment, host, budget, cache, policy, fp8, MemorySizing.FIT_WORKLOAD)
            best = fitted if isinstance(fitted, Placement) else best
        used_hosts[best.host] = used_hosts.get(best.host, 0) + 1
        gpus = budget.setdefault(address, {g.uuid: g.memory_free_bytes for g in host.gpus})
        for uuid in best.gpu_uuids:
            remaining = gpus[uuid] - best.reserved_bytes
            if remaining < 0:  # cannot happen by construction; guard the invariant anyway
                raise AssertionError(f"over-commit of {uuid} on {best.host}: {remaining} bytes")
            gpus[uuid] = remaining
        selected.append(best)
        picked.add(address)
        current[address] = again = _evaluate(deployment, host, budget, cache, policy, fp8)
        if isinstance(again, Placement):
            heapq.heappush(heap, (used_hosts[best.host], rank_key(again), address))
    return selected, unplaced


def _evaluate(deployment: Deployment, host: FleetHost, budget: dict[str, dict[str, int]], cache: TwinCache,
              policy: sizing.SizingPolicy, fp8: bool, mode: MemorySizing = MemorySizing.MAX_FREE) -> Placement | Rejection:
    return place_on_host(deployment, host, cache, policy, fp8=fp8, free=budget.get(host.address), sizing_mode=mode)


def plan_fleet(
    request: FleetPlanRequest,
    hosts: Sequence[FleetHost],
    prepare: Prepare,
    policy: sizing.SizingPolicy | None = None,
) -> FleetPlanResponse:
    """Place every deployment's replicas across the fleet, in request order, sharing one GPU budget."""
    policy = policy or sizing.SizingPolicy()
    ordered = sorted(hosts, key=lambda h: (h.host, h.address))
    by_address = {h.address: h for h in ordered}
    budget: dict[str, dict[str, int]] = {}
    assignments: list[Assignment] = []
    unplaced: list[Unplaced] = []
    for deployment in request.deployments:
        cache, fp8 = prepare(deployment)
        mode = deployment.sizing or MemorySizing.FIT_WORKLOAD
        selected, missing = assign_replicas(deployment, ordered, budget, cache, policy, fp8=fp8, sizing_mode=mode)
        name = deployment.display_name
        assignments += [
            Assignment(deployment=name, replica=i,
                       placement=cache.with_artifacts(p, pinning.decide(by_address[p.address], p, name, i, deployment.gpu_pinning)))
            for i, p in enumerate(selected)
        ]
        unplaced += [Unplaced(deployment=name, replica=len(selected) + i, reason=r) for i, r in enumerate(missing)]
    budgets = tuple(
        GpuBudget(
            host=by_address[address].host,
            uuid=gpu.uuid,
            memory_free_bytes=gpu.memory_free_bytes,
            reserved_bytes=gpu.memory_free_bytes - budget[address][gpu.uuid],
            remaining_bytes=budget[address][gpu.uuid],
        )
        for address in sorted(budget, key=lambda a: (by_address[a].host, a))
        for gpu in sorted(by_address[address].gpus, key=lambda g: g.uuid)
        if budget[address][gpu.uuid] != gpu.memory_free_bytes
    )
    return FleetPlanResponse(assignments=tuple(assignments), unplaced=tuple(unplaced), budgets=budgets)
