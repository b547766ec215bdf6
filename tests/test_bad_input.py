"""Bad input, table-driven, against every boundary: raw gRPC (what any client sees), the SDK, the CLI
in-process (``clients.cli.main.main``) and the ``vllm-planner`` console script as a subprocess.

Each malformed request must get the right canonical status (or a one-line CLI error with a non-zero
exit and no traceback), and after the whole table the server must still be healthy and plan. The
model root holds broken folders; a sentinel config.json sits *outside* it, and every request that
would resolve to it must be refused, never planned (its ``model_type`` would give it away).
"""

from __future__ import annotations

import json
import math
import subprocess

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.cli.main import main as cli_main
from clients.sdk import errors as sdk_errors
from clients.sdk.planner_client import PlannerClient
from planner_service.engine.models import HardwareOptions, ModelOptions, PlanRequest, PolicyOptions
from planner_service.server.app import PlannerServiceSettings
from planner_service.server.background import BackgroundPlannerServer
from planner_service.server.servicer import SERVICE_FULL_NAME
from reliability.bad_input_cases import (
    CASES,
    DENIED,
    EXHAUSTED,
    INVALID,
    NOT_FOUND,
    OK,
    UNAVAILABLE,
    Case,
    plan_request,
)
from reliability.helpers import CATALOG_MODEL, VENV_BIN, make_model_root, offline_environ, qwen3_8b_config
from vllm_planner.v1 import planner_pb2, planner_pb2_grpc

H100 = HardwareOptions(gpu="H100")  # the engine plans only for a GPU it is given

CALL_TIMEOUT_SECONDS = 20.0
SENTINEL_MODEL_TYPE = "sentinel_outside_root"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad-input")
    root = make_model_root(base)
    patch = pytest.MonkeyPatch()
    for key, value in offline_environ(base / "hf-home").items():
        patch.setenv(key, value)
    patch.delenv("HF_HUB_OFFLINE", raising=False)
    patch.delenv("VLLM_PLANNER_ADDRESS", raising=False)
    yield base, root
    patch.undo()


@pytest.fixture(scope="module")
def server(env):
    _, root = env
    settings = PlannerServiceSettings(listen="127.0.0.1:0", model_root=[root], hub_timeout_seconds=2)
    with BackgroundPlannerServer(settings) as running:
        yield running


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.address) as chan:
        yield chan


@pytest.fixture(scope="module")
def stub(channel):
    return planner_pb2_grpc.PlannerServiceStub(channel)


# --------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------


def _params():
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=f"BUG: {case.bug}")] if case.bug else []
        yield pytest.param(case, id=case.id, marks=marks)


def test_the_table_is_big_enough():
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES), "duplicate case ids"


def _call_plan(stub, request) -> tuple[grpc.StatusCode, str, planner_pb2.PlanResponse | None]:  # noqa: ANN001
    try:
        return OK, "", stub.Plan(request, timeout=CALL_TIMEOUT_SECONDS)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or "", None


