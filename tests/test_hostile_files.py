"""Hostile files and readings at every boundary that reads them, and the services' start-up.

Profiles, deployment lists and service configs that are YAML bombs, too large, not UTF-8, not files
at all, or say something else than they seem (duplicate keys, booleans for numbers, empty strings);
safetensors headers whose shapes do not match their bytes or overflow int64; config.json files of
random bytes; GPU readings an agent cannot encode; and the services started with bad flags, files and
addresses (one line, exit 2, no usage dump, no traceback, no gRPC C-core log lines).
"""

from __future__ import annotations

import json
import math
import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clients.cli.main import main as cli_main
from gpu_agent import main as agent_main
from gpu_agent.convert import inventory_to_proto
from gpu_agent.inventory import Gpu, GpuProcess, HostInfo, HostInventory, MigDevice
from gpu_agent.sanitize import PIB, encodable
from planner_service.engine.errors import InvalidRequestError
from planner_service.metadata.safetensors import DTYPE_BITS, MAX_TOTAL_PARAMETERS, summarize_folder
from planner_service.server import main as planner_main
from reliability.helpers import VENV_BIN
from reliability.hostile import (
    HANG_SECONDS,
    assert_cli_answer,
    hostile_deployment_texts,
    hostile_files,
    model_folder,
    offline_scratch,
    safetensors_file,
)

EXAMPLES = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile-files")
    patch = offline_scratch(base, base)
    files = hostile_files(base / "yaml")
    deployments = {}
    (base / "deployments").mkdir()
    for name, text in hostile_deployment_texts().items():
        deployments[name] = base / "deployments" / f"{name}.yaml"
        deployments[name].write_bytes(text)
    yield {"base": base, "files": files, "deployments": deployments}
    patch.undo()


def run_cli(capsys, argv: list[str]) -> tuple[int, str, float]:
    capsys.readouterr()
    start = time.monotonic()
    code = cli_main(argv)
    elapsed = time.monotonic() - start
    return code, capsys.readouterr().err, elapsed


# ---------------------------------------------------------------------------------------------------
# Profiles, deployment lists, service configs
# ---------------------------------------------------------------------------------------------------

_REFUSED = ["billion-laughs", "laughs-inside-a-section", "deep-nesting", "too-large", "unknown-keys-under-the-cap",
            "not-utf8", "nul-byte", "duplicate-keys", "python-tag", "boolean-as-number", "empty-strings",
            "not-a-mapping", "binary-garbage", "unterminated", "fifo", "dev-zero", "directory", "missing"]


@pytest.mark.parametrize("name", _REFUSED)
def test_a_hostile_profile_is_one_error_line(world, capsys, name):
    code, err, elapsed = run_cli(capsys, ["plan", "--profile", str(world["files"][name])])
    assert_cli_answer(code, err, name)
    assert code == 2 and ("--profile" in err or f"{world['files'][name]}:" in err), err
    assert elapsed < HANG_SECONDS, f"{name}: {elapsed:.1f}s"


@pytest.mark.parametrize("name", sorted(hostile_deployment_texts()))
def test_a_hostile_deployment_list_is_one_error_line(world, capsys, name):
    # The file is refused before any planner is dialled (127.0.0.1:1 refuses connections).
    code, err, elapsed = run_cli(capsys, ["fleet", "plan", str(world["deployments"][name]), "--planner", "127.0.0.1:1"])
    assert_cli_answer(code, err, name)
    assert code == 2, f"{name}: exit {code}: {err}"
    assert elapsed < HANG_SECONDS, f"{name}: {elapsed:.1f}s"


class _Served(Exception):
    """Raised instead of serving: the settings were accepted."""


@pytest.fixture
def no_serving(monkeypatch):
    """Start-up runs for real up to the point where it would serve."""

    def refuse(prog, serve, bad_input=()):  # noqa: ANN001, ANN202
        serve.close()
        raise _Served(prog)

    monkeypatch.setattr(planner_main, "serve_or_fail", refuse)
    monkeypatch.setattr(agent_main, "serve_or_fail", refuse)
    # An accepted config would install the service's log handler on the (captured) stderr for good.
    monkeypatch.setattr(planner_main, "configure_logging", lambda *a, **k: None)
    monkeypatch.setattr(agent_main, "configure_logging", lambda *a, **k: None)


@pytest.mark.parametrize("service", [planner_main, agent_main], ids=["planner", "agent"])
@pytest.mark.parametrize("name", ["billion-laughs", "deep-nesting", "too-large", "not-utf8", "duplicate-keys",
                                  "python-tag", "not-a-mapping", "binary-garbage", "fifo", "dev-zero", "directory",
                                  "missing"])
