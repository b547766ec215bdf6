"""``docker run`` and docker-compose renderers (image ``vllm/vllm-openai``, entrypoint ``vllm serve``).

The HF token is always passed by name (``--env HF_TOKEN`` / compose ``environment: [HF_TOKEN]``), so
Docker copies it from the caller's environment and no secret is ever written into an artifact.
``--ipc=host`` is required: PyTorch workers share tensors through /dev/shm.
"""

from __future__ import annotations

import shlex

from planner_service.engine.artifacts.deployment import HF_CACHE_IN_CONTAINER, Deployment, dump_yaml
from planner_service.engine.artifacts.serve import serve_args


def _gpus_flag(d: Deployment) -> str:
    if d.gpu_uuids:
        # Docker parses the value as CSV, so the device list needs its own inner double quotes.
        return shlex.quote(f'"device={",".join(d.gpu_uuids)}"')
    return "all"


def render_docker_run(d: Deployment) -> str:
    parts = [
        "docker run --runtime nvidia",
        f"--gpus {_gpus_flag(d)}",
        "--ipc=host",
        f"-v ~/.cache/huggingface:{HF_CACHE_IN_CONTAINER}",
        "--env HF_TOKEN",
        f"-p {d.port}:{d.port}",
        d.image,
        shlex.join(serve_args(d)),
    ]
    return " \\\n  ".join(parts)


def compose_document(d: Deployment) -> dict:
    device: dict = {"driver": "nvidia", "capabilities": ["gpu"]}
    if d.gpu_uuids:
        device["device_ids"] = list(d.gpu_uuids)  # compose forbids count together with device_ids
    else:
        device["count"] = d.num_gpus
    service = {
        "image": d.image,
        "command": serve_args(d),
        "ipc": "host",
        "ports": [f"{d.port}:{d.port}"],
        "volumes": [f"~/.cache/huggingface:{HF_CACHE_IN_CONTAINER}"],
        "environment": ["HF_TOKEN"],
        "restart": "unless-stopped",
        "deploy": {"resources": {"reservations": {"devices": [device]}}},
    }
    return {"services": {d.name: service}}


def render_docker_compose(d: Deployment) -> str:
    return dump_yaml(compose_document(d))
