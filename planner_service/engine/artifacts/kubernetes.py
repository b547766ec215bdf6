"""Kubernetes manifests: PersistentVolumeClaim (HF cache) + Deployment + Service, one multi-document YAML.

The container runs the image's own entrypoint (``vllm serve``) with the plan's arguments as ``args``,
so no shell quoting is involved. The startupProbe allows for downloading and loading the weights
(``Deployment.startup_failure_threshold``); liveness and readiness only start after it succeeds, so a
big model is not killed mid-load. GPU UUID pinning is not expressible through the NVIDIA device
plugin, so with a device-plugin resource (``nvidia.com/gpu``, or ``nvidia.com/mig-<profile>`` for a
MIG slice) only the node is pinned (``kubernetes.io/hostname``). With ``dra_device_class`` set, a DRA
``ResourceClaim`` (``resource.k8s.io/v1``) requests exactly ``gpu_uuids`` of that DeviceClass with a CEL
selector on the NVIDIA DRA driver's ``uuid`` attribute, and the pod references the claim instead.
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
DRA_API_VERSION = "resource.k8s.io/v1"
DRA_ATTRIBUTE_DOMAIN = "gpu.nvidia.com"  # the NVIDIA DRA driver qualifies its device attributes with its name
DRA_REQUEST_NAME = "gpus"


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
    if d.dra_device_class:
        claim = resource_claim(d)
        # The claim carries the devices: no device-plugin resource, or the pod would need both.
        resources: dict = {"requests": {"cpu": str(d.cpu_request), "memory": f"{d.memory_request_gib}Gi"},
                           "claims": [{"name": DRA_REQUEST_NAME}]}
    else:
        claim = None
        resources = {
            "limits": {d.gpu_resource_name: gpus},
            "requests": {d.gpu_resource_name: gpus, "cpu": str(d.cpu_request), "memory": f"{d.memory_request_gib}Gi"},
        }
    container = {
        "name": "vllm",
        "image": d.image,
        "args": serve_args(d),
        "ports": [{"name": "http", "containerPort": d.port}],
        "env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": HF_SECRET_NAME, "key": HF_SECRET_KEY}}}],
        "resources": resources,
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
    if claim is not None:
        pod_spec["resourceClaims"] = [{"name": DRA_REQUEST_NAME, "resourceClaimName": claim["metadata"]["name"]}]
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
    return ([claim] if claim is not None else []) + [pvc, deployment, service]


def resource_claim(d: Deployment) -> dict:
    """A ResourceClaim for exactly ``d.gpu_uuids`` (GPU or MIG UUIDs) of ``d.dra_device_class``."""
    uuids = ", ".join(f'"{u}"' for u in d.gpu_uuids)
    return {
        "apiVersion": DRA_API_VERSION,
        "kind": "ResourceClaim",
        "metadata": {"name": f"{d.name}-gpus", "labels": {"app.kubernetes.io/name": d.name, "app.kubernetes.io/component": "vllm"}},
        "spec": {"devices": {"requests": [{
            "name": DRA_REQUEST_NAME,
            "exactly": {
                "deviceClassName": d.dra_device_class,
                "allocationMode": "ExactCount",
                "count": len(d.gpu_uuids),
                "selectors": [{"cel": {"expression": f'device.attributes["{DRA_ATTRIBUTE_DOMAIN}"].uuid in [{uuids}]'}}],
            },
        }]}},
    }


def render_kubernetes(d: Deployment) -> str:
    return dump_yaml_all(manifests(d))
