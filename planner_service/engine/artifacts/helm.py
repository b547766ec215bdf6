"""Values for the vLLM production-stack Helm chart (``servingEngineSpec.modelSpec[]``, reference §6)."""

from __future__ import annotations

from planner_service.engine.artifacts.deployment import IMAGE_REPOSITORY, PROBE_PERIOD_SECONDS, Deployment, dump_yaml
from planner_service.engine.artifacts.kubernetes import HF_SECRET_KEY, HF_SECRET_NAME, pvc_size, shm_size
from planner_service.engine.artifacts.serve import serve_args

# Flags that have a first-class vllmConfig key; everything else goes to extraArgs.
_KEYED_FLAGS = {"--tensor-parallel-size", "--max-model-len", "--gpu-memory-utilization", "--max-num-seqs", "--dtype"}


def _extra_args(d: Deployment) -> list[str]:
    args = serve_args(d)[1:]  # the chart supplies the model (modelURL)
    extra: list[str] = []
    i = 0
    while i < len(args):
        flag = args[i]
        takes_value = i + 1 < len(args) and not args[i + 1].startswith("--")
        if flag not in _KEYED_FLAGS and flag != "--no-enable-prefix-caching":
            extra.append(flag)
            if takes_value:
                extra.append(args[i + 1])
        i += 2 if takes_value else 1
    return extra


def helm_values(d: Deployment) -> dict:
    c = d.config
    vllm_config: dict = {
        "enablePrefixCaching": c.enable_prefix_caching,
        "maxModelLen": c.max_model_len,
        "tensorParallelSize": c.tensor_parallel_size,
        "maxNumSeqs": c.max_num_seqs,
    }
    if c.kv_cache_memory_bytes is None:
        vllm_config["gpuMemoryUtilization"] = c.gpu_memory_utilization
    if d.dtype:
        vllm_config["dtype"] = d.dtype
    extra = _extra_args(d)
    if extra:
        vllm_config["extraArgs"] = extra
    probe = {"httpGet": {"path": "/health", "port": d.port}}
    spec: dict = {
        "name": d.name,
        "repository": IMAGE_REPOSITORY,
        "tag": f"v{d.vllm_version}",
        "modelURL": d.model,
        "replicaCount": 1,
        "requestCPU": d.cpu_request,
        "requestMemory": f"{d.memory_request_gib}Gi",
        "requestGPU": d.num_gpus,
        "pvcStorage": pvc_size(d),
        "pvcAccessMode": ["ReadWriteOnce"],
        "shmSize": shm_size(d),
        "hf_token": {"secretName": HF_SECRET_NAME, "secretKey": HF_SECRET_KEY},
        "vllmConfig": vllm_config,
    }
    if d.hostname:
        spec["nodeSelectorTerms"] = [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [d.hostname]}]}
        ]
    return {
        "servingEngineSpec": {
            "runtimeClassName": "nvidia",
            "containerPort": d.port,
            "servicePort": 80,
            "startupProbe": {**probe, "periodSeconds": PROBE_PERIOD_SECONDS,
                             "failureThreshold": d.startup_failure_threshold},
            "livenessProbe": probe,
            "readinessProbe": probe,
            "modelSpec": [spec],
        }
    }


def render_helm_values(d: Deployment) -> str:
    return dump_yaml(helm_values(d))
