"""Cross-object checks of rendered Kubernetes objects: the references the API server accepts without
looking (a schema cannot see them) but that break a deployment at run time.

- every workload's selector matches its own pod template;
- every Service, PodDisruptionBudget and NetworkPolicy selector matches some pod, and their ports are
  ports those pods' containers declare (by name or number);
- every ConfigMap, Secret and ServiceAccount a pod names exists among the objects (Secrets may be
  external: the caller names the ones a user creates), and every mounted volume is declared;
- every probe and Prometheus port is a port of its container.

``problems(objects)`` returns one line per broken reference, so a test shows them all at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

WORKLOAD_KINDS = {"Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job"}


@dataclass(frozen=True)
class Pod:
    """A pod template and where it comes from."""

    owner: str
    namespace: str | None
    labels: dict
    spec: dict

    def containers(self) -> list[dict]:
        return [*self.spec.get("initContainers", []), *self.spec.get("containers", [])]

    def port_names(self) -> set[str]:
        return {p["name"] for c in self.containers() for p in c.get("ports", []) if "name" in p}

    def port_numbers(self) -> set[int]:
        return {p["containerPort"] for c in self.containers() for p in c.get("ports", [])}


def _name(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def pods(objects: Iterable[dict]) -> list[Pod]:
    found = []
    for obj in objects:
        if obj["kind"] in WORKLOAD_KINDS:
            template = obj["spec"]["template"]
            found.append(Pod(_name(obj), obj["metadata"].get("namespace"), template["metadata"].get("labels", {}),
                             template["spec"]))
    return found


def _matches(selector: dict, labels: dict) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against a label set."""
    if not selector:
        return True
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if (operator == "In" and not (present and labels[key] in values)) or \
           (operator == "NotIn" and present and labels[key] in values) or \
           (operator == "Exists" and not present) or (operator == "DoesNotExist" and present):
            return False
    return True


def _selected(selector: dict, candidates: list[Pod], namespace: str | None) -> list[Pod]:
    return [p for p in candidates if p.namespace == namespace and _matches(selector, p.labels)]


def _port_ok(port: int | str, selected: list[Pod]) -> bool:
    if isinstance(port, str):
        return any(port in p.port_names() for p in selected)
    return any(port in p.port_numbers() for p in selected)


def _workload_selectors(objects: list[dict]) -> Iterator[str]:
    for obj in objects:
        if obj["kind"] in WORKLOAD_KINDS and obj["kind"] != "Job":
            labels = obj["spec"]["template"]["metadata"].get("labels", {})
            if not _matches(obj["spec"]["selector"], labels):
                yield f"{_name(obj)}: spec.selector does not match its own pod template labels {labels}"


def _services(objects: list[dict], all_pods: list[Pod]) -> Iterator[str]:
    for svc in (o for o in objects if o["kind"] == "Service"):
        selector = svc["spec"].get("selector")
        if not selector:
            continue  # a Service without selector is fed by hand-made EndpointSlices
        selected = _selected({"matchLabels": selector}, all_pods, svc["metadata"].get("namespace"))
        if not selected:
            yield f"{_name(svc)}: selector {selector} matches no pod"
            continue
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            if not _port_ok(target, selected):
                yield f"{_name(svc)}: port {port.get('name', port['port'])} targets {target!r}, which no selected container declares"


def _disruption_budgets(objects: list[dict], all_pods: list[Pod]) -> Iterator[str]:
    for pdb in (o for o in objects if o["kind"] == "PodDisruptionBudget"):
        if not _selected(pdb["spec"]["selector"], all_pods, pdb["metadata"].get("namespace")):
            yield f"{_name(pdb)}: selector matches no pod"


