"""Pure placement core: sizing from live free memory, TP groups from the link matrix, rejections."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner_service.engine.models import HardwareOptions, ModelOptions, PlanRequest, PolicyOptions
from planner_service.fleet import sizing
from planner_service.fleet.models import Deployment, FleetGpu, HostFilter, HostState, RejectReason
from planner_service.fleet.placement import TwinCache, needs_fp8, place
from planner_service.fleet.testing import (
    H100_BUSY_USED_BYTES,
    H100_CUDA_TOTAL_BYTES,
    StandInTwin,
    a100_mig_host,
    h100_host,
    h100_nvlink_host,
)
from planner_service.fleet.topology import NVLINK, PCIE, best_group

GIB = 1 << 30
POLICY = sizing.SizingPolicy()


def _deployment(tp: int | None = None, replicas: int = 1, **kw) -> Deployment:
    plan = PlanRequest(
        model=ModelOptions(model="stand-in", max_model_len=kw.pop("max_model_len", 8192), **kw.pop("model", {})),
        hardware=HardwareOptions(tensor_parallel_size=tp),
        policy=PolicyOptions(**kw.pop("policy", {})),
    )
    return Deployment(plan=plan, replicas=replicas, **kw)


def _fleet():
    return [
        h100_host("h100-idle"),
        h100_host("h100-busy", busy=True),
        h100_nvlink_host("dgx-a"),
        a100_mig_host("a100-mig"),
    ]


def test_busy_gpu_gets_a_utilization_that_fits_in_what_is_free():
    answer = place(_deployment(), [h100_host("h100-busy", busy=True)], TwinCache(StandInTwin()))
    (p,) = answer.placements
    free = H100_CUDA_TOTAL_BYTES - H100_BUSY_USED_BYTES
    assert p.memory_free_bytes == free
    assert p.gpu_memory_utilization < 0.9
    # vLLM's check: free at its snapshot (after the CUDA context) >= ceil(T x u)
    assert math.ceil(H100_CUDA_TOTAL_BYTES * p.gpu_memory_utilization) + POLICY.startup_overhead_bytes <= free
    # ... and the utilization is the largest 0.01 step that does: one more step would not fit
    next_step = round(p.gpu_memory_utilization + 0.01, 2)
    assert math.ceil(H100_CUDA_TOTAL_BYTES * next_step) + POLICY.startup_overhead_bytes > sizing.bucket_free(free, POLICY)
    assert "--gpu-memory-utilization 0.82" in p.artifacts.serve_command


def test_idle_gpu_keeps_the_default_utilization_and_ranks_before_the_busy_one():
    answer = place(_deployment(), [h100_host("h100-busy", busy=True), h100_host("h100-idle")], TwinCache(StandInTwin()))
    assert [p.host for p in answer.placements] == ["h100-idle", "h100-busy"]
    assert answer.placements[0].gpu_memory_utilization == 0.9
    assert answer.placements[0].kv_cache_tokens > answer.placements[1].kv_cache_tokens


def test_tp4_group_is_nvlink_peers_on_one_numa_node_with_exact_uuids():
    host = h100_nvlink_host("dgx-a")
    answer = place(_deployment(tp=4), [host], TwinCache(StandInTwin()))
    (p,) = answer.placements
    assert p.interconnect == NVLINK and p.numa_node == 0 and p.tensor_parallel_size == 4
    assert p.gpu_uuids == tuple(g.uuid for g in host.gpus[:4])
    art = p.artifacts
    assert art.cuda_visible_devices == ",".join(p.gpu_uuids)
    assert f"--gpus '\"device={','.join(p.gpu_uuids)}\"'" in art.docker_run
    assert art.kubernetes_node_selector == {"kubernetes.io/hostname": "dgx-a"}
    assert "kubernetes.io/hostname: dgx-a" in art.kubernetes


def test_tp_group_avoids_a_busy_gpu_and_stays_on_the_other_numa_node():
    host = h100_nvlink_host("dgx-a", used_bytes={1: 60 * GIB})
    p = place(_deployment(tp=4), [host], TwinCache(StandInTwin())).placements[0]
    assert p.gpu_indices == (4, 5, 6, 7) and p.numa_node == 1


def test_partial_nvlink_mesh_prefers_linked_pairs_and_never_mixes_gpu_models():
    a, b, c = (FleetGpu(uuid=f"GPU-{i}", index=i, name="NVIDIA H100 80GB HBM3", memory_total_bytes=80 * GIB,
                        memory_free_bytes=(70 + i) * GIB) for i in range(3))
    b = b.model_copy(update={"nvlink_peer_uuids": ("GPU-2",)})
    other = FleetGpu(uuid="GPU-9", index=9, name="NVIDIA A100-SXM4-80GB", memory_total_bytes=80 * GIB, memory_free_bytes=80 * GIB)
    group = best_group([a, b, c, other], 2)
    assert group.uuids == ("GPU-1", "GPU-2") and group.interconnect == NVLINK
    assert best_group([a, other], 2) is None
    assert best_group([a, c], 2).interconnect == PCIE


def test_every_rejected_host_has_a_reason():
    fleet = _fleet() + [h100_host("h100-stale").model_copy(update={"state": HostState.STALE, "state_reason": "stream failed"})]
    answer = place(_deployment(tp=4), fleet, TwinCache(StandInTwin()))
    reasons = {r.host: (r.reason, r.message) for r in answer.rejections}
    assert [p.host for p in answer.placements] == ["dgx-a"]
    assert reasons["a100-mig"] == (RejectReason.TP_IMPOSSIBLE, "TP=4 impossible: MIG instances run TP=1 only")
    assert reasons["h100-idle"][0] is RejectReason.TP_IMPOSSIBLE
    assert reasons["h100-stale"] == (RejectReason.STATE, "host is stale: stream failed")
    assert len(answer.rejections) + len(answer.placements) == len(fleet)


def test_mig_instances_are_tp1_targets_and_too_small_slices_are_rejected():
    small = place(_deployment(), [a100_mig_host("a100-mig")], TwinCache(StandInTwin(params_b=8)))
    (p,) = small.placements
    assert p.mig and p.gpu_uuids[0].startswith("MIG-") and p.tensor_parallel_size == 1 and "3g.40gb" in p.gpu_name
    big = place(_deployment(), [a100_mig_host("a100-mig")], TwinCache(StandInTwin(params_b=30)))
    assert not big.placements
    (r,) = big.rejections
    assert r.reason is RejectReason.MIG_TOO_SMALL and "MIG slice too small" in r.message


def test_fp8_is_rejected_on_gpus_without_native_fp8():
    answer = place(_deployment(model={"kv_cache_dtype": "fp8"}), _fleet(), TwinCache(StandInTwin()), fp8=True)
    reasons = {r.host: r for r in answer.rejections}
    assert reasons["a100-mig"].reason is RejectReason.NO_FP8 and "8.0 < 8.9" in reasons["a100-mig"].message
    assert {p.host for p in answer.placements} == {"h100-idle", "h100-busy", "dgx-a"}
    assert needs_fp8(_deployment(model={"kv_cache_dtype": "fp8"}).plan, None)
    assert needs_fp8(_deployment().plan, "fp8") and not needs_fp8(_deployment().plan, "awq")


def test_filters_labels_and_gpu_types():
    fleet = [h100_host("h100-a", labels={"zone": "a"}), h100_host("h100-b", labels={"zone": "b"}), a100_mig_host("mig")]
    by_label = place(_deployment(filter=HostFilter(labels={"zone": "b"})), fleet, TwinCache(StandInTwin()))
    assert [p.host for p in by_label.placements] == ["h100-b"]
    by_type = place(_deployment(filter=HostFilter(gpu_types=("a100",))), fleet, TwinCache(StandInTwin()))
    assert [p.host for p in by_type.placements] == ["mig"]
    assert {r.reason for r in by_type.rejections} == {RejectReason.FILTERED}


def test_slo_on_itl_moves_to_a_larger_tp_group():
    # Stand-in ITL is 10 ms / TP: an 4 ms SLO needs TP >= 4 (TP unset: the planner searches).
    answer = place(_deployment(max_itl_seconds=0.004), [h100_nvlink_host("dgx-a"), h100_host("h100-idle")], TwinCache(StandInTwin()))
    assert [p.tensor_parallel_size for p in answer.placements] == [4]
    (r,) = answer.rejections
    assert r.host == "h100-idle" and r.reason is RejectReason.SLO


def test_user_utilization_is_an_upper_bound():
    answer = place(_deployment(policy={"gpu_memory_utilization": 0.5}), [h100_host("h100-idle")], TwinCache(StandInTwin()))
    assert answer.placements[0].gpu_memory_utilization == 0.5


def test_twin_runs_once_per_distinct_gpu_shape():
    twin = StandInTwin()
    hosts = [h100_host(f"idle-{i:03d}") for i in range(150)] + [h100_host(f"busy-{i:03d}", busy=True) for i in range(150)]
    answer = place(_deployment(), hosts, TwinCache(twin))
    assert len(answer.placements) == 10 and not answer.rejections
    # (H100, idle bucket), (H100, busy bucket), and the chosen GPU once more after its replica is charged
    assert twin.calls == 3


@settings(max_examples=200, deadline=None)
@given(total_gib=st.floats(8, 200), used_fraction=st.floats(0, 1), cap=st.sampled_from([None, 0.5, 0.95, 1.0]))
def test_utilization_never_asks_for_more_than_is_free(total_gib: float, used_fraction: float, cap: float | None):
    total = int(total_gib * GIB)
    free = int(total * (1 - used_fraction))
    u = sizing.max_utilization(total, free, POLICY, cap)
    if u is None:
        assert free < POLICY.startup_overhead_bytes + total * 0.02 + POLICY.free_bucket_bytes
        return
    assert 0.01 <= u <= (cap or POLICY.default_utilization)
    assert sizing.reserved_bytes(total, u, POLICY) <= free


@pytest.mark.parametrize("free_gib", [0.5, 1.0])
def test_no_utilization_when_only_the_context_would_fit(free_gib: float):
    assert sizing.max_utilization(80 * GIB, int(free_gib * GIB), POLICY) is None


def test_repeated_place_replans_only_changed_hosts_and_never_mixes_deployments():
    from planner_service.fleet.registry import FleetRegistry

    reg = FleetRegistry()
    for host in _fleet():
        reg.update(host.address, host)
    first = reg.snapshot()
    reg.update("h100-busy:50052", h100_host("h100-busy", busy=False))  # the other process exited
    second = reg.snapshot()
    assert [a is b for a, b in zip(first, second)] == [True, True, False, True]  # a100, dgx, busy, idle
    cache = TwinCache(StandInTwin())
    tp1 = place(_deployment(), second, cache)
    assert {p.host: p.gpu_memory_utilization for p in tp1.placements}["h100-busy"] == 0.9
    tp4 = place(_deployment(tp=4), second, cache)  # same cache, other deployment: no stale memo
    assert [p.tensor_parallel_size for p in tp4.placements] == [4]
    assert place(_deployment(), second, cache) == tp1


def test_incremental_ranking_equals_a_fresh_ranking_after_every_change(monkeypatch):
    """Place keeps each host's result across snapshots and re-plans only hosts whose object changed;
    after adds, removals, state changes and memory changes the answer equals a from-scratch one."""
    import random

    from planner_service.fleet import placement
    from planner_service.fleet.registry import FleetRegistry

    rng = random.Random(7)
    shapes = (lambda n: h100_host(n), lambda n: h100_host(n, busy=True), lambda n: h100_nvlink_host(n),
              lambda n: h100_nvlink_host(n, used_bytes={0: 60 * GIB, 3: 70 * GIB}), lambda n: a100_mig_host(n))
    reg = FleetRegistry()
    names = [f"node-{i:03d}" for i in range(40)]
    for name in names:
        host = rng.choice(shapes)(name)
        reg.update(host.address, host)
    planned: list[str] = []
    real = placement.place_on_host

    def counting(deployment, host, *args, **kwargs):  # noqa: ANN001, ANN202
        if kwargs.get("free") is None:  # the untouched-budget ranking, not packing's re-plans
            planned.append(host.host)
        return real(deployment, host, *args, **kwargs)

    monkeypatch.setattr(placement, "place_on_host", counting)
    cache = TwinCache(StandInTwin())
    deployment = _deployment(replicas=3)
    assert place(deployment, reg.snapshot(), cache) == place(deployment, reg.snapshot(), TwinCache(StandInTwin()))
    absent: set[str] = set()  # hosts left out of the previous view come back as new
    for step in range(12):
        changed = rng.sample(names, 5)
        for name in changed:
            host = rng.choice(shapes)(name)
            reg.update(host.address, host)
        if step % 3 == 1:
            reg.mark_broken(f"{names[step]}:50052", "stream failed")
            changed.append(names[step])
        planned.clear()
        hosts = reg.snapshot()
        if step % 4 == 2:  # a host leaves the view
            hosts = tuple(h for h in hosts if h.host != names[-1 - step])
        incremental = place(deployment, hosts, cache)
        assert planned and set(planned) <= set(changed) | absent  # the changed hosts, nothing else
        absent = set(names) - {h.host for h in hosts}
        assert incremental == place(deployment, hosts, TwinCache(StandInTwin()))
        assert incremental.hosts_considered == len(hosts)