@pytest.mark.parametrize("case", list(_params()))
def test_plan_rejects_bad_input_with_the_right_status(stub, case: Case):
    code, details, reply = _call_plan(stub, case.request())
    assert code in case.expect, f"{case.id}: got {code.name} ({details[:200]!r})"
    if code is OK:
        # Only rows that allow OK get here: vLLM itself would refuse, and the plan must say so.
        assert not reply.feasibility.fits and reply.feasibility.error, case.id
        assert reply.model.model_type != SENTINEL_MODEL_TYPE
        return
    assert details, "a status without a message"
    assert "Traceback" not in details


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.id.startswith(("traversal", "absolute", "symlink", "folder-", "inline-not")) and "zero" not in c.id],
    ids=lambda c: c.id,
)
def test_describe_model_rejects_the_same_names(stub, case: Case):
    """DescribeModel resolves names like Plan: the same table rows get the same codes."""
    request = planner_pb2.DescribeModelRequest(model=case.request().model)
    with pytest.raises(grpc.RpcError) as info:
        stub.DescribeModel(request, timeout=CALL_TIMEOUT_SECONDS)
    assert info.value.code() in case.expect, f"{case.id}: got {info.value.code().name}"


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.id in {"util-above-one", "tp-3-not-dividing-heads", "traversal-etc", "gpu-unknown"}],
    ids=lambda c: c.id,
)
def test_generate_artifacts_rejects_bad_input(stub, case: Case):
    plan = case.request()
    request = planner_pb2.GenerateArtifactsRequest(
        model=plan.model, hardware=plan.hardware, workload=plan.workload, policy=plan.policy, engine=plan.engine
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.GenerateArtifacts(request, timeout=CALL_TIMEOUT_SECONDS)
    assert info.value.code() in case.expect


def test_the_sentinel_outside_the_root_is_never_read(stub, env):
    """Every spelling that would land on ../outside is refused before the file is opened."""
    base, root = env
    sentinel = base / "outside" / "secret-model" / "config.json"
    for name in (str(sentinel.parent), str(sentinel), "../outside/secret-model", "escape-link", "linked-config",
                 f"{root}/../outside/secret-model", "qwen3-8b/../../outside"):
        with pytest.raises(grpc.RpcError) as info:
            stub.Plan(plan_request(name)(), timeout=CALL_TIMEOUT_SECONDS)
        assert info.value.code() == DENIED, (name, info.value.code(), info.value.details())
        assert "sentinel" not in info.value.details().lower()


def test_a_good_folder_inside_the_root_still_plans(stub):
    reply = stub.Plan(plan_request("qwen3-8b")(), timeout=CALL_TIMEOUT_SECONDS)
    assert reply.model.source == "local" and reply.model.model_type == "qwen3"


# --------------------------------------------------------------------------------------------------
# SDK: the same statuses as typed exceptions
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_, error",
    [
        (PlanRequest(model=ModelOptions(model="../../etc"), hardware=H100), sdk_errors.PermissionDenied),
        (PlanRequest(model=ModelOptions(model="./empty-folder"), hardware=H100), sdk_errors.NotFound),
        (PlanRequest(model=ModelOptions(model=CATALOG_MODEL), hardware=HardwareOptions(gpu="Z9000")), sdk_errors.NotFound),
        (PlanRequest(model=ModelOptions(model=CATALOG_MODEL), hardware=HardwareOptions(gpu="H100", tensor_parallel_size=3)),
         sdk_errors.InvalidArgument),
        (PlanRequest(model=ModelOptions(model="inline", config_json={"num_hidden_layers": -1}), hardware=H100),
         sdk_errors.InvalidArgument),
        (PlanRequest(model=ModelOptions(model="nobody-at-all/nothing-here"), hardware=H100), sdk_errors.Unavailable),
    ],
    ids=["traversal", "no-config", "unknown-gpu", "tp-3", "inline-negative-layers", "hub-down"],
)
def test_sdk_raises_typed_errors(server, request_, error):
    with PlannerClient(server.address, timeout_seconds=CALL_TIMEOUT_SECONDS) as client:
        with pytest.raises(error) as info:
            client.plan(request_)
    assert str(info.value)


def test_sdk_cannot_even_build_out_of_range_numbers():
    """The SDK validates with the same pydantic models: NaN/out-of-range never reach the wire."""
    from pydantic import ValidationError

    for bad in ({"gpu_memory_utilization": 1.5}, {"gpu_memory_utilization": 0}, {"overhead_gb": math.nan}):
        with pytest.raises(ValidationError):
            PolicyOptions(**bad)


# --------------------------------------------------------------------------------------------------
# CLI: one line on stderr, non-zero exit, no traceback
# --------------------------------------------------------------------------------------------------

