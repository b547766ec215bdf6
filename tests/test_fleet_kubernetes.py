"""Kubernetes-native placement output: the engine's one renderer, per-replica names, GFD label meanings,
MIG resource names and DRA ResourceClaims on the chosen UUIDs; every object valid (kubernetes-validate,
strict) against the latest schemas the package knows (resource.k8s.io/v1 included)."""

from __future__ import annotations

import shlex

import kubernetes_validate
import pytest
import yaml

from gpu_agent.convert import inventory_to_proto
from gpu_agent.factory import replay_backend
from gpu_agent.watchdog import CallGuard
from helpers.paths import CAPTURES, H100_CAPTURE
from planner_service.engine.artifacts import deployment_from_plan, serve_args
from planner_service.engine.models import ModelOptions, PlanRequest
from planner_service.engine.profiles import resolve_profile
from planner_service.fleet.evaluator import TwinProvider
from planner_service.fleet.inventory_adapter import host_from_inventory
from planner_service.fleet.models import Deployment, GpuPinning, HostState
from planner_service.fleet.packing import plan_fleet
from planner_service.fleet.models import FleetPlanRequest
from planner_service.fleet.placement import place
from planner_service.fleet.testing import a100_mig_host, h100_host, h100_nvlink_host

K8S = kubernetes_validate.latest_version()


def _validate(manifest: str) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(manifest) if d]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S, strict=True)  # raises on any schema violation
    return docs


@pytest.fixture(scope="module")
def qwen():
    patch = pytest.MonkeyPatch()
    patch.setenv("HF_HUB_OFFLINE", "1")  # the bundled catalog answers; never the network
    deployment = Deployment(name="chat", plan=PlanRequest(model=ModelOptions(model="Qwen/Qwen3-8B", max_model_len=8192)), replicas=2)
    cache, fp8 = TwinProvider().prepare(deployment)
    yield deployment, cache, fp8
    patch.undo()


def test_replicas_get_unique_names_and_the_engines_serve_command(qwen):
    deployment, cache, fp8 = qwen
    busy = h100_nvlink_host("dgx-a", used_bytes={0: 70 << 30, 1: 70 << 30})  # the device plugin must not pick these
    answer = place(deployment, [busy, h100_host("h100-a")], cache, fp8=fp8)
    names = [p.artifacts.kubernetes_name for p in answer.selected]
    assert names == ["vllm-chat-0", "vllm-chat-1"]
    for p in answer.selected:
        docs = _validate(p.artifacts.kubernetes)
        kinds = [d["kind"] for d in docs]
        assert all(d["metadata"]["name"].startswith(p.artifacts.kubernetes_name) for d in docs)
        plan = cache.run(cache._placement_keys[(p.address, p.gpu_uuids, p.gpu_memory_utilization, p.memory_free_bytes)], None)
        engine = deployment_from_plan(plan, cache._requests[cache._placement_keys[(p.address, p.gpu_uuids, p.gpu_memory_utilization,
                                                                                    p.memory_free_bytes)]],
                                      serve_flags=resolve_profile(plan.vllm_version).serve_flags)
        # One renderer: the fleet's command is the engine's, pinned to the GPUs.
        assert shlex.split(p.artifacts.serve_command)[3:] == serve_args(engine)
        assert "--max-num-batched-tokens" in p.artifacts.serve_command
        if p.host == "dgx-a":  # other GPUs of that node could not host it: the exact GPUs matter
            assert p.artifacts.kubernetes_gpu_pinning is GpuPinning.DRA and kinds[0] == "ResourceClaim"
            claim = docs[0]["spec"]["devices"]["requests"][0]["exactly"]
            assert claim["deviceClassName"] == "gpu.nvidia.com" and claim["count"] == 1
            assert p.gpu_uuids[0] in claim["selectors"][0]["cel"]["expression"]
            pod = docs[2]["spec"]["template"]["spec"]
            assert pod["resourceClaims"] == [{"name": "gpus", "resourceClaimName": f"{p.artifacts.kubernetes_name}-gpus"}]
            assert "nvidia.com/gpu" not in str(pod["containers"][0]["resources"])
        else:  # a one-GPU node: the device plugin can only give that GPU
            assert p.artifacts.kubernetes_gpu_pinning is GpuPinning.NODE and "ResourceClaim" not in kinds
            assert docs[1]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}


def test_mig_slices_request_the_mig_resource_or_a_mig_claim(qwen):
    deployment, cache, fp8 = qwen
    mig_only = deployment.model_copy(update={"replicas": 1})
    node = place(mig_only, [a100_mig_host("a100-mig")], cache, fp8=fp8)
    (p,) = node.selected
    assert p.mig and p.artifacts.kubernetes_gpu_pinning is GpuPinning.NODE  # the only 3g.40gb slice
    docs = _validate(p.artifacts.kubernetes)
    assert docs[1]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/mig-3g.40gb": "1"}
    dra = place(mig_only.model_copy(update={"gpu_pinning": GpuPinning.DRA}), [a100_mig_host("a100-mig")], cache, fp8=fp8)
    docs = _validate(dra.selected[0].artifacts.kubernetes)
    request = docs[0]["spec"]["devices"]["requests"][0]["exactly"]
    assert request["deviceClassName"] == "mig.nvidia.com" and p.gpu_uuids[0] in request["selectors"][0]["cel"]["expression"]


def test_fleet_plan_names_every_replica_and_validates(qwen):
    deployment, cache, fp8 = qwen
    request = FleetPlanRequest(deployments=(deployment.model_copy(update={"replicas": 3}),))
    answer = plan_fleet(request, [h100_nvlink_host("dgx-a"), h100_host("h100-a")], lambda d: (cache, fp8))
    names = [a.placement.artifacts.kubernetes_name for a in answer.assignments]
    assert names == ["vllm-chat-0", "vllm-chat-1", "vllm-chat-2"]
    for a in answer.assignments:
        _validate(a.placement.artifacts.kubernetes)


@pytest.mark.skipif(not H100_CAPTURE.is_dir(), reason="shared/fixtures/nvidia capture not present")
def test_gfd_labels_follow_gpu_feature_discovery_meanings():
    """nvidia.com/mig.capable = the GPU supports MIG (an H100 does, with MIG off), not "MIG is on"."""
    h100 = replay_backend(H100_CAPTURE, "idle", "nvml").collect(CallGuard(5))
    labels = host_from_inventory(inventory_to_proto(h100), "h:1").labels
    assert labels["nvidia.com/mig.capable"] == "true" and labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert labels["nvidia.com/gpu.memory"] == str(85520809984 // (1 << 20)) and labels["nvidia.com/gpu.count"] == "1"
    without_mig = h100.model_copy(update={"gpus": tuple(g.model_copy(update={"mig_mode": None}) for g in h100.gpus)})
    assert host_from_inventory(inventory_to_proto(without_mig), "h:1").labels["nvidia.com/mig.capable"] == "false"
    capture = CAPTURES / "a100-80gb-mig"
    if capture.is_dir():
        a100 = replay_backend(capture, "idle").collect(CallGuard(5))
        host = host_from_inventory(inventory_to_proto(a100), "a:1")
        assert host.labels["nvidia.com/mig.capable"] == "true" and host.state is HostState.READY
