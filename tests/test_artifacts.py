"""Deployment artifacts rendered from real plans (bundled catalog model, real twin, real renderers)."""

from __future__ import annotations

import shlex
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from helpers.compose_spec import compose_spec_errors
from planner_service.api import run_plan
from planner_service.engine.artifacts import Deployment, deployment_from_plan, render_artifacts, serve_args
from planner_service.engine.errors import UnsupportedVersionError
from planner_service.engine.models import EngineOptions, HardwareOptions, ModelOptions, PlanRequest
from planner_service.engine.pipeline import complete_plan

ROOT = Path(__file__).resolve().parents[1]
SHARED_FLAGS = ROOT.parent / "shared" / "reference" / "vllm-0.33-serve-flags.txt"
K8S_VERSION = "1.30.0"
LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
LLAMA_70B = "meta-llama/Llama-3.1-70B-Instruct"
UUIDS = ["GPU-2b9a5c1e-0000-1111-2222-333344445555", "GPU-7f00aa11-6666-7777-8888-9999aaaabbbb"]


def flags_033() -> frozenset[str]:
    """The reference list read from vLLM 0.33.0 (shared/ sits beside the checkout in CI); the
    bundled copy only where shared/ is absent (a clone on its own)."""
    if SHARED_FLAGS.exists():
        return frozenset(line.strip() for line in SHARED_FLAGS.read_text().splitlines() if line.startswith("--"))
    from planner_service.engine.profiles import resolve_profile

    return resolve_profile("0.33.0").serve_flags


def plan(model: str | ModelOptions = LLAMA_8B, **sections):
    options = model if isinstance(model, ModelOptions) else ModelOptions(model=model)
    request = PlanRequest(model=options, **sections)
    return request, run_plan(request)


@pytest.fixture(scope="module")
def llama8b():
    return plan(hardware=HardwareOptions(gpu="H100"))


@pytest.fixture(scope="module")
def llama70b_tp4():
    return plan(LLAMA_70B, hardware=HardwareOptions(gpu="H100", num_gpus=4, tensor_parallel_size=4))


def test_every_serve_flag_exists_in_vllm_033(llama8b, llama70b_tp4):
    flags = flags_033()
    request, response = llama70b_tp4
    fp8_request, fp8_response = plan(
        ModelOptions(model=LLAMA_8B, kv_cache_dtype="fp8", trust_remote_code=True, quantization="fp8"),
        hardware=HardwareOptions(gpu="H100"),
        engine=EngineOptions(kv_cache_memory_bytes=20 << 30, enforce_eager=True, enable_prefix_caching=False,
                             block_size=32),
    )
    for req, resp in (llama8b, (request, response), (fp8_request, fp8_response)):
        used = [a for a in serve_args(deployment_from_plan(resp, req)) if a.startswith("--")]
        assert used, "the serve command should make the plan explicit"
        assert set(used) <= flags, set(used) - flags
    fp8_args = serve_args(deployment_from_plan(fp8_response, fp8_request))
    for expected in ("--kv-cache-dtype", "--trust-remote-code", "--quantization", "--kv-cache-memory-bytes",
                     "--enforce-eager", "--no-enable-prefix-caching", "--block-size"):
        assert expected in fp8_args
    # vLLM ignores the utilization when the KV size is fixed, so the command must not suggest otherwise.
    assert "--gpu-memory-utilization" not in fp8_args
    assert fp8_args[fp8_args.index("--kv-cache-memory-bytes") + 1] == str(20 << 30)


def test_serve_command_is_the_plan(llama70b_tp4):
    request, response = llama70b_tp4
    argv = shlex.split(response.artifacts.serve_command)
    assert argv[:3] == ["vllm", "serve", LLAMA_70B]  # model positional, not --model
    c = response.config
    assert argv[argv.index("--tensor-parallel-size") + 1] == "4"
    assert argv[argv.index("--max-model-len") + 1] == str(c.max_model_len)
    assert float(argv[argv.index("--gpu-memory-utilization") + 1]) == c.gpu_memory_utilization
    assert argv[argv.index("--max-num-seqs") + 1] == str(c.max_num_seqs)
    assert "--kv-cache-dtype" not in argv  # auto is vLLM's default
    assert "--quantization" not in argv  # from the checkpoint


def test_docker_run(llama8b, monkeypatch):
    request, response = llama8b
    run = response.artifacts.docker_run
    argv = shlex.split(run.replace("\\\n", " "))
    assert argv[:2] == ["docker", "run"]
    assert "--ipc=host" in argv
    assert argv[argv.index("--gpus") + 1] == "all"
    assert argv[argv.index("--env") + 1] == "HF_TOKEN"  # taken from the caller's environment
    assert argv[argv.index("-p") + 1] == "8000:8000"
    assert "~/.cache/huggingface:/root/.cache/huggingface" in argv
    image = argv.index(f"vllm/vllm-openai:v{response.vllm_version}")
    assert argv[image + 1:] == serve_args(deployment_from_plan(response, request))


