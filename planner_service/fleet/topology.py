"""Choosing the GPUs of one tensor-parallel group on one host (pure).

Preference order, as vLLM performs best: all pairs NVLink-connected (vLLM's custom all-reduce needs
a fully connected set, ``is_fully_connected`` in vllm/platforms/cuda.py), then one NUMA node, then the
most free memory; indices break ties so the answer never depends on input order. MIG instances are
single-GPU targets only: a TP group never contains a MIG instance, and never mixes GPU models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from planner_service.fleet.models import FleetGpu

NVLINK = "nvlink"
PCIE = "pcie"
SINGLE = "single"


@dataclass(frozen=True)
class Group:
    gpus: tuple[FleetGpu, ...]
    interconnect: str
    numa_node: int | None  # None when unknown or mixed
    min_free_bytes: int

    @property
    def uuids(self) -> tuple[str, ...]:
        return tuple(g.uuid for g in self.gpus)

    def sort_key(self) -> tuple:
        link_rank = 0 if self.interconnect in (NVLINK, SINGLE) else 1
        numa_mixed = 0 if self.numa_node is not None or len(self.gpus) == 1 else 1
        return (link_rank, numa_mixed, -self.min_free_bytes, tuple(g.index for g in self.gpus), self.uuids)


def _free(gpu: FleetGpu, free: Mapping[str, int] | None) -> int:
    return free.get(gpu.uuid, gpu.memory_free_bytes) if free is not None else gpu.memory_free_bytes


def _make(gpus: Sequence[FleetGpu], interconnect: str, free: Mapping[str, int] | None) -> Group:
    numas = {g.numa_node for g in gpus}
    numa = next(iter(numas)) if len(numas) == 1 else None
    ordered = tuple(sorted(gpus, key=lambda g: (g.index, g.uuid)))
    return Group(ordered, interconnect, numa, min(_free(g, free) for g in gpus))


def _linked(a: FleetGpu, b: FleetGpu) -> bool:
    return b.uuid in a.nvlink_peer_uuids or a.uuid in b.nvlink_peer_uuids


def _nvlink_groups(pool: list[FleetGpu], size: int, free: Mapping[str, int] | None) -> list[Group]:
    """Greedy cliques grown from each seed, first within the seed's NUMA node, then across nodes."""
    found: dict[tuple[str, ...], Group] = {}
    for seed in pool:
        for same_numa in (True, False):
            group = [seed]
            for cand in pool:
                if len(group) == size:
                    break
                if cand is seed or (same_numa and cand.numa_node != seed.numa_node):
                    continue
                if all(_linked(cand, member) for member in group):
                    group.append(cand)
            if len(group) == size:
                made = _make(group, NVLINK, free)
                found.setdefault(made.uuids, made)
    return list(found.values())


def _pcie_group(pool: list[FleetGpu], size: int, free: Mapping[str, int] | None) -> Group | None:
    by_numa: dict[int | None, list[FleetGpu]] = {}
    for gpu in pool:
        by_numa.setdefault(gpu.numa_node, []).append(gpu)
    options = [_make(members[:size], PCIE, free) for numa, members in by_numa.items() if numa is not None and len(members) >= size]
    if len(pool) >= size:
        options.append(_make(pool[:size], PCIE, free))
    return min(options, key=Group.sort_key) if options else None


def best_group(
    candidates: Sequence[FleetGpu],
    size: int,
    free: Mapping[str, int] | None = None,
    min_free_bytes: int = 0,
) -> Group | None:
    """The best group of ``size`` targets among ``candidates`` (each with >= min_free_bytes free).

    ``free`` overrides each GPU's free memory (the remaining budget while packing).
    """
    eligible = [g for g in candidates if g.placeable and _free(g, free) >= min_free_bytes]
    if size == 1:  # the single-GPU sort key reduces to: most free, then index, then UUID
        best1 = min(eligible, key=lambda g: (-_free(g, free), g.index, g.uuid), default=None)
        return None if best1 is None else _make([best1], SINGLE, free)
    whole = [g for g in eligible if not g.is_mig_instance]
    best: Group | None = None
    for name in sorted({g.name for g in whole}):
        pool = sorted((g for g in whole if g.name == name), key=lambda g: (-_free(g, free), g.index, g.uuid))
        if len(pool) < size:
            continue
        options = _nvlink_groups(pool, size, free)
        pcie = _pcie_group(pool, size, free)
        if pcie is not None:
            options.append(pcie)
        for option in options:
            if best is None or option.sort_key() < best.sort_key():
                best = option
    return best


def max_group_size(candidates: Sequence[FleetGpu]) -> int:
    """Largest TP a host could run: the most whole, healthy GPUs of one model (1 if only MIG)."""
    counts: dict[str, int] = {}
    for g in candidates:
        if g.placeable and not g.is_mig_instance:
            counts[g.name] = counts.get(g.name, 0) + 1
    has_mig = any(g.is_mig_instance and g.placeable for g in candidates)
    return max(counts.values(), default=1 if has_mig else 0)