CLI_CASES = [
    ("gpu-unknown", ["plan", "-m", CATALOG_MODEL, "--gpu", "Z9000"]),
    ("tp-3", ["plan", "-m", CATALOG_MODEL, "--tp", "3"]),
    ("util-above-one", ["plan", "-m", CATALOG_MODEL, "--gpu-memory-utilization", "1.5"]),
    ("util-zero", ["plan", "-m", CATALOG_MODEL, "--gpu-memory-utilization", "0"]),
    ("util-nan", ["plan", "-m", CATALOG_MODEL, "--gpu-memory-utilization", "nan"]),
    ("vram-inf", ["plan", "-m", CATALOG_MODEL, "--vram-gb", "inf"]),
    ("vram-negative", ["plan", "-m", CATALOG_MODEL, "--vram-gb", "-1"]),
    ("max-model-len-negative", ["plan", "-m", CATALOG_MODEL, "--max-model-len", "-5"]),
    ("max-model-len-garbage", ["plan", "-m", CATALOG_MODEL, "--max-model-len", "lots"]),
    ("empty-model", ["plan", "-m", ""]),
    ("kv-dtype-unknown", ["plan", "-m", CATALOG_MODEL, "--kv-cache-dtype", "fp3"]),
    ("vllm-version-future", ["plan", "-m", CATALOG_MODEL, "--vllm-version", "99.0"]),
    ("folder-without-config", ["plan", "-m", "{root}/empty-folder"]),
    ("folder-bad-json", ["plan", "-m", "{root}/bad-json"]),
    ("folder-5mib", ["plan", "-m", "{root}/huge"]),
    ("folder-deep", ["plan", "-m", "{root}/deep"]),
    ("unknown-repo-hub-down", ["plan", "-m", "nobody-at-all/does-not-exist-xyz"]),
    ("profile-missing", ["plan", "-m", CATALOG_MODEL, "--profile", "{root}/no-such-profile.yaml"]),
    ("generate-tp-3", ["generate", "-m", CATALOG_MODEL, "--tp", "3", "--output-dir", "{root}/../gen-out"]),
]


def _fill(argv: list[str], root) -> list[str]:  # noqa: ANN001
    filled = [a.replace("{root}", str(root)) for a in argv]
    if "--gpu" not in filled and "--vram-gb" not in filled:  # no GPU here: name one, as a user without one must
        filled += ["--gpu", "H100"]
    return filled


def _assert_one_line_error(code: int, stderr: str, what: str) -> None:
    assert code not in (0, None), f"{what}: exit {code}"
    assert "Traceback" not in stderr, f"{what}: traceback on stderr:\n{stderr}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    # argparse errors are usage + one error line; domain errors are exactly one line.
    assert lines and (len(lines) == 1 or lines[-1].startswith("vllm-planner")), f"{what}: {stderr!r}"


@pytest.mark.parametrize("name, argv", [pytest.param(*c, id=c[0]) if type(c) is tuple else c for c in CLI_CASES])
def test_cli_in_process_gives_one_line_and_non_zero_exit(env, capsys, name, argv):
    _, root = env
    try:
        code = cli_main(_fill(argv, root))
    except SystemExit as exc:  # argparse rejects before any handler runs
        code = exc.code
    captured = capsys.readouterr()
    _assert_one_line_error(code, captured.err, name)


