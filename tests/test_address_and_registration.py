"""One HOST:PORT parser everywhere (flags, settings, RPCs), and RegisterAgent's validation over real gRPC."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest

from clients.cli.main import main as cli
from clients.sdk.errors import InvalidArgument, ResourceExhausted, Unauthenticated
from clients.sdk.fleet_client import FleetClient
from gpu_agent.app import GpuAgentSettings
from helpers.fleet import FleetPlanner
from planner_service.fleet.reports import MAX_REPORTED_GPUS
from planner_service.fleet.runtime import FleetFlags, FleetSettings
from planner_service.fleet.testing import BackgroundLoop
from vllm_planner.transport.address import AddressError, parse_host_port
from vllm_planner.transport.config import ServerSettings
from vllm_planner.transport.server import ServerOptions
from vllm_planner.v1 import agent_pb2
from vllm_planner.v1 import fleet_pb2 as pb
from vllm_planner.v1 import fleet_pb2_grpc

GOOD = [
    ("gpu-host-1:50061", "gpu-host-1", 50061),
    ("node1.cluster.local:1", "node1.cluster.local", 1),
    ("10.0.0.5:65535", "10.0.0.5", 65535),
    ("[::1]:50051", "::1", 50051),
    ("[fe80::1%eth0]:8080", "fe80::1%eth0", 8080),
    ("localhost:50051", "localhost", 50051),
]
BAD = [
    ("h:70000", "outside 1..65535"),  # no wrapping to 4464
    ("h:0", "outside 1..65535"),
    ("h:-1", "not a decimal number"),
    ("h:+80", "not a decimal number"),
    ("h:８０", "non-ASCII"),
    ("h", "expected HOST:PORT"),
    (":80", "expected HOST:PORT"),
    ("::1:80", "needs brackets"),
    ("[1.2.3.4]:80", "not an IPv6 address"),
    ("bad_host:80", "RFC 1123"),
    ("-bad:80", "RFC 1123"),
    ("a..b:80", "RFC 1123"),
    ("999.1.1.1:80", "not a valid one"),
    ("x\nINFO forged:80", "control"),
    ("h :80", "whitespace"),
    ("a" * 100_000 + ":80", "longer than"),
    ("a" * 64 + ".example:80", "RFC 1123"),  # a label longer than 63
    ("0.0.0.0:80", "wildcard"),
]


@pytest.mark.parametrize("text,host,port", GOOD)
def test_valid_addresses(text, host, port):
    parsed = parse_host_port(text)
    assert (parsed.host, parsed.port) == (host, port)
    assert parse_host_port(str(parsed)) == parsed  # normalised form round-trips


@pytest.mark.parametrize("text,why", BAD, ids=lambda v: repr(v)[:30])
def test_invalid_addresses(text, why):
    with pytest.raises(AddressError) as exc:
        parse_host_port(text, "--agents")
    assert why in str(exc.value) and str(exc.value).startswith("--agents: ")
    assert "\n" not in str(exc.value) and len(str(exc.value)) < 300


def test_listening_allows_wildcards_and_port_zero_dialling_does_not():
    assert parse_host_port("0.0.0.0:0", allow_wildcard=True, allow_any_port=True).port == 0
    assert ServerSettings(listen="[::]:0").listen == "[::]:0"
    for field, value in (("listen", "h:65536"), ("metrics_listen", "h:99999"), ("health_listen", "x y:1")):
        with pytest.raises(ValueError, match=field):
            ServerSettings(**{field: value})
    with pytest.raises(ValueError, match="register_with"):
        GpuAgentSettings(register_with="planner:70000")
    with pytest.raises(ValueError, match="wildcard"):
        GpuAgentSettings(advertise_address="0.0.0.0:50061")
    assert FleetFlags(agents=["b:2,a:1", "a:1"]).agents == ["a:1", "b:2"]
    with pytest.raises(ValueError, match="agents"):
        FleetFlags(agents=["gpu-1:50061,gpu-2:650610"])
    with pytest.raises(ValueError, match="agents_dns"):
        FleetFlags(agents_dns=["svc\n:50061"])


def test_cli_and_service_reject_bad_addresses_in_one_line(capsys, monkeypatch, tmp_path):
    assert cli(["fleet", "hosts", "--planner", "planner:70000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --planner: port 70000") and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("VLLM_PLANNER_ADDRESS", "planner:0")
    assert cli(["plan", "-m", "Qwen/Qwen3-8B", "--gpu", "H100"]) == 2
    assert "VLLM_PLANNER_ADDRESS" in capsys.readouterr().err
    agents = tmp_path / "agents.txt"
    agents.write_text("gpu-1:50061\ngpu-2:99999\n")
    proc = subprocess.run([sys.executable, "-m", "planner_service.server.main", "--listen", "127.0.0.1:0", "--agents-file", str(agents)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "99999" in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture
def planner():
    loop = BackgroundLoop()
    settings = FleetSettings(max_registrations=3)
    p = FleetPlanner(loop, settings, open_stream=_never_connects)
    yield p
    p.stop()
    loop.close()


async def _never_connects(address: str):
    raise ConnectionError(f"{address}: not in this test")
    yield  # pragma: no cover


def _register(client: FleetClient, rpc: str):  # noqa: ANN202
    """RegisterAgent, or ReportInventory with a heartbeat: both take (and check) the same registration."""
    if rpc == "RegisterAgent":
        return client.register_agent
    return lambda *args, **kwargs: client.report_inventory(*args, heartbeat=agent_pb2.InventoryHeartbeat(), **kwargs)


@pytest.mark.parametrize("rpc", ["RegisterAgent", "ReportInventory"])
def test_register_agent_validates_every_field_and_caps_registrations(planner, rpc: str):
    with FleetClient(planner.address) as client:
        register = _register(client, rpc)
        reply = register("127.0.0.1:50061", "gpu-1", "0123abcd", {"zone": "a", "example.com/team": "ml"})
        assert reply.lease_seconds > 0
        cases = [
            (dict(address="gpu-1:70000"), "port 70000"),
            (dict(address="gpu-1:50061", host="x" * 100_000), "host"),
            (dict(address="gpu-1:50061", host="gpu-1\nINFO forged"), "control"),
            (dict(address="bad host:1"), "whitespace"),
            (dict(address="gpu-1:50061", agent_instance_id="id\nforged"), "agent_instance_id"),
            (dict(address="gpu-1:50061", labels={"zone": "x" * 64}), "labels[0].value"),
            (dict(address="gpu-1:50061", labels={"bad key!": "v"}), "labels[0].key"),
            (dict(address="gpu-1:50061", labels={f"k{i}": "v" for i in range(40)}), "at most 32 labels"),
            (dict(address="gpu-1:50061", labels={"big": "x" * (17 << 20)}), "labels[0].value"),  # 17 MiB
        ]
        for kwargs, why in cases:
            with pytest.raises(InvalidArgument) as exc:
                register(**kwargs, timeout_seconds=30)
            assert why in str(exc.value), (kwargs.get("address"), str(exc.value)[:200])
            assert len(str(exc.value)) < 2000
        assert [h.address for h in client.list_hosts()] == ["127.0.0.1:50061"]  # nothing else was kept
        register("127.0.0.1:50062")
        register("127.0.0.1:50063")
        register("127.0.0.1:50061")  # a renewal is always accepted
        with pytest.raises(ResourceExhausted, match="3 agent registrations"):
            register("127.0.0.1:50064")


def test_report_inventory_refuses_oversized_inventories(planner):
    """A pushed inventory is bounded like every read: GPU count, string sizes, message size."""
    with FleetClient(planner.address) as client:
        many = agent_pb2.HostInventory(gpus=[agent_pb2.Gpu(index=i, uuid=f"GPU-{i}", name="g") for i in range(MAX_REPORTED_GPUS + 1)])
        long_name = agent_pb2.HostInventory(gpus=[agent_pb2.Gpu(index=0, uuid="GPU-0", name="x" * 100_000)])
        for inventory, why in ((many, "gpus"), (long_name, "gpus[0].name")):
            with pytest.raises(InvalidArgument) as exc:
                client.report_inventory("127.0.0.1:50061", inventory=inventory, inventory_generation=1, timeout_seconds=30)
            assert why in str(exc.value) and len(str(exc.value)) < 2000
        assert client.list_hosts() == []  # nothing was kept
        ok = agent_pb2.HostInventory(gpus=[agent_pb2.Gpu(index=0, uuid="GPU-0", name="NVIDIA H100 80GB HBM3")])
        assert not client.report_inventory("127.0.0.1:50061", inventory=ok, inventory_generation=1).inventory_wanted


def test_registration_needs_the_token_when_the_planner_has_one():
    loop = BackgroundLoop()
    planner = FleetPlanner(loop, FleetSettings(), open_stream=_never_connects,
                           server=ServerOptions(listen="127.0.0.1:0", auth_token="s3cret-token"))
    try:
        channel = grpc.insecure_channel(planner.address)
        stub = fleet_pb2_grpc.FleetServiceStub(channel)
        with pytest.raises(grpc.RpcError) as exc:
            stub.RegisterAgent(pb.RegisterAgentRequest(address="127.0.0.1:50061"), timeout=10)
        assert exc.value.code() is grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as exc:
            stub.ReportInventory(pb.ReportInventoryRequest(address="127.0.0.1:50061"), timeout=10)
        assert exc.value.code() is grpc.StatusCode.UNAUTHENTICATED
        channel.close()
        with FleetClient(planner.address, token="wrong") as client, pytest.raises(Unauthenticated):
            client.register_agent("127.0.0.1:50061")
        with FleetClient(planner.address, token="s3cret-token") as client:
            assert client.register_agent("127.0.0.1:50061").lease_seconds > 0
    finally:
        planner.stop()
        loop.close()