def test_a_hostile_service_config_stops_the_start_up_in_one_line(world, capsys, no_serving, service, name):
    start = time.monotonic()
    with pytest.raises(SystemExit) as info:
        service.main(["--config", str(world["files"][name]), "--listen", "127.0.0.1:0"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and ": error: " in err, err
    assert "usage:" not in err and "Traceback" not in err and "errors.pydantic.dev" not in err, err
    assert time.monotonic() - start < HANG_SECONDS


@EXAMPLES
@given(content=st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_any_bytes_as_a_profile_or_a_deployment_list(world, capsys, content):
    path = world["base"] / "random.yaml"
    path.write_bytes(content)
    for argv in (["plan", "--profile", str(path), "--json"], ["fleet", "plan", str(path), "--planner", "127.0.0.1:1"]):
        code, err, elapsed = run_cli(capsys, argv)
        assert_cli_answer(code, err, (argv[0], content[:80]))
        assert elapsed < HANG_SECONDS


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(content=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_as_a_service_config(world, capsys, no_serving, content):
    path = world["base"] / "random-config.yaml"
    path.write_bytes(content)
    for service in (planner_main, agent_main):
        try:
            service.main(["--config", str(path), "--listen", "127.0.0.1:0", *(["--backend", "none"]
                                                                               if service is agent_main else [])])
        except _Served:
            continue  # accepted: a valid (if odd) configuration
        except SystemExit as exc:
            err = capsys.readouterr().err
            assert exc.code == 2 and err.count("\n") == 1 and "Traceback" not in err, err


# ---------------------------------------------------------------------------------------------------
# Model folders: config.json and safetensors headers
# ---------------------------------------------------------------------------------------------------


@EXAMPLES
@given(content=st.binary(max_size=300) | st.dictionaries(st.sampled_from(
    ["num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size", "quantization_config", "model_type",
     "num_key_value_heads", "head_dim", "torch_dtype", "intermediate_size", "max_position_embeddings"]),
    st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=10) | st.booleans() | st.none()
    | st.just({"quant_method": "awq", "group_size": 0}), max_size=11).map(lambda d: json.dumps(d).encode()))
def test_any_config_json_in_a_model_folder(world, capsys, content):
    folder = model_folder(world["base"] / "models", "random", content)
    code, err, elapsed = run_cli(capsys, ["plan", "-m", str(folder), "--gpu", "H100", "--json"])
    assert_cli_answer(code, err, content[:120])
    assert elapsed < HANG_SECONDS


_DTYPES = sorted(DTYPE_BITS) + ["X9", ""]


@st.composite
def headers(draw) -> dict:  # noqa: ANN001
    header: dict = {}
    offset = 0
    for i in range(draw(st.integers(1, 4))):
        dtype = draw(st.sampled_from(_DTYPES))
        shape = draw(st.lists(st.integers(0, 2**20) | st.sampled_from([2**31, 2**40, 2**63, 2**64, -1]), max_size=4))
        bits = DTYPE_BITS.get(dtype, 8)
        size = (math.prod(shape) * bits) // 8 if all(d >= 0 for d in shape) else 4
        if draw(st.booleans()):
            size = draw(st.sampled_from([0, 1, size + 1, 2**63, 2**81]))  # lie about the bytes
        start = offset if draw(st.integers(0, 9)) else 0  # sometimes overlap
        header[f"t{i}"] = {"dtype": dtype, "shape": shape, "data_offsets": [start, start + size]}
        offset = start + size
    return header


@EXAMPLES
@given(header=headers())
def test_safetensors_headers_are_checked_against_their_bytes(world, header):
    folder = world["base"] / "st"
    folder.mkdir(exist_ok=True)
    safetensors_file(folder / "model.safetensors", header)
    try:
        summary = summarize_folder(folder)
    except InvalidRequestError as exc:
        assert len(str(exc)) < 1000
        return
    # Accepted: every tensor's elements fill exactly its bytes, and the total is a believable count.
    assert summary.total_parameters <= MAX_TOTAL_PARAMETERS
    bits = sum(math.prod(t.shape) * DTYPE_BITS.get(t.dtype, 8) for t in summary.tensors.values())
    known = all(t.dtype in DTYPE_BITS for t in summary.tensors.values())
    assert not known or bits == 8 * summary.total_size_bytes


def test_a_shape_product_beyond_int64_is_refused_not_planned(world, capsys):
    folder = model_folder(world["base"] / "models", "overflow")
    safetensors_file(folder / "model.safetensors", {"w": {"dtype": "BF16", "shape": [2**40, 2**40, 2**40],
                                                          "data_offsets": [0, 8]}}, data=b"\0" * 8)
    code, err, _ = run_cli(capsys, ["plan", "-m", str(folder), "--gpu", "H100"])
    assert code == 2 and "does not match its data_offsets" in err, err


# ---------------------------------------------------------------------------------------------------
# GPU readings the agent cannot encode
# ---------------------------------------------------------------------------------------------------

_READING = st.none() | st.integers(-2**70, 2**70) | st.sampled_from([0, -1, 2**63, 2**64, PIB + 1, 10**23 * 2**20])


@EXAMPLES
@given(total=_READING, used=_READING, free=_READING, reserved=_READING, temp=_READING, util=_READING,
       power=_READING, numa=_READING, pcie=_READING, pid=_READING, mig_total=_READING, index=_READING)
def test_the_agent_serves_only_what_it_can_encode(total, used, free, reserved, temp, util, power, numa, pcie, pid,
                                                  mig_total, index):
    mig = MigDevice(uuid="MIG-x", parent_uuid="GPU-x", index=0, profile="1g.10gb", memory_total_bytes=mig_total)
    gpu = Gpu(index=index if isinstance(index, int) else 0, uuid="GPU-x", name="X", memory_total_bytes=total,
              memory_used_bytes=used, memory_free_bytes=free, memory_reserved_bytes=reserved,
              temperature_celsius=temp, utilization_gpu_percent=util, power_limit_milliwatts=power, numa_node=numa,
              pcie_generation=pcie, mig_devices=(mig,))
    process = GpuProcess(pid=pid if isinstance(pid, int) else 1, gpu_uuid="GPU-x", used_memory_bytes=used)
    inventory = HostInventory(host=HostInfo(hostname="h", agent_version="t"), gpus=(gpu,), processes=(process,),
                              source="static")
    served = encodable(inventory)
    inventory_to_proto(served).SerializeToString()  # never raises: every value fits its field
    for g in served.gpus:
        for name in ("memory_total_bytes", "memory_used_bytes", "memory_free_bytes", "memory_reserved_bytes"):
            value = getattr(g, name)
            assert value is None or 0 <= value <= PIB, (name, value)
            if value is not None and g.memory_total_bytes is not None:
                assert value <= g.memory_total_bytes, (name, value)
    index_ok = not isinstance(index, int) or 0 <= index < 2**31
    if index_ok and total is not None and 0 <= total <= PIB and (used is None or 0 <= used <= total):
        assert served.gpus and served.gpus[0].memory_total_bytes == total  # a sane reading is served as read
    dropped = len(inventory.gpus) + len(inventory.processes) - len(served.gpus) - len(served.processes)
    changed = served is not inventory
    assert not changed or served.errors, "a reading was changed without a collection error saying so"
    assert dropped >= 0


# ---------------------------------------------------------------------------------------------------
# Service start-up, as a user starts it (console scripts, real processes)
# ---------------------------------------------------------------------------------------------------

STARTUP = [
    ("planner-listen-garbage", ["vllm-planner-service", "--listen", "garbage"], "garbage"),
    ("planner-agents-not-an-address", ["vllm-planner-service", "--listen", "127.0.0.1:0", "--agents", "not-an-address"],
     "not-an-address"),
    ("planner-non-pem-key", ["vllm-planner-service", "--listen", "127.0.0.1:0", "--tls-cert-file", "{pem}",
                             "--tls-key-file", "{pem}"], "PEM"),
    ("agent-listen-garbage", ["gpu-agent", "--backend", "none", "--listen", "garbage"], "garbage"),
    ("agent-non-pem-key", ["gpu-agent", "--backend", "none", "--listen", "127.0.0.1:0", "--tls-cert-file", "{pem}",
                           "--tls-key-file", "{pem}"], "PEM"),
    ("agent-bad-number", ["gpu-agent", "--backend", "none", "--interval-seconds", "abc"], "--interval-seconds"),
]


@pytest.mark.parametrize("case_id, argv, fragment", STARTUP, ids=[c[0] for c in STARTUP])
def test_service_start_up_fails_in_one_line(world, case_id, argv, fragment):
    pem = world["base"] / "not.pem"
    pem.write_text("not a PEM file\n")
    argv = [str(VENV_BIN / argv[0]), *(a.replace("{pem}", str(pem)) for a in argv[1:])]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, (case_id, done.returncode, done.stderr[-1000:])
    assert len(lines) == 1 and lines[0].startswith(f"{argv[0].rsplit('/', 1)[-1]}: error: "), done.stderr
    assert fragment in lines[0], lines[0]
