"""PlanFleet deployments given as request_rate + SLOs: sized by the capacity plan, then packed."""

from __future__ import annotations

import asyncio
import math

import pytest
import yaml

from clients.cli.main import main
from clients.sdk.errors import InvalidArgument
from clients.sdk.fleet_client import FleetClient
from helpers.fleet import FleetPlanner
from helpers.waiting import wait_until
from planner_service.api import default_resolver
from planner_service.engine.bench_models import SloTarget
from planner_service.engine.models import ModelOptions, PlanRequest, WorkloadOptions
from planner_service.fleet.evaluator import TwinProvider
from planner_service.fleet.models import Deployment, FleetPlanRequest, HostState, MemorySizing
from planner_service.fleet.registry import FleetTimings
from planner_service.fleet.runtime import FleetSettings
from planner_service.fleet.slo_sizing import size_deployments
from planner_service.fleet.testing import BackgroundLoop, a100_mig_host, h100_host, h100_nvlink_host

MODEL = "Qwen/Qwen3-0.6B"
INVENTORY = {"10.8.0.1:50052": h100_nvlink_host("dgx-a", gpus=4), "10.8.0.2:50052": h100_host("h100-idle")}
FAST = FleetTimings(heartbeat_interval_seconds=0.2, registration_lease_seconds=1.0, stale_after_seconds=5,
                    gone_after_seconds=10, evict_after_seconds=30, sweep_interval_seconds=0.05,
                    backoff_initial_seconds=0.05, backoff_max_seconds=0.2)


def _rated(rate: float, **extra) -> Deployment:
    plan = PlanRequest(model=ModelOptions(model=MODEL, max_model_len=8192),
                       workload=WorkloadOptions(prompt_tokens=512, gen_tokens=128))
    return Deployment(name="chat", plan=plan, request_rate=rate,
                      slos=(SloTarget(metric="ttft", milliseconds=400), SloTarget(metric="tpot", milliseconds=40)), **extra)


def _source(deployment: Deployment):  # noqa: ANN202
    return default_resolver().resolve(deployment.plan.model)


def test_a_rate_is_sized_into_replicas_of_the_best_configuration_on_the_fleets_gpus():
    hosts = [h100_nvlink_host("dgx-a", gpus=4), a100_mig_host("a100")]
    request, sizings, unplaced = size_deployments(FleetPlanRequest(deployments=(_rated(150.0),)), hosts, _source)
    (sizing,), (sized,) = sizings, request.deployments
    assert not unplaced and sizing.replicas >= 1
    assert sizing.replicas == math.ceil(150.0 / sizing.max_rate_per_replica)
    assert sizing.predicted["p99_ttft_ms"] <= 400 and sizing.predicted["p99_tpot_ms"] <= 40
    # the chosen configuration is what gets packed: its GPU type, TP, KV dtype and max_num_seqs
    assert sized.replicas == sizing.replicas and sized.filter.gpu_types == (sizing.gpu,)
    assert sizing.gpu in {g.name for h in hosts for g in h.gpus}
    assert sized.plan.hardware.tensor_parallel_size == sizing.tensor_parallel_size
    assert sized.plan.model.kv_cache_dtype == sizing.kv_cache_dtype
    assert sized.plan.engine.max_num_seqs == sizing.max_num_seqs
    assert sized.sizing is MemorySizing.MAX_FREE  # the memory budget the search simulated, not a trimmed one


def test_a_rate_no_fleet_gpu_can_serve_is_unplaced_with_the_reason():
    tight = _rated(5.0).model_copy(update={"slos": (SloTarget(metric="ttft", milliseconds=0.5),)})
    request, sizings, unplaced = size_deployments(FleetPlanRequest(deployments=(tight,)), [h100_host("a")], _source)
    assert request.deployments == () and sizings[0].replicas == 0
    assert unplaced[0].deployment == "chat" and "TTFT" in unplaced[0].reason
    none = _rated(5.0).model_copy(update={"filter": _rated(5.0).filter.model_copy(update={"gpu_types": ("B200",)})})
    _, sizings, unplaced = size_deployments(FleetPlanRequest(deployments=(none,)), [h100_host("a")], _source)
    assert sizings[0].reason == "no GPU type in the fleet matches" and unplaced


def test_rate_and_slos_come_together():
    with pytest.raises(ValueError, match="needs at least one SLO"):
        Deployment(plan=PlanRequest(model=ModelOptions(model=MODEL)), request_rate=3.0)
    with pytest.raises(ValueError, match="give request_rate"):
        Deployment(plan=PlanRequest(model=ModelOptions(model=MODEL)), slos=(SloTarget(metric="ttft", milliseconds=9),))


@pytest.fixture
def planner():
    loop = BackgroundLoop()

    async def open_stream(address: str):
        while True:
            yield INVENTORY[address]
            await asyncio.sleep(0.05)

    p = FleetPlanner(loop, FleetSettings(agents=list(INVENTORY), timings=FAST), open_stream=open_stream,
                     provider=TwinProvider())
    yield p
    p.stop()
    loop.close()


def test_fleet_plan_sizes_and_packs_a_rate_given_deployment_from_the_cli(planner, capsys, tmp_path):
    with FleetClient(planner.address) as client:
        wait_until(lambda: len([h for h in client.list_hosts() if h.state is HostState.READY]) == 2 or None)
        with pytest.raises(InvalidArgument, match="request_rate"):
            client.place(_rated(10.0))  # Place takes replicas; sizing is PlanFleet's
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"deployments": [
        {"name": "chat", "model": MODEL, "max_model_len": 8192, "workload": {"prompt_tokens": 512, "gen_tokens": 128},
         "request_rate": 150, "slo": {"ttft": 400, "tpot": 40}},
    ]}))
    code = main(["fleet", "plan", str(path), "--planner", planner.address, "--json"])
    answer = __import__("json").loads(capsys.readouterr().out)
    assert code == 0
    (sizing,) = answer["sizings"]
    assert sizing["replicas"] >= 1 and len(answer["assignments"]) == sizing["replicas"]
    assert all(a["placement"]["gpu_name"] == sizing["gpu"] for a in answer["assignments"])
    code = main(["fleet", "plan", str(path), "--planner", planner.address])
    out = capsys.readouterr().out
    assert code == 0 and "sized for a request rate" in out and "chat" in out
