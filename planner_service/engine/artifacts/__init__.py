"""Deployment artifacts rendered from a plan: serve command, docker run, compose, Kubernetes, Helm.

All renderers are pure functions of a ``Deployment`` (see ``deployment.py``); ``render_artifacts``
builds every one of them into the response's ``Artifacts``.
"""

from __future__ import annotations

from planner_service.engine.artifacts.deployment import Deployment, deployment_from_plan
from planner_service.engine.artifacts.docker import render_docker_compose, render_docker_run
from planner_service.engine.artifacts.helm import render_helm_values
from planner_service.engine.artifacts.kubernetes import render_kubernetes
from planner_service.engine.artifacts.serve import render_serve_command, render_serve_script, serve_args
from planner_service.engine.models import Artifacts


def render_artifacts(d: Deployment) -> Artifacts:
    return Artifacts(
        serve_command=render_serve_command(d),
        docker_run=render_docker_run(d),
        docker_compose=render_docker_compose(d),
        kubernetes=render_kubernetes(d),
        helm_values=render_helm_values(d),
    )


__all__ = [
    "Deployment",
    "deployment_from_plan",
    "render_artifacts",
    "render_docker_compose",
    "render_docker_run",
    "render_helm_values",
    "render_kubernetes",
    "render_serve_command",
    "render_serve_script",
    "serve_args",
]
