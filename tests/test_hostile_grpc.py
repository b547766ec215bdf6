"""Both services against hostile requests: random bytes and generated messages to every RPC.

A real planner process (PlannerService + FleetService) watches a real agent process (a replayed 8x H100
host). Hypothesis sends each method random bytes (which must come back INVALID_ARGUMENT when they do
not decode, never UNKNOWN) and messages built from the method's descriptor with hostile values (unknown
enum numbers, integer and float extremes, empty, long and odd strings). Every answer must be a status
other than INTERNAL/UNKNOWN, within 10 s, with bounded details (no echo of a long input); afterwards
both servers must still be healthy and plan, and neither log may hold a traceback.
"""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reliability.helpers import H100_CAPTURE, agent_process, offline_environ, planner_process, wait_until
from reliability.hostile import HANG_SECONDS, message_strategy, mutation_strategy
from vllm_planner.transport.guard import MAX_MESSAGE_CHARS
from vllm_planner.v1 import agent_pb2, fleet_pb2, planner_pb2

EXAMPLES = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
# Methods whose hostile messages would have side effects beyond this test (registering random agents
# makes the planner dial them); they still get the random-bytes treatment.
_NO_GENERATED = {"RegisterAgent"}


def _methods(module, service: str, target: str) -> list[tuple[str, object, bool, str]]:  # noqa: ANN001
    """(full method path, input descriptor, server-streaming, target) of every RPC of ``service``."""
    descriptor = module.DESCRIPTOR.services_by_name[service]
    return [(f"/{descriptor.full_name}/{m.name}", m.input_type, m.server_streaming, target) for m in descriptor.methods]


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    if not H100_CAPTURE.is_dir():
        pytest.skip("replay capture not present")
    base = tmp_path_factory.mktemp("hostile-grpc")
    env = {**offline_environ(base / "hf-home"), "HF_HUB_OFFLINE": "1"}
    agent = agent_process("--replay", str(H100_CAPTURE), "--hostname", "hostile-h100", "--interval-seconds", "1",
                          env=env, log_path=base / "agent.log")
    planner = planner_process("--agents", agent.address, "--hub-timeout-seconds", "2", env=env,
                              log_path=base / "planner.log")
    channels = {"planner": grpc.insecure_channel(planner.address), "agent": grpc.insecure_channel(agent.address)}
    try:
        fleet = fleet_pb2.DESCRIPTOR.services_by_name["FleetService"]
        list_hosts = channels["planner"].unary_unary(f"/{fleet.full_name}/ListHosts",
                                                     request_serializer=lambda m: m.SerializeToString(),
                                                     response_deserializer=fleet_pb2.ListHostsResponse.FromString)
        wait_until(lambda: any(h.state == fleet_pb2.FLEET_HOST_STATE_READY
                               for h in list_hosts(fleet_pb2.ListHostsRequest(), timeout=2).hosts), 30)
        methods = (_methods(planner_pb2, "PlannerService", "planner") + _methods(fleet_pb2, "FleetService", "planner")
                   + _methods(agent_pb2, "GpuAgentService", "agent"))
        yield {"channels": channels, "methods": methods, "logs": [base / "agent.log", base / "planner.log"],
               "planner": planner, "agent": agent}
    finally:
        for channel in channels.values():
            channel.close()
        planner.stop()
        agent.stop()


def _call(services: dict, method: tuple, payload: bytes) -> tuple[grpc.StatusCode, str, float]:
    """Send raw bytes to a method; a stream is read for its first message, then cancelled."""
    path, _, streaming, target = method
    channel = services["channels"][target]
    start = time.monotonic()
    try:
        if streaming:
            call = channel.unary_stream(path)(payload, timeout=1.5)
            try:
                next(call)
            finally:
                call.cancel()
            return grpc.StatusCode.OK, "", time.monotonic() - start
        channel.unary_unary(path)(payload, timeout=HANG_SECONDS)
        return grpc.StatusCode.OK, "", time.monotonic() - start
    except StopIteration:
        return grpc.StatusCode.OK, "", time.monotonic() - start
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or "", time.monotonic() - start


def _assert_answer(code: grpc.StatusCode, details: str, elapsed: float, what: object) -> None:
    if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        code = grpc.StatusCode.OK  # a stream that stayed open until our short deadline: alive, not failed
    assert code not in FORBIDDEN, f"{what}: {code.name} {details[:300]!r}"
    assert code != grpc.StatusCode.RESOURCE_EXHAUSTED, f"{what}: {details[:300]!r}"  # trailers overflowed
    assert len(details) <= MAX_MESSAGE_CHARS, f"{what}: {len(details)}-character details"
    assert elapsed < HANG_SECONDS + 1, f"{what}: {elapsed:.1f}s"


def test_random_bytes_to_every_method(services):
    @EXAMPLES
    @given(index=st.integers(0, 10_000), payload=st.binary(max_size=300))
    def check(index: int, payload: bytes) -> None:
        method = services["methods"][index % len(services["methods"])]
        code, details, elapsed = _call(services, method, payload)
        _assert_answer(code, details, elapsed, (method[0], payload[:40]))

    check()


def test_corrupt_bytes_are_invalid_argument_not_unknown(services):
    for method in services["methods"]:
        code, details, _ = _call(services, method, b"\xff\xff\xff\xff\x0f")
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (method[0], code, details)
        assert "not a valid" in details and "DecodeError" in details, details


