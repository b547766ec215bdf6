"""Deployment snippets pinned to the exact GPUs of a placement (pure string rendering).

The pinning is what the fleet adds: ``CUDA_VISIBLE_DEVICES`` with GPU (or MIG) UUIDs, docker's
``--gpus '"device=UUID,..."'`` (the inner double quotes are required when listing several devices),
and a Kubernetes ``nodeSelector`` on ``kubernetes.io/hostname`` (with the standard device plugin
Kubernetes chooses the GPUs on that node; the planned UUIDs are kept as an annotation). The ``vllm serve`` arguments come from
the evaluated plan's ``VllmConfig``, so the command is exactly what the twin evaluated.
"""

from __future__ import annotations

import shlex
from typing import Sequence

from planner_service.engine.models import PlanResponse, VllmConfig
from planner_service.fleet.models import PlacementArtifacts

DEFAULT_IMAGE = "vllm/vllm-openai:latest"


def serve_args(model: str, config: VllmConfig) -> list[str]:
    args = ["vllm", "serve", model]
    args += ["--tensor-parallel-size", str(config.tensor_parallel_size)]
    if config.pipeline_parallel_size > 1:
        args += ["--pipeline-parallel-size", str(config.pipeline_parallel_size)]
    args += ["--max-model-len", str(config.max_model_len)]
    if config.kv_cache_memory_bytes is not None:
        args += ["--kv-cache-memory-bytes", str(config.kv_cache_memory_bytes)]
    else:
        args += ["--gpu-memory-utilization", f"{config.gpu_memory_utilization:.2f}"]
    if config.kv_cache_dtype and config.kv_cache_dtype != "auto":
        args += ["--kv-cache-dtype", config.kv_cache_dtype]
    if config.quantization:
        args += ["--quantization", config.quantization]
    args += ["--max-num-seqs", str(config.max_num_seqs)]
    if config.enforce_eager:
        args.append("--enforce-eager")
    if config.enable_expert_parallel:
        args.append("--enable-expert-parallel")
    return args


def _k8s_manifest(host: str, uuids: Sequence[str], model: str, args: list[str], image: str) -> str:
    name = "vllm-" + "".join(c if c.isalnum() else "-" for c in model.lower()).strip("-")[:40]
    container_args = "\n".join(f"            - {shlex.quote(a)}" for a in args[2:])
    return (
        "apiVersion: apps/v1\nkind: Deployment\n"
        f"metadata:\n  name: {name}\n"
        "spec:\n  replicas: 1\n"
        f"  selector:\n    matchLabels:\n      app: {name}\n"
        f"  template:\n    metadata:\n      labels:\n        app: {name}\n"
        # The device plugin picks the GPUs itself; the planned UUIDs travel as an annotation so a
        # DRA claim or an operator can honour them.
        f"      annotations:\n        vllm-planner/gpu-uuids: \"{','.join(uuids)}\"\n"
        "    spec:\n"
        f"      nodeSelector:\n        kubernetes.io/hostname: {host}\n"
        "      containers:\n"
        f"        - name: vllm\n          image: {image}\n"
        "          command: [vllm, serve]\n"
        f"          args:\n{container_args}\n"
        f"          resources:\n            limits:\n              nvidia.com/gpu: {len(uuids)}\n"
    )


def pinned_artifacts(plan: PlanResponse, host: str, uuids: Sequence[str], image: str = DEFAULT_IMAGE) -> PlacementArtifacts:
    args = serve_args(plan.model.model, plan.config)
    devices = ",".join(uuids)
    serve = f"CUDA_VISIBLE_DEVICES={devices} " + shlex.join(args)
    docker = (
        f"docker run -d --gpus '\"device={devices}\"' --ipc=host -p 8000:8000 "
        f"{image} " + shlex.join(args[2:])
    )
    return PlacementArtifacts(
        cuda_visible_devices=devices,
        serve_command=serve,
        docker_run=docker,
        kubernetes_node_selector={"kubernetes.io/hostname": host},
        kubernetes=_k8s_manifest(host, uuids, plan.model.model, args, image),
    )