@pytest.mark.parametrize(
    "name, argv, expected_fragment",
    [
        ("remote-traversal", ["plan", "-m", "../../etc", "--gpu", "H100"], "outside"),
        ("remote-absolute", ["plan", "-m", "/etc", "--gpu", "H100"], "outside"),
        ("remote-tp-3", ["plan", "-m", CATALOG_MODEL, "--gpu", "H100", "--tp", "3"], "tensor"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_cli_against_the_service_gives_one_line(server, capsys, name, argv, expected_fragment):
    code = cli_main([*argv, "--planner", server.address])
    err = capsys.readouterr().err
    _assert_one_line_error(code, err, name)
    assert expected_fragment in err.lower()


@pytest.mark.parametrize(
    "argv",
    [
        ["plan", "-m", CATALOG_MODEL, "--gpu", "Z9000"],
        ["plan", "-m", CATALOG_MODEL, "--tp", "3"],
        ["plan", "-m", "{root}/huge"],
        ["plan", "-m", "../../etc", "--planner", "{address}"],
    ],
    ids=["gpu-unknown", "tp-3", "folder-5mib", "remote-traversal"],
)
def test_console_script_subprocess_has_no_traceback(env, server, argv):
    _, root = env
    argv = [a.replace("{address}", server.address) for a in _fill(argv, root)]
    done = subprocess.run([str(VENV_BIN / "vllm-planner"), *argv], capture_output=True, text=True, timeout=60)
    _assert_one_line_error(done.returncode, done.stderr, " ".join(argv))
    assert done.stderr.startswith("error: ")


# --------------------------------------------------------------------------------------------------
# Afterwards: still serving
# --------------------------------------------------------------------------------------------------


def test_zz_server_still_serves_after_the_whole_table(stub, channel):
    """Runs last in this module (name order within the file is definition order; kept last)."""
    for case in CASES:  # the whole table once more, back to back, with no assertion on codes
        try:
            stub.Plan(case.request(), timeout=CALL_TIMEOUT_SECONDS)
        except grpc.RpcError as exc:
            assert exc.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN) or case.bug, case.id
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_FULL_NAME):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    good = stub.Plan(plan_request(CATALOG_MODEL)(), timeout=CALL_TIMEOUT_SECONDS)
    assert good.feasibility.fits and good.feasibility.kv_cache_tokens > 0


# --------------------------------------------------------------------------------------------------
# FleetService.Place: the same kinds of bad input, on a fleet watching one replayed agent
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet_stub(env):
    from helpers.fleet import FleetPlanner
    from planner_service.fleet.runtime import FleetSettings
    from planner_service.fleet.testing import BackgroundLoop
    from reliability.helpers import H100_CAPTURE, agent_process, wait_until
    from vllm_planner.v1 import fleet_pb2, fleet_pb2_grpc

    if not H100_CAPTURE.is_dir():
        pytest.skip("shared NVIDIA capture not present")
    agent = agent_process("--replay", str(H100_CAPTURE), "--hostname", "h100-bad-input", "--interval-seconds", "0.5")
    loop = BackgroundLoop()
    planner = FleetPlanner(loop, FleetSettings(agents=[agent.address]))
    channel = grpc.insecure_channel(planner.address)
    stub = fleet_pb2_grpc.FleetServiceStub(channel)
    try:
        wait_until(lambda: any(h.state == fleet_pb2.FLEET_HOST_STATE_READY
                               for h in stub.ListHosts(fleet_pb2.ListHostsRequest(), timeout=2).hosts), 15)
        yield stub
    finally:
        channel.close()
        planner.stop()
        loop.close()
        agent.stop()


def _place(model: str = CATALOG_MODEL, *, model_fields: dict | None = None, sections: dict | None = None,
           max_results: int = 0, **deployment):  # noqa: ANN201
    from vllm_planner.v1 import fleet_pb2

    plan = planner_pb2.PlanRequest(model=planner_pb2.ModelOptions(model=model, **(model_fields or {})), **(sections or {}))
    return fleet_pb2.PlaceRequest(deployment=fleet_pb2.FleetDeployment(plan=plan, **deployment), max_results=max_results)


PLACE_CASES = [
    ("traversal", lambda: _place("../../etc"), {DENIED}),
    ("absolute-sentinel", lambda: _place("{base}/outside/secret-model"), {DENIED}),
    ("empty-model", lambda: _place(""), {INVALID, NOT_FOUND}),
    ("unknown-repo-hub-down", lambda: _place("nobody-at-all/does-not-exist-xyz"), {UNAVAILABLE}),
    ("replicas-negative", lambda: _place(replicas=-3), {INVALID}),
    ("ttft-negative", lambda: _place(max_ttft_seconds=-1.0), {INVALID}),
    ("ttft-nan", lambda: _place(max_ttft_seconds=math.nan), {INVALID}),
    ("util-above-one", lambda: _place(sections={"policy": planner_pb2.PolicyOptions(gpu_memory_utilization=1.5)}), {INVALID}),
    ("inline-not-json", lambda: _place("inline", model_fields={"config_json": "{bad"}), {INVALID}),
    ("inline-negative-layers", lambda: _place("inline", model_fields={"config_json": json.dumps(
        {**qwen3_8b_config(), "num_hidden_layers": -1})}), {INVALID}),
    ("oversized-40mib", lambda: _place("inline", model_fields={"config_json": '{"p": "' + "x" * (40 << 20) + '"}'}),
     {EXHAUSTED}),
    ("max-results-negative", lambda: _place(max_results=-5), {INVALID}),
]


@pytest.mark.parametrize("name, build, expect", [pytest.param(*c, id=c[0]) if type(c) is tuple else c for c in PLACE_CASES])
def test_place_rejects_bad_input(fleet_stub, env, name, build, expect):
    base, _ = env
    request = build()
    model = request.deployment.plan.model
    if "{base}" in model.model:
        model.model = model.model.replace("{base}", str(base))
    with pytest.raises(grpc.RpcError) as info:
        fleet_stub.Place(request, timeout=CALL_TIMEOUT_SECONDS)
    assert info.value.code() in expect, f"{name}: got {info.value.code().name} ({info.value.details()!r})"


def test_place_still_places_after_the_bad_input(fleet_stub):
    reply = fleet_stub.Place(_place(), timeout=CALL_TIMEOUT_SECONDS)
    assert [p.host for p in reply.placements] == ["h100-bad-input"]