def _valid_request(name: str):  # noqa: ANN202
    """A request of method ``name`` that the service answers OK (a base to mutate), or None."""
    plan = planner_pb2.PlanRequest(model=planner_pb2.ModelOptions(model="Qwen/Qwen3-8B"),
                                   hardware=planner_pb2.HardwareOptions(gpu="H100"))
    deployment = fleet_pb2.FleetDeployment(plan=plan, replicas=1)
    return {
        "Plan": plan,
        "GenerateArtifacts": planner_pb2.GenerateArtifactsRequest(model=plan.model, hardware=plan.hardware),
        "DescribeModel": planner_pb2.DescribeModelRequest(model=plan.model),
        "Place": fleet_pb2.PlaceRequest(deployment=deployment),
        "PlanFleet": fleet_pb2.PlanFleetRequest(deployments=[deployment]),
    }.get(name)


def _send_drawn_messages(services: dict, methods: list, strategies: dict) -> None:
    """Hypothesis: a method, then a message from its strategy; the answer must be a documented one."""

    @EXAMPLES
    @given(data=st.data())
    def check(data) -> None:  # noqa: ANN001
        method = data.draw(st.sampled_from(methods))
        message = data.draw(strategies[method[0]])
        code, details, elapsed = _call(services, method, message.SerializeToString())
        _assert_answer(code, details, elapsed, (method[0], str(message)[:300]))

    check()


def test_one_hostile_field_in_an_otherwise_valid_request(services):
    """Valid requests with one or two fields set to hostile values: past the first checks, into the
    engine and the fleet's placement."""
    methods = [m for m in services["methods"] if _valid_request(m[0].rsplit("/", 1)[-1]) is not None]
    _send_drawn_messages(services, methods,
                         {m[0]: mutation_strategy(_valid_request(m[0].rsplit("/", 1)[-1])) for m in methods})


def test_generated_messages_to_every_method(services):
    methods = [m for m in services["methods"] if m[0].rsplit("/", 1)[-1] not in _NO_GENERATED]
    _send_drawn_messages(services, methods, {m[0]: message_strategy(m[1]) for m in methods})


@pytest.mark.parametrize("name", ["Place", "ListHosts", "WatchFleet", "PlanFleet"])
def test_unknown_enum_numbers_in_fleet_requests_are_invalid_argument(services, name):
    plan = planner_pb2.PlanRequest(model=planner_pb2.ModelOptions(model="Qwen/Qwen3-8B"))
    requests = {
        "Place": fleet_pb2.PlaceRequest(deployment=fleet_pb2.FleetDeployment(plan=plan, sizing=99)),
        "ListHosts": fleet_pb2.ListHostsRequest(filter=fleet_pb2.FleetHostFilter(states=[42])),
        "WatchFleet": fleet_pb2.WatchFleetRequest(filter=fleet_pb2.FleetHostFilter(states=[42])),
        "PlanFleet": fleet_pb2.PlanFleetRequest(deployments=[fleet_pb2.FleetDeployment(plan=plan, sizing=7)]),
    }
    method = next(m for m in services["methods"] if m[0].endswith(f"FleetService/{name}"))
    code, details, _ = _call(services, method, requests[name].SerializeToString())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "unknown enum value" in details, (code, details)


@pytest.mark.parametrize("field", ["gpu", "model", "kv_cache_dtype", "vllm_version", "host"])
def test_long_strings_are_never_echoed_into_the_status(services, field):
    long = "x" * 20_000
    plan = planner_pb2.PlanRequest(model=planner_pb2.ModelOptions(model="Qwen/Qwen3-8B"))
    if field == "gpu":
        plan.hardware.gpu = long
    elif field == "model":
        plan.model.model = "org/" + long
    elif field == "kv_cache_dtype":
        plan.model.kv_cache_dtype = long
    elif field == "vllm_version":
        plan.engine.vllm_version = long
    if field == "host":
        method = next(m for m in services["methods"] if m[0].endswith("FleetService/GetHost"))
        payload = fleet_pb2.GetHostRequest(host=long).SerializeToString()
    else:
        method = next(m for m in services["methods"] if m[0].endswith("PlannerService/Plan"))
        payload = plan.SerializeToString()
    code, details, _ = _call(services, method, payload)
    assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), (code, details[:200])
    assert "x" * 100 not in details, details[:300]


def test_zz_both_services_still_serve_and_logged_no_traceback(services):
    """Runs last in the module: health is SERVING, a good plan plans, and no log holds a traceback."""
    for target, service in (("planner", "vllm_planner.v1.PlannerService"), ("agent", "vllm_planner.v1.GpuAgentService")):
        health = health_pb2_grpc.HealthStub(services["channels"][target])
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, target
    plan = services["channels"]["planner"].unary_unary(
        "/vllm_planner.v1.PlannerService/Plan", request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=planner_pb2.PlanResponse.FromString)
    reply = plan(planner_pb2.PlanRequest(model=planner_pb2.ModelOptions(model="Qwen/Qwen3-8B"),
                                         hardware=planner_pb2.HardwareOptions(gpu="H100")), timeout=HANG_SECONDS)
    assert reply.feasibility.fits
    for log in services["logs"]:
        text = log.read_text()
        assert "Traceback" not in text, f"{log.name}:\n{text[-3000:]}"