def test_no_token_is_ever_written(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_never_in_files")
    _, response = plan(hardware=HardwareOptions(gpu="H100"))
    for text in response.artifacts.model_dump().values():
        assert "hf_secret_value_never_in_files" not in text


def test_compose_parses_and_reserves_gpus(llama70b_tp4):
    _, response = llama70b_tp4
    doc = yaml.safe_load(response.artifacts.docker_compose)
    assert compose_spec_errors(doc) == []
    (service,) = doc["services"].values()
    assert service["ipc"] == "host"
    assert service["environment"] == ["HF_TOKEN"]
    assert service["command"][0] == LLAMA_70B
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "capabilities": ["gpu"], "count": 4}


def _k8s_docs(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def test_kubernetes_manifests_validate(llama8b, llama70b_tp4):
    for _, response in (llama8b, llama70b_tp4):
        docs = _k8s_docs(response.artifacts.kubernetes)
        assert [d["kind"] for d in docs] == ["PersistentVolumeClaim", "Deployment", "Service"]
        assert "&id" not in response.artifacts.kubernetes  # no YAML anchors: plain, diff-able manifests
        for doc in docs:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises on any schema violation


def test_kubernetes_deployment_details(llama70b_tp4):
    _, response = llama70b_tp4
    deployment = _k8s_docs(response.artifacts.kubernetes)[1]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert container["args"][0] == LLAMA_70B
    (env,) = container["env"]
    assert env["valueFrom"]["secretKeyRef"]["name"] == "hf-token-secret"
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"


def test_startup_probe_scales_with_weights(llama8b, llama70b_tp4):
    def startup_budget_seconds(response) -> int:
        container = _k8s_docs(response.artifacts.kubernetes)[1]["spec"]["template"]["spec"]["containers"][0]
        probe = container["startupProbe"]
        return probe["failureThreshold"] * probe["periodSeconds"]

    small, large = startup_budget_seconds(llama8b[1]), startup_budget_seconds(llama70b_tp4[1])
    assert large > small
    # 70B in bf16 is ~141 GB: at the assumed 100 MB/s download+load that alone takes ~1400 s.
    weights = llama70b_tp4[1].feasibility.per_gpu.weights_bytes * 4
    assert large >= weights / 100e6


def test_helm_values(llama70b_tp4):
    _, response = llama70b_tp4
    values = yaml.safe_load(response.artifacts.helm_values)["servingEngineSpec"]
    (spec,) = values["modelSpec"]
    cfg = spec["vllmConfig"]
    assert spec["modelURL"] == LLAMA_70B and spec["requestGPU"] == 4
    assert spec["repository"] == "vllm/vllm-openai" and spec["tag"] == f"v{response.vllm_version}"
    assert cfg["tensorParallelSize"] == 4 and cfg["maxModelLen"] == response.config.max_model_len
    assert cfg["gpuMemoryUtilization"] == response.config.gpu_memory_utilization
    assert "--max-num-batched-tokens" in cfg["extraArgs"]
    assert set(a for a in cfg["extraArgs"] if a.startswith("--")) <= flags_033()


def test_placement_pinning(llama70b_tp4):
    request, response = llama70b_tp4
    pinned = complete_plan(response, request, gpu_uuids=UUIDS, hostname="gpu-node-7")
    a = pinned.artifacts
    assert shlex.split(a.serve_command)[0] == "CUDA_VISIBLE_DEVICES=" + ",".join(UUIDS)
    gpus_value = shlex.split(a.docker_run.replace("\\\n", " "))
    assert gpus_value[gpus_value.index("--gpus") + 1] == f'"device={",".join(UUIDS)}"'
    assert compose_spec_errors(yaml.safe_load(a.docker_compose)) == []
    device = yaml.safe_load(a.docker_compose)["services"]
    device = next(iter(device.values()))["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["device_ids"] == UUIDS and "count" not in device
    deployment = _k8s_docs(a.kubernetes)[1]
    assert deployment["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "gpu-node-7"}
    kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    helm_spec = yaml.safe_load(a.helm_values)["servingEngineSpec"]["modelSpec"][0]
    assert helm_spec["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["gpu-node-7"]


def test_flag_missing_from_target_version_is_refused(llama8b):
    request, response = llama8b
    without = flags_033() - {"--max-num-seqs"}
    deployment = deployment_from_plan(response, request, serve_flags=without)
    with pytest.raises(UnsupportedVersionError, match="--max-num-seqs"):
        render_artifacts(deployment)


def test_deployment_name_is_a_dns_label():
    d = Deployment.model_construct(model="Org/Some_Model.v2:Instruct", vllm_version="0.33.0")
    assert d.name == "vllm-some-model-v2-instruct"
