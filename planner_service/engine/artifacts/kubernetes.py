"""Kubernetes manifests: PersistentVolumeClaim (HF cache) + Deployment + Service, one multi-document YAML.

The container runs the image's own entrypoint (``vllm serve``) with the plan's arguments as ``args``,
so no shell quoting is involved. The startupProbe allows for downloading and loading the weights
(``Deployment.startup_failure_threshold``); liveness and readiness only start after it succeeds, so a
big model is not killed mid-load. GPU UUID pinning is not expressible through the NVIDIA device
plugin, so on Kubernetes only the node is pinned (``kubernetes.io/hostname``).
"""

from __future__ import annotations

import math

from planner_service.engine.artifacts.deployment import (
    HF_CACHE_IN_CONTAINER,
    PROBE_PERIOD_SECONDS,
    Deployment,
    dump_yaml_all,
)
from planner_service.engine.artifacts.serve import serve_args

GIB = 1 << 30
HF_SECRET_NAME = "hf-token-secret"
HF_SECRET_KEY = "token"


def pvc_size(d: Deployment) -> str:
    """Room for the checkpoint plus 20 % and 10 GiB for tokenizer files and a second revision."""
    return f"{math.ceil(d.weights_bytes_total * 1.2 / GIB) + 10}Gi"


def shm_size(d: Deployment) -> str:
    # NCCL's shared-memory transport grows with the number of local ranks.
    return f"{max(2, 2 * d.num_gpus)}Gi"


def _probe(d: Deployment, failure_threshold: int) -> dict:
    return {
        "httpGet": {"path": "/health", "port": d.port},
        "periodSeconds": PROBE_PERIOD_SECONDS,
        "failureThreshold": failure_threshold,
    }


def manifests(d: Deployment) -> list[dict]:
    labels = {"app.kubernetes.io/name": d.name, "app.kubernetes.io/component": "vllm"}
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": f"{d.name}-hf-cache", "labels": labels},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": pvc_size(d)}}},
    }
    gpus = str(d.num_gpus)
    container = {
        "name": "vllm",
        "image": d.image,
        "args": serve_args(d),
        "ports": [{"name": "http", "containerPort": d.port}],
        "env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": HF_SECRET_NAME, "key": HF_SECRET_KEY}}}],
        "resources": {
            "limits": {"nvidia.com/gpu": gpus},
            "requests": {"nvidia.com/gpu": gpus, "cpu": str(d.cpu_request), "memory": f"{d.memory_request_gib}Gi"},
        },
        "volumeMounts": [
            {"name": "hf-cache", "mountPath": HF_CACHE_IN_CONTAINER},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
        "startupProbe": _probe(d, d.startup_failure_threshold),
        "livenessProbe": _probe(d, 3),
        "readinessProbe": _probe(d, 3),
    }
    pod_spec: dict = {
        "containers": [container],
        "volumes": [
            {"name": "hf-cache", "persistentVolumeClaim": {"claimName": pvc["metadata"]["name"]}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size(d)}},
        ],
    }
    if d.hostname:
        pod_spec["nodeSelector"] = {"kubernetes.io/hostname": d.hostname}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": d.name, "labels": labels},
        "spec": {
            "replicas": 1,
            # Recreate: two pods cannot both hold the GPUs (and the RWO cache) during a rollout.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": d.name, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": labels,
            "ports": [{"name": "http", "port": 80, "targetPort": d.port, "protocol": "TCP"}],
        },
    }
    return [pvc, deployment, service]


def render_kubernetes(d: Deployment) -> str:
    return dump_yaml_all(manifests(d))
