"""Fleet plans: several deployments share one per-GPU budget, deterministically, never over-committed."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from planner_service.engine.models import HardwareOptions, ModelOptions, PlanRequest, WorkloadOptions
from planner_service.fleet.models import Deployment, FleetPlanRequest, MemorySizing
from planner_service.fleet.packing import plan_fleet
from planner_service.fleet.placement import TwinCache
from planner_service.fleet.testing import StandInTwin, a100_mig_host, h100_host, h100_nvlink_host

GIB = 1 << 30


def _dep(name: str, params_b: float, replicas: int = 1, tp: int | None = None, concurrency: int = 8, sizing=None) -> Deployment:
    plan = PlanRequest(
        model=ModelOptions(model=name, max_model_len=4096, params_b=params_b),
        hardware=HardwareOptions(tensor_parallel_size=tp),
        workload=WorkloadOptions(prompt_tokens=1024, gen_tokens=256, concurrency=concurrency),
    )
    return Deployment(name=name, plan=plan, replicas=replicas, sizing=sizing)


def _prepare(deployment: Deployment):
    return TwinCache(StandInTwin(params_b=deployment.plan.model.params_b or 8)), False


def _fleet():
    return [h100_host("h100-idle"), h100_host("h100-busy", busy=True), h100_nvlink_host("dgx-a"), a100_mig_host("a100-mig")]


def _check_budget(hosts, answer):
    free = {(h.host, g.uuid): g.memory_free_bytes for h in hosts for g in h.gpus}
    charged: dict[tuple[str, str], int] = {}
    for a in answer.assignments:
        for uuid in a.placement.gpu_uuids:
            key = (a.placement.host, uuid)
            charged[key] = charged.get(key, 0) + a.placement.reserved_bytes
    for key, reserved in charged.items():
        assert reserved <= free[key], f"{key} over-committed: {reserved} > {free[key]}"
    for b in answer.budgets:
        key = (b.host, b.uuid)
        assert b.remaining_bytes == free[key] - charged[key] >= 0
    assert len(answer.budgets) == len(charged)


def test_small_models_share_a_gpu_when_its_free_memory_allows():
    hosts = [h100_host("only")]
    request = FleetPlanRequest(deployments=(_dep("small-a", 1.0), _dep("small-b", 1.0)))
    answer = plan_fleet(request, hosts, _prepare)
    assert [a.placement.host for a in answer.assignments] == ["only", "only"]
    assert not answer.unplaced
    # FIT_WORKLOAD: each takes only what its workload needs, far below the 0.9 default
    assert all(a.placement.gpu_memory_utilization < 0.5 for a in answer.assignments)
    _check_budget(hosts, answer)


def test_what_does_not_fit_is_reported_with_reasons():
    hosts = [h100_host("only")]
    request = FleetPlanRequest(deployments=(_dep("big", 30.0, sizing=MemorySizing.MAX_FREE), _dep("second", 30.0)))
    answer = plan_fleet(request, hosts, _prepare)
    assert [a.deployment for a in answer.assignments] == ["big"]
    (u,) = answer.unplaced
    assert u.deployment == "second" and u.replica == 0 and u.reason.startswith("only: ")
    _check_budget(hosts, answer)


def test_replicas_spread_over_hosts_and_tp_groups_are_disjoint():
    hosts = _fleet()
    answer = plan_fleet(FleetPlanRequest(deployments=(_dep("tp2", 30.0, replicas=3, tp=2, sizing=MemorySizing.MAX_FREE),)), hosts, _prepare)
    groups = [a.placement.gpu_uuids for a in answer.assignments]
    assert len(groups) == 3 and all(len(g) == 2 for g in groups)
    assert len({u for g in groups for u in g}) == 6  # MAX_FREE replicas never share a GPU
    _check_budget(hosts, answer)


def test_hosts_sharing_a_gpu_uuid_keep_separate_budgets():
    # Replayed captures (and cloned VM images) can report the same UUID on two hosts.
    idle, busy = h100_host("h100-idle"), h100_host("h100-busy", busy=True)
    busy = busy.model_copy(update={"gpus": (busy.gpus[0].model_copy(update={"uuid": idle.gpus[0].uuid}),)})
    answer = plan_fleet(FleetPlanRequest(deployments=(_dep("m", 8.0, replicas=2, sizing=MemorySizing.MAX_FREE),)), [idle, busy], _prepare)
    assert sorted(a.placement.host for a in answer.assignments) == ["h100-busy", "h100-idle"]
    _check_budget([idle, busy], answer)


def test_two_agents_reporting_one_hostname_are_two_hosts():
    a, b = h100_host("twin", address="10.0.0.1:50052"), h100_host("twin", address="10.0.0.2:50052")
    answer = plan_fleet(FleetPlanRequest(deployments=(_dep("m", 30.0, replicas=2, sizing=MemorySizing.MAX_FREE),)), [a, b], _prepare)
    assert sorted(x.placement.address for x in answer.assignments) == ["10.0.0.1:50052", "10.0.0.2:50052"]


def test_same_input_same_plan_whatever_the_host_order():
    request = FleetPlanRequest(deployments=(_dep("a", 8.0, replicas=4), _dep("b", 1.0, replicas=5), _dep("c", 30.0, tp=2)))
    hosts = _fleet()
    first = plan_fleet(request, hosts, _prepare)
    shuffled = list(hosts)
    random.Random(7).shuffle(shuffled)
    assert plan_fleet(request, shuffled, _prepare) == first


@settings(max_examples=40, deadline=None)
@given(
    used=st.lists(st.integers(0, 70), min_size=8, max_size=8),
    models=st.lists(st.tuples(st.sampled_from([0.5, 1.0, 8.0, 14.0, 30.0]), st.integers(1, 4), st.sampled_from([None, 1, 2, 4])),
                    min_size=1, max_size=5),
)
def test_no_plan_ever_exceeds_a_gpus_free_memory(used, models):
    hosts = [h100_nvlink_host("dgx-a", used_bytes={i: u * GIB for i, u in enumerate(used)}), h100_host("h100-busy", busy=True),
             a100_mig_host("a100-mig")]
    request = FleetPlanRequest(deployments=tuple(_dep(f"m{i}", p, r, tp) for i, (p, r, tp) in enumerate(models)))
    answer = plan_fleet(request, hosts, _prepare)
    _check_budget(hosts, answer)
    assert len(answer.assignments) + len(answer.unplaced) == sum(r for _, r, _ in models)
