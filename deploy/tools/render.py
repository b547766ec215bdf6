"""Render the Helm chart and the kustomize base without helm or kustomize (CI has neither).

    python deploy/tools/render.py helm deploy/helm/vllm-fleet-planner [--set tls.enabled=true] [--release NAME]
    python deploy/tools/render.py kustomize deploy/kubernetes

Helm: this evaluates the subset of Go templates the chart uses and nothing more: ``{{ .Values.a.b }}``,
``.Release.*``, ``.Chart.*``, pipelines with ``quote``, ``default``, ``toYaml``, ``nindent``,
``indent``, ``not``, ``and``, ``or``; ``if``/``else``/``end`` blocks; ``{{-``/``-}}`` whitespace trimming
and ``{{/* comments */}}``. Anything else raises, so a template that drifts outside the subset fails
the tests instead of rendering wrongly. Kustomize: ``resources``, ``namespace``, ``labels`` (metadata
only) and ``images`` (newName/newTag), the fields the base uses; other fields raise.
"""

from __future__ import annotations

import argparse
import copy
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

_ACTION = re.compile(r"{{(-?)(.*?)(-?)}}", re.S)


# --- Go-template subset -----------------------------------------------------------------------------


def _tokens(text: str) -> list[tuple[str, str]]:
    """[('text', ...), ('action', ...)] with {{- and -}} trimming applied to neighbouring text."""
    out: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    for match in _ACTION.finditer(text):
        chunk = text[pos : match.start()]
        if trim_next:
            chunk = chunk.lstrip()
        if match.group(1):
            chunk = chunk.rstrip()
        out.append(("text", chunk))
        action = match.group(2).strip()
        if not (action.startswith("/*") and action.endswith("*/")):
            out.append(("action", action))
        trim_next = bool(match.group(3))
        pos = match.end()
    tail = text[pos:]
    out.append(("text", tail.lstrip() if trim_next else tail))
    return out


def _parse(tokens: list[tuple[str, str]], i: int = 0, stop: tuple[str, ...] = ()) -> tuple[list, int, str | None]:
    """A tree of ('text', s) | ('expr', s) | ('if', cond, then, else) nodes."""
    nodes: list = []
    while i < len(tokens):
        kind, value = tokens[i]
        if kind == "text":
            nodes.append(("text", value))
            i += 1
            continue
        word = value.split(None, 1)[0] if value else ""
        if word in stop:
            return nodes, i + 1, word
        if word == "if":
            then, i, ended = _parse(tokens, i + 1, ("else", "end"))
            otherwise: list = []
            if ended == "else":
                otherwise, i, ended = _parse(tokens, i, ("end",))
            if ended != "end":
                raise ValueError(f"unterminated {{{{ {value} }}}}")
            nodes.append(("if", value[2:].strip(), then, otherwise))
            continue
        if word in ("else", "end", "range", "with", "define", "template", "block", "include"):
            raise ValueError(f"template action outside the supported subset: {{{{ {value} }}}}")
        nodes.append(("expr", value))
        i += 1
    if stop:
        raise ValueError(f"missing {{{{ {' / '.join(stop)} }}}}")
    return nodes, i, None


def _lookup(path: str, scope: dict) -> Any:
    value: Any = scope
    for part in path.lstrip(".").split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, "", [], {})


def _to_yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=False).rstrip("\n")


def _go_str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_FUNCTIONS = {
    "quote": lambda v: '"' + _go_str(v).replace("\\", "\\\\").replace('"', '\\"') + '"',
    "default": lambda d, v: v if _truthy(v) else d,
    "toYaml": _to_yaml,
    "nindent": lambda n, v: "\n" + "\n".join(" " * int(n) + line for line in _go_str(v).split("\n")),
    "indent": lambda n, v: "\n".join(" " * int(n) + line for line in _go_str(v).split("\n")),
    "not": lambda v: not _truthy(v),
    "and": lambda *vs: next((v for v in vs if not _truthy(v)), vs[-1]),
    "or": lambda *vs: next((v for v in vs if _truthy(v)), vs[-1]),
}


def _argument(word: str, scope: dict) -> Any:
    if word.startswith("."):
        return _lookup(word, scope)
    if word.startswith('"') and word.endswith('"'):
        return word[1:-1]
    if re.fullmatch(r"-?\d+", word):
        return int(word)
    if word in ("true", "false"):
        return word == "true"
    raise ValueError(f"unsupported template argument {word!r}")