def _network_policies(objects: list[dict], all_pods: list[Pod]) -> Iterator[str]:
    for policy in (o for o in objects if o["kind"] == "NetworkPolicy"):
        namespace = policy["metadata"].get("namespace")
        selected = _selected(policy["spec"]["podSelector"], all_pods, namespace)
        if not selected:
            yield f"{_name(policy)}: podSelector matches no pod"
            continue
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                if "podSelector" in peer and "namespaceSelector" not in peer and \
                        not _selected(peer["podSelector"], all_pods, namespace):
                    yield f"{_name(policy)}: ingress from {peer['podSelector']} matches no pod"
            for port in rule.get("ports", []):
                if "port" in port and not _port_ok(port["port"], selected):
                    yield f"{_name(policy)}: ingress port {port['port']!r} is no port of the selected pods"


def _pod_references(pod: Pod, kinds: dict[str, set[str]], external_secrets: set[str]) -> Iterator[str]:
    volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
    account = pod.spec.get("serviceAccountName")
    if account and account not in kinds.get("ServiceAccount", set()):
        yield f"{pod.owner}: serviceAccountName {account} does not exist"
    for volume in volumes.values():
        if "configMap" in volume and not volume["configMap"].get("optional"):
            if volume["configMap"]["name"] not in kinds.get("ConfigMap", set()):
                yield f"{pod.owner}: volume {volume['name']} mounts ConfigMap {volume['configMap']['name']}, which does not exist"
        if "secret" in volume and not volume["secret"].get("optional"):
            name = volume["secret"]["secretName"]
            if name not in kinds.get("Secret", set()) | external_secrets:
                yield f"{pod.owner}: volume {volume['name']} mounts Secret {name}, which does not exist"
    for container in pod.containers():
        ports = {p["containerPort"] for p in container.get("ports", [])} | \
                {p["name"] for p in container.get("ports", []) if "name" in p}
        for mount in container.get("volumeMounts", []):
            if mount["name"] not in volumes:
                yield f"{pod.owner}/{container['name']}: volumeMount {mount['name']} has no volume"
        for env in container.get("env", []):
            ref = env.get("valueFrom", {})
            if "configMapKeyRef" in ref and ref["configMapKeyRef"]["name"] not in kinds.get("ConfigMap", set()):
                yield f"{pod.owner}/{container['name']}: env {env['name']} reads a missing ConfigMap"
            if "secretKeyRef" in ref and ref["secretKeyRef"]["name"] not in kinds.get("Secret", set()) | external_secrets:
                yield f"{pod.owner}/{container['name']}: env {env['name']} reads a missing Secret"
        for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = container.get(probe_name, {})
            for handler in ("grpc", "httpGet", "tcpSocket"):
                if handler in probe and probe[handler]["port"] not in ports:
                    yield f"{pod.owner}/{container['name']}: {probe_name} port {probe[handler]['port']!r} is not a container port"


def _prometheus_ports(objects: list[dict]) -> Iterator[str]:
    for obj in objects:
        if obj["kind"] not in WORKLOAD_KINDS:
            continue
        annotations = obj["spec"]["template"]["metadata"].get("annotations", {})
        if "prometheus.io/port" in annotations:
            declared = {p["containerPort"] for c in obj["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
            if int(annotations["prometheus.io/port"]) not in declared:
                yield f"{_name(obj)}: prometheus.io/port {annotations['prometheus.io/port']} is not a container port"


def problems(objects: Iterable[dict], external_secrets: Iterable[str] = ()) -> list[str]:
    """Every broken cross-object reference; Secrets named in ``external_secrets`` are created by the user."""
    objects = list(objects)
    all_pods = pods(objects)
    kinds: dict[str, set[str]] = {}
    for obj in objects:
        kinds.setdefault(obj["kind"], set()).add(obj["metadata"]["name"])
    found = [*_workload_selectors(objects), *_services(objects, all_pods), *_disruption_budgets(objects, all_pods),
             *_network_policies(objects, all_pods), *_prometheus_ports(objects)]
    for pod in all_pods:
        found += _pod_references(pod, kinds, set(external_secrets))
    return found
