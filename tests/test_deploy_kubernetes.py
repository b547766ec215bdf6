"""Render the kustomize base and the Helm chart, validate every object against the Kubernetes schema
(kubernetes-validate, offline, strict: unknown fields fail) and check the properties that matter.

Neither helm nor kustomize is needed: deploy/tools/render.py renders the subset the manifests use
(and refuses anything outside it). Where `kubectl` or `helm` is installed, their output is compared
with ours, so the renderer cannot silently drift from the real tools.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from vllm_planner.transport.config import ServerSettings

ROOT = Path(__file__).resolve().parents[1]
KUSTOMIZE_DIR = ROOT / "deploy" / "kubernetes"
CHART_DIR = ROOT / "deploy" / "helm" / "vllm-fleet-planner"
# The oldest release we support (grpc probes are GA since 1.27) and the newest schema shipped.
K8S_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())


def _load_renderer():
    spec = importlib.util.spec_from_file_location("deploy_render", ROOT / "deploy" / "tools" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load_renderer()

HELM_VARIANTS = {
    "defaults": {},
    "mtls": {"tls": {"enabled": True, "mutual": True}},
    "no-metrics-no-agent": {"metrics": {"enabled": False}, "agent": {"enabled": False}},
}


def _kustomize_objects() -> list[dict]:
    return render.render_kustomize(KUSTOMIZE_DIR)


def _helm_objects(variant: str) -> list[dict]:
    return render.render_chart(CHART_DIR, HELM_VARIANTS[variant], release="fleet", namespace="planning")


def _by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def _one(objects: list[dict], kind: str) -> dict:
    found = _by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _all_rendered() -> list[tuple[str, list[dict]]]:
    return [("kustomize", _kustomize_objects())] + [(f"helm-{v}", _helm_objects(v)) for v in HELM_VARIANTS]


@pytest.mark.parametrize("source,objects", _all_rendered(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_object_validates_against_the_kubernetes_schema(source, objects):
    assert objects, f"{source} rendered nothing"
    for obj in objects:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def _check_agent_daemonset(ds: dict) -> None:
    pod = ds["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert {"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]} in terms[0]["matchExpressions"]
    assert {(t["key"], t["operator"]) for t in pod["tolerations"]} == {("nvidia.com/gpu", "Exists")}
    assert {t["effect"] for t in pod["tolerations"]} == {"NoSchedule", "NoExecute"}
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["command"][0] == "gpu-agent"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    # Never request a GPU: that would take it from the workloads the agent reports on.
    resources = container.get("resources", {})
    for section in ("requests", "limits"):
        assert not any(key.startswith("nvidia.com/") for key in resources.get(section, {}))
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"] and security["runAsNonRoot"] is True
    _check_grpc_probes(container)


def _check_grpc_probes(container: dict) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        grpc_probe = container[probe]["grpc"]
        # Probes use the plaintext health-only port: kubelet grpc probes cannot do TLS.
        assert grpc_probe["port"] == ports["grpc-health"]


def _check_planner(objects: list[dict]) -> None:
    deployments = _by_kind(objects, "Deployment")
    (planner,) = [d for d in deployments if d["spec"]["template"]["spec"]["containers"][0]["command"][0] == "vllm-planner-service"]
    # One replica owns the reservations; Recreate never runs two at once.
    assert planner["spec"]["replicas"] == 1 and planner["spec"]["strategy"] == {"type": "Recreate"}
    pod = planner["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    _check_grpc_probes(container)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["automountServiceAccountToken"] is False
    pdb = _one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= planner["spec"]["template"]["metadata"]["labels"].items()
    # The token comes from a Secret reference (never a literal in the manifests).
    secrets = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
    assert any("auth" in name for name in secrets)
    assert not _by_kind(objects, "Secret")
    services = _by_kind(objects, "Service")
    planner_service = [s for s in services if s["spec"].get("clusterIP") != "None"]
    assert planner_service and planner_service[0]["spec"]["selector"].items() <= pod_labels(planner).items()


def pod_labels(workload: dict) -> dict:
    return workload["spec"]["template"]["metadata"]["labels"]


def _check_headless_agent_service(objects: list[dict], namespace: str) -> None:
    ds = _one(objects, "DaemonSet")
    (headless,) = [s for s in _by_kind(objects, "Service") if s["spec"].get("clusterIP") == "None"]
    assert headless["spec"]["selector"].items() <= pod_labels(ds).items()
    port = headless["spec"]["ports"][0]["port"]
    assert port == ds["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
    # The planner discovers the agents through exactly this Service's DNS name.
    (planner,) = [d for d in _by_kind(objects, "Deployment")]
    command = planner["spec"]["template"]["spec"]["containers"][0]["command"]
    expected = f"{headless['metadata']['name']}.{namespace}.svc.cluster.local:{port}"
    assert command[command.index("--agents-dns") + 1] == expected


def _check_configs(objects: list[dict]) -> list[ServerSettings]:
    """Every config file in the ConfigMap is a valid settings file of its service (unknown keys are refused)."""
    from gpu_agent.app import GpuAgentSettings
    from planner_service.server.app import PlannerServiceSettings

    config_map = _one(objects, "ConfigMap")
    assert set(config_map["data"]) == {"planner.yaml", "gpu-agent.yaml"}
    return [PlannerServiceSettings(**yaml.safe_load(config_map["data"]["planner.yaml"])),
            GpuAgentSettings(**yaml.safe_load(config_map["data"]["gpu-agent.yaml"]))]


def test_kustomize_base_has_what_operations_need():
    objects = _kustomize_objects()
    assert {o["metadata"]["namespace"] for o in objects if o["kind"] != "Namespace"} == {"vllm-fleet-planner"}
    assert all(o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "vllm-fleet-planner" for o in objects)
    _check_agent_daemonset(_one(objects, "DaemonSet"))
    _check_planner(objects)
    _check_headless_agent_service(objects, "vllm-fleet-planner")
    settings = _check_configs(objects)
    assert all(s.auth_token_file is not None and s.health_listen for s in settings)
    images = {c["image"] for o in objects if "template" in o.get("spec", {}) for c in o["spec"]["template"]["spec"]["containers"]}
    assert images == {"vllm-fleet-planner:0.1.0"}


@pytest.mark.parametrize("variant", list(HELM_VARIANTS))
def test_helm_chart_renders_what_operations_need(variant):
    objects = _helm_objects(variant)
    _check_planner(objects)
    settings = _check_configs(objects)
    tls = HELM_VARIANTS[variant].get("tls", {})
    for s in settings:
        assert (s.tls_cert_file is not None) == bool(tls.get("enabled"))
        assert (s.tls_client_ca_file is not None) == bool(tls.get("mutual"))
        assert (s.metrics_listen is not None) == HELM_VARIANTS[variant].get("metrics", {}).get("enabled", True)
    if HELM_VARIANTS[variant].get("agent", {}).get("enabled", True):
        _check_agent_daemonset(_one(objects, "DaemonSet"))
        _check_headless_agent_service(objects, "planning")
    else:
        assert not _by_kind(objects, "DaemonSet") and not _by_kind(objects, "NetworkPolicy")
    tls_volumes = [
        v for o in objects if "template" in o.get("spec", {}) for v in o["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "tls"
    ]
    assert bool(tls_volumes) == bool(tls.get("enabled"))
    assert all(o["metadata"]["name"].startswith("fleet-") for o in objects)


def test_helm_renderer_refuses_templates_outside_its_subset():
    with pytest.raises(ValueError):
        render.render_template("{{ range .Values.x }}{{ end }}", {"Values": {}})
    with pytest.raises(ValueError):
        render.render_template("{{ if .Values.x }}open", {"Values": {}})
    with pytest.raises(ValueError):
        render.render_template("{{ .Values.x | b64enc }}", {"Values": {"x": "a"}})
    scope = {"Values": {"a": {"b": 3}, "on": True, "off": False, "list": [1]}}
    assert render.render_template("x:\n  {{- if .Values.on }}\n  y: {{ .Values.a.b }}\n  {{- end }}\n", scope) == "x:\n  y: 3\n"
    assert render.render_template("{{ if and .Values.on .Values.off }}1{{ else }}2{{ end }}", scope) == "2"
    assert render.render_template('{{ default "d" .Values.none }}/{{ .Values.on | quote }}', scope) == 'd/"true"'
    assert render.render_template("k:{{- toYaml .Values.list | nindent 2 }}", scope) == "k:\n  - 1"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_our_kustomize_rendering_matches_kubectl_kustomize():
    result = subprocess.run(
        ["kubectl", "kustomize", str(KUSTOMIZE_DIR)], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        pytest.skip(f"kubectl kustomize unavailable here: {result.stderr.strip()[:200]}")
    theirs = sorted(yaml.safe_load_all(result.stdout), key=lambda o: (o["kind"], o["metadata"]["name"]))
    ours = sorted(_kustomize_objects(), key=lambda o: (o["kind"], o["metadata"]["name"]))
    assert ours == theirs


@pytest.mark.skipif(shutil.which("helm") is None, reason="helm not installed")
@pytest.mark.parametrize("variant", list(HELM_VARIANTS))
def test_our_helm_rendering_matches_helm_template(variant, tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(HELM_VARIANTS[variant]))
    result = subprocess.run(
        ["helm", "template", "fleet", str(CHART_DIR), "--namespace", "planning", "-f", str(values)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    theirs = sorted((o for o in yaml.safe_load_all(result.stdout) if o), key=lambda o: (o["kind"], o["metadata"]["name"]))
    ours = sorted(_helm_objects(variant), key=lambda o: (o["kind"], o["metadata"]["name"]))
    assert ours == theirs