def _evaluate(pipeline: str, scope: dict) -> Any:
    value: Any = None
    for index, command in enumerate(part.strip() for part in pipeline.split("|")):
        words = shlex.split(command, posix=False)
        name, args = words[0], [_argument(w, scope) for w in words[1:]]
        if name not in _FUNCTIONS:
            if len(words) != 1 or index:
                raise ValueError(f"unsupported template function in {{{{ {pipeline} }}}}")
            value = _argument(name, scope)
            continue
        if index:
            args.append(value)  # a pipeline passes the value as the last argument
        value = _FUNCTIONS[name](*args)
    return value


def _render_nodes(nodes: list, scope: dict) -> str:
    out = []
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "expr":
            out.append(_go_str(_evaluate(node[1], scope)))
        else:
            _, cond, then, otherwise = node
            out.append(_render_nodes(then if _truthy(_evaluate(cond, scope)) else otherwise, scope))
    return "".join(out)


def render_template(text: str, scope: dict) -> str:
    nodes, _, _ = _parse(_tokens(text))
    return _render_nodes(nodes, scope)


def _merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def set_value(values: dict, assignment: str) -> dict:
    """``a.b=c`` like ``helm --set`` (scalars only; YAML typing: true, 3, "x")."""
    path, _, raw = assignment.partition("=")
    override: dict = {}
    cursor = override
    parts = path.split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = yaml.safe_load(raw) if raw else ""
    return _merge(values, override)


def render_chart(chart_dir: Path, overrides: dict | None = None, release: str = "vllm-fleet-planner",
                 namespace: str = "default") -> list[dict]:
    """Every object the chart renders (NOTES.txt and helpers excluded), in file order."""
    chart_dir = Path(chart_dir)
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    values = _merge(yaml.safe_load((chart_dir / "values.yaml").read_text()) or {}, overrides or {})
    scope = {
        "Values": values,
        "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
        "Chart": {"Name": chart["name"], "Version": chart["version"], "AppVersion": chart.get("appVersion")},
    }
    objects = []
    for template in sorted((chart_dir / "templates").glob("*.yaml")):
        rendered = render_template(template.read_text(), scope)
        objects += [doc for doc in yaml.safe_load_all(rendered) if doc]
    return objects


# --- kustomize subset -------------------------------------------------------------------------------

_KUSTOMIZE_FIELDS = {"apiVersion", "kind", "namespace", "labels", "resources", "images"}


def render_kustomize(directory: Path) -> list[dict]:
    directory = Path(directory)
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - _KUSTOMIZE_FIELDS
    if unknown:
        raise ValueError(f"kustomization fields outside the supported subset: {sorted(unknown)}")
    objects: list[dict] = []
    for resource in spec.get("resources", []):
        objects += [doc for doc in yaml.safe_load_all((directory / resource).read_text()) if doc]
    images = {image["name"]: image for image in spec.get("images", [])}
    for obj in objects:
        meta = obj.setdefault("metadata", {})
        if spec.get("namespace"):
            if obj["kind"] == "Namespace":
                meta["name"] = spec["namespace"]
            else:
                meta["namespace"] = spec["namespace"]
        for group in spec.get("labels", []):
            if group.get("includeSelectors") or group.get("includeTemplates"):
                raise ValueError("labels with includeSelectors/includeTemplates are outside the supported subset")
            meta.setdefault("labels", {}).update(group["pairs"])
        pod_spec = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod_spec.get("containers", []) + pod_spec.get("initContainers", []):
            name, _, tag = container["image"].partition(":")
            if name in images:
                image = images[name]
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag or 'latest')}"
    return objects


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["helm", "kustomize"])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="helm only")
    parser.add_argument("--release", default="vllm-fleet-planner", help="helm only")
    parser.add_argument("--namespace", default="default", help="helm only")
    args = parser.parse_args(argv)
    if args.kind == "helm":
        overrides: dict = {}
        for assignment in args.set:
            overrides = set_value(overrides, assignment)
        objects = render_chart(args.directory, overrides, args.release, args.namespace)
    else:
        objects = render_kustomize(args.directory)
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
