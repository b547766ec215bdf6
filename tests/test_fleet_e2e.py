"""End to end: real GPU agents replaying captures, a real planner, the real memory twin, real gRPC.

Four agents on 127.0.0.1:0: the recorded H100 host idle and busy (shared/fixtures/nvidia), an 8x H100
NVSwitch host and an A100 in MIG mode (the agent team's replay captures when present, else the same
shapes built as agent inventories). Checks: placements pick the GPUs and settings the live
inventory allows and never exceed a GPU's free memory; a killed agent goes STALE and leaves the
candidates; a restarted planner rebuilds the fleet from discovery alone.
"""

from __future__ import annotations

import math
import time
import pytest

from clients.sdk.fleet_client import FleetClient
from clients.sdk.testing import FakeAgent
from helpers.fleet import FleetPlanner
from helpers.paths import CAPTURES, H100_CAPTURE
from helpers.waiting import wait_until
from gpu_agent.inventory import CollectionSource, Gpu, GpuLink, HostInfo, HostInventory, LinkLevel, MigDevice, MigMode
from planner_service.engine.models import HardwareOptions, ModelOptions, PlanRequest
from planner_service.fleet.models import Deployment, FleetHost, HostState, RejectReason
from planner_service.fleet.registry import FleetTimings
from planner_service.fleet.runtime import FLEET_SERVICE_NAME, FleetRuntime, FleetSettings
from planner_service.fleet.sizing import SizingPolicy
from planner_service.fleet.testing import BackgroundLoop
from vllm_planner.transport.server import ServerOptions

WAIT_SECONDS = 8.0
GIB = 1 << 30
H100 = "NVIDIA H100 80GB HBM3"
TIMINGS = FleetTimings(
    heartbeat_interval_seconds=0.5, stale_after_seconds=1.5, gone_after_seconds=30, sweep_interval_seconds=0.05,
    backoff_initial_seconds=0.05, backoff_max_seconds=0.3,
)

pytestmark = pytest.mark.skipif(not H100_CAPTURE.is_dir(), reason="shared/fixtures/nvidia capture not present")


def _dgx_inventory() -> HostInventory:
    gpus = tuple(
        Gpu(index=i, uuid=f"GPU-0000000{i}-dgx0-0000-0000-000000000000", name=H100, memory_total_bytes=85520809984,
            memory_reserved_bytes=503316480, memory_used_bytes=used, memory_free_bytes=85017493504 - used,
            memory_cuda_total_bytes=85017493504, compute_capability="9.0", numa_node=0 if i < 4 else 1, mig_mode=MigMode.DISABLED)
        for i, used in enumerate([0, 40 * GIB, 0, 0, 0, 0, 0, 0])
    )
    links = tuple(GpuLink(gpu_uuid_a=a.uuid, gpu_uuid_b=b.uuid, gpu_index_a=a.index, gpu_index_b=b.index, level=LinkLevel.NVLINK, nvlink_count=18)
                  for a in gpus for b in gpus if a.index < b.index)
    return HostInventory(host=HostInfo(hostname="dgx-h100", agent_version="test", driver_version="580.159.04"),
                         gpus=gpus, links=links, source=CollectionSource.STATIC)


def _mig_inventory() -> HostInventory:
    parent = "GPU-a100a100-0000-0000-0000-000000000000"
    devices = tuple(
        MigDevice(uuid=f"MIG-{i}a100000-0000-0000-0000-000000000000", parent_uuid=parent, index=i, profile=profile,
                  memory_total_bytes=int(gib * GIB), memory_used_bytes=0, memory_free_bytes=int(gib * GIB))
        for i, (profile, gib) in enumerate([("3g.40gb", 39.25), ("2g.20gb", 19.5), ("1g.10gb", 9.75)])
    )
    gpu = Gpu(index=0, uuid=parent, name="NVIDIA A100-SXM4-80GB", memory_total_bytes=85899345920, memory_reserved_bytes=724828160,
              memory_cuda_total_bytes=85174583296, memory_used_bytes=0, memory_free_bytes=85174583296, compute_capability="8.0",
              mig_mode=MigMode.ENABLED, mig_devices=devices)
    return HostInventory(host=HostInfo(hostname="a100-mig", agent_version="test"), gpus=(gpu,), source=CollectionSource.STATIC)


def _agent(kind: str) -> FakeAgent:
    fast = {"interval_seconds": 0.1, "heartbeat_seconds": 0.3}
    if kind in ("idle", "busy"):
        return FakeAgent.from_capture(H100_CAPTURE, kind, hostname=f"h100-{kind}", **fast)
    capture = CAPTURES / {"dgx": "h100-8x-nvlink", "mig": "a100-mig"}[kind]
    if capture.is_dir():  # the agent team's recorded captures, when they exist
        return FakeAgent.from_capture(capture, "idle", hostname={"dgx": "dgx-h100", "mig": "a100-mig"}[kind], **fast)
    return FakeAgent(_dgx_inventory() if kind == "dgx" else _mig_inventory(), **fast)


def _planner(loop: BackgroundLoop, agents: list[str], **kwargs) -> FleetPlanner:
    return FleetPlanner(loop, FleetSettings(agents=agents, timings=TIMINGS), **kwargs)


def _ready(client: FleetClient, n: int) -> list[FleetHost] | None:
    hosts = [h for h in client.list_hosts() if h.state is HostState.READY]
    return hosts if len(hosts) == n else None


def _registered(client: FleetClient, hostname: str, address: str, source: str) -> FleetHost:
    """The READY host an agent that registered itself became, checked to be that agent's."""
    host = wait_until(lambda: next((h for h in client.list_hosts() if h.state is HostState.READY), None), timeout_seconds=15)
    assert host.host == hostname and host.address == address
    assert [s.value for s in host.sources] == [source]
    return host


def _stop(agent, planner: FleetPlanner, loop: BackgroundLoop) -> None:  # noqa: ANN001 (a Popen or None)
    if agent is not None:
        agent.terminate()
        agent.wait(10)
    planner.stop()
    loop.close()


def _check_free(hosts: list[FleetHost], placements) -> None:
    """No placement may ask vLLM for more than the GPU has free (with the CUDA context on top)."""
    free = {(h.host, g.uuid): (g.memory_total_bytes, g.memory_free_bytes) for h in hosts for g in h.gpus}
    overhead = SizingPolicy().startup_overhead_bytes
    for p in placements:
        for uuid in p.gpu_uuids:
            total, available = free[(p.host, uuid)]
            assert math.ceil(total * p.gpu_memory_utilization) + overhead <= available, (p.host, uuid)
            assert p.reserved_bytes <= available


def _dep(model: str, tp: int | None = None, replicas: int = 1, max_model_len: int = 8192) -> Deployment:
    return Deployment(plan=PlanRequest(model=ModelOptions(model=model, max_model_len=max_model_len),
                                       hardware=HardwareOptions(tensor_parallel_size=tp)), replicas=replicas)


@pytest.fixture
def fleet(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # models come from the bundled catalog: never the network
    agents = {kind: _agent(kind) for kind in ("idle", "busy", "dgx", "mig")}
    addresses = {kind: agent.start() for kind, agent in agents.items()}
    loop = BackgroundLoop()
    try:
        yield agents, addresses, loop
    finally:
        for agent in agents.values():
            try:
                agent.stop()
            except Exception:  # already stopped by the test
                pass
        loop.close()


def test_fleet_end_to_end(fleet):
    agents, addresses, loop = fleet
    planner = _planner(loop, sorted(addresses.values()))
    try:
        with FleetClient(planner.address) as client:
            hosts = wait_until(lambda: _ready(client, 4), timeout_seconds=WAIT_SECONDS)
            assert [h.host for h in hosts] == ["a100-mig", "dgx-h100", "h100-busy", "h100-idle"]
            busy = client.get_host("h100-busy")
            assert busy.gpus[0].memory_free_bytes < busy.gpus[0].memory_total_bytes - 12 * GIB

            # A small model: every host can take it; the busy GPU gets a utilization that fits its free memory.
            small = client.place(_dep("Qwen/Qwen3-8B", replicas=2))
            by_host = {p.host: p for p in small.placements}
            assert set(by_host) == {"a100-mig", "dgx-h100", "h100-busy", "h100-idle"}
            assert by_host["h100-idle"].gpu_memory_utilization == 0.9
            assert 0.5 < by_host["h100-busy"].gpu_memory_utilization < 0.9
            assert by_host["a100-mig"].mig and by_host["a100-mig"].gpu_uuids[0].startswith("MIG-")
            assert by_host["dgx-h100"].gpu_indices != (1,)  # GPU 1 holds 40 GiB for someone else
            assert by_host["h100-idle"].artifacts.cuda_visible_devices == "GPU-d772cfa7-b213-5aff-beb9-abaa615bb009"
            assert len(small.selected) == 2 and len({p.host for p in small.selected}) == 2
            _check_free(hosts, small.placements + small.selected)

            # A 70B model at TP=4: only the NVLink host, on one NUMA node, avoiding the busy GPU.
            big = client.place(_dep("meta-llama/Llama-3.1-70B-Instruct", tp=4))
            (p,) = big.placements
            assert p.host == "dgx-h100" and p.interconnect == "nvlink" and p.gpu_indices == (4, 5, 6, 7) and p.numa_node == 1
            assert f'device={",".join(p.gpu_uuids)}' in p.artifacts.docker_run
            assert "kubernetes.io/hostname: dgx-h100" in p.artifacts.kubernetes
            reasons = {r.host: r.reason for r in big.rejections}
            assert reasons == {"a100-mig": RejectReason.TP_IMPOSSIBLE, "h100-busy": RejectReason.TP_IMPOSSIBLE,
                               "h100-idle": RejectReason.TP_IMPOSSIBLE}
            _check_free(hosts, big.placements)

            # TP unset: the 70B does not fit one H100 or a MIG slice; the reasons say so.
            auto = client.place(_dep("meta-llama/Llama-3.1-70B-Instruct"))
            reasons = {r.host: r for r in auto.rejections}
            assert reasons["a100-mig"].reason is RejectReason.MIG_TOO_SMALL
            assert reasons["h100-idle"].reason is RejectReason.DOES_NOT_FIT
            assert [p.host for p in auto.placements] == ["dgx-h100"]

            # fp8 checkpoint: the A100 has no native fp8.
            fp8 = client.place(_dep("Qwen/Qwen3-235B-A22B-FP8", tp=8, max_model_len=4096))
            assert {r.host: r.reason for r in fp8.rejections}["a100-mig"] is RejectReason.NO_FP8

            # Fleet plan: never over-commit a GPU.
            plan = client.plan_fleet([_dep("Qwen/Qwen3-8B", replicas=6), _dep("meta-llama/Llama-3.1-70B-Instruct", tp=4)])
            _check_free(hosts, [a.placement for a in plan.assignments])
            charged: dict[tuple[str, str], int] = {}
            for a in plan.assignments:
                for uuid in a.placement.gpu_uuids:
                    charged[(a.placement.host, uuid)] = charged.get((a.placement.host, uuid), 0) + a.placement.reserved_bytes
            free = {(h.host, g.uuid): g.memory_free_bytes for h in hosts for g in h.gpus}
            assert all(charged[k] <= free[k] for k in charged)

            # A second replica behind the same address derives the same fleet, so the same answers.
            replica = _planner(loop, sorted(addresses.values()))
            try:
                with FleetClient(replica.address) as other:
                    wait_until(lambda: _ready(other, 4), timeout_seconds=WAIT_SECONDS)
                    assert other.place(_dep("Qwen/Qwen3-8B", replicas=2)) == client.place(_dep("Qwen/Qwen3-8B", replicas=2))
            finally:
                replica.stop()

            # Kill the idle agent: its host goes STALE and leaves the candidates.
            agents["idle"].stop()
            stale = wait_until(lambda: (lambda h: h if h.state is HostState.STALE else None)(client.get_host("h100-idle")),
                               timeout_seconds=WAIT_SECONDS)
            assert stale.state_reason
            after = client.place(_dep("Qwen/Qwen3-8B"))
            assert "h100-idle" not in {p.host for p in after.placements}
            assert {r.host: r.reason for r in after.rejections}["h100-idle"] is RejectReason.STATE
    finally:
        planner.stop()

    # Restart the planner: the fleet comes back from discovery alone, within one heartbeat interval.
    started = time.monotonic()
    planner = _planner(loop, sorted(addresses.values()))
    try:
        with FleetClient(planner.address) as client:
            hosts = wait_until(lambda: _ready(client, 3), timeout_seconds=TIMINGS.heartbeat_interval_seconds + 2)
            rebuilt_seconds = time.monotonic() - started
            print(f"fleet rebuilt in {rebuilt_seconds:.3f}s")
            assert rebuilt_seconds <= TIMINGS.heartbeat_interval_seconds
            assert [h.host for h in hosts] == ["a100-mig", "dgx-h100", "h100-busy"]
            again = client.place(_dep("Qwen/Qwen3-8B"))
            assert {p.host for p in again.placements} == {"a100-mig", "dgx-h100", "h100-busy"}
    finally:
        planner.stop()


@pytest.mark.parametrize(("mode", "source"), [("push", "reported"), ("dial", "registered")])
def test_agent_process_registers_itself_and_a_restarted_planner_gets_it_back(monkeypatch, mode: str, source: str):
    """``gpu-agent --register-with`` as a real subprocess, pushing its reports (the default) or registering
    to be dialled; the planner restarts on the same port and gets the host back from the agent alone."""
    import subprocess
    import sys

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loop = BackgroundLoop()
    planner = _planner(loop, [])
    port = planner.server.port
    agent = subprocess.Popen(
        [sys.executable, "-m", "gpu_agent.main", "--listen", "127.0.0.1:0", "--replay", str(H100_CAPTURE), "--replay-variant", "busy",
         "--hostname", "h100-registered", "--interval-seconds", "0.2", "--heartbeat-seconds", "0.3", "--register-with", planner.address,
         "--register-mode", mode, "--grace-seconds", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        agent_address = agent.stdout.readline().strip()
        with FleetClient(planner.address) as client:
            _registered(client, "h100-registered", agent_address, source)
        planner.stop()

        started = time.monotonic()
        # Same port: the agent keeps heartbeating to it.
        planner = _planner(loop, [], server=ServerOptions(listen=f"127.0.0.1:{port}"))
        with FleetClient(planner.address) as client:
            # The agent learned the 0.5 s interval; its next heartbeat (plus reconnect backoff) restores it.
            back = wait_until(lambda: next((h for h in client.list_hosts() if h.state is HostState.READY), None), timeout_seconds=10)
            print(f"registered host back after {time.monotonic() - started:.2f}s")
            assert back.host == "h100-registered"
    finally:
        planner.stop()
        agent.terminate()
        agent.wait(10)
        loop.close()


def test_a_pushing_agent_reports_over_mutual_tls_to_the_name_it_was_given(monkeypatch, tmp_path):
    """--register-tls-*: the agent dials the planner's resolved IP but checks its certificate against
    the --register-with name, presents its client certificate, and sends the fleet token as call
    credentials; the planner (mutual TLS + token) gets the host READY."""
    import subprocess
    import sys

    from helpers.pki import make_pki

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pki = make_pki(tmp_path, server_ip_san=False)  # the certificate names localhost, not the IP dialled
    token = "fleet-token-0123456789"
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    loop = BackgroundLoop()
    planner = _planner(loop, [], server=ServerOptions(tls_cert_file=pki["server_cert"], tls_key_file=pki["server_key"],
                                                      tls_client_ca_file=pki["ca"], auth_token=token))
    agent = None
    try:
        agent = subprocess.Popen(
            [sys.executable, "-m", "gpu_agent.main", "--listen", "127.0.0.1:0", "--replay", str(H100_CAPTURE),
             "--hostname", "h100-tls", "--interval-seconds", "0.2", "--auth-token-file", str(token_file),
             "--register-with", f"localhost:{planner.server.port}", "--register-tls-ca-file", str(pki["ca"]),
             "--register-tls-cert-file", str(pki["client_cert"]), "--register-tls-key-file", str(pki["client_key"]),
             "--grace-seconds", "0.5"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        agent_address = agent.stdout.readline().strip()
        with FleetClient(f"localhost:{planner.server.port}", tls_ca_file=pki["ca"], tls_cert_file=pki["client_cert"],
                         tls_key_file=pki["client_key"], token=token) as client:
            _registered(client, "h100-tls", agent_address, "reported")
    finally:
        _stop(agent, planner, loop)


def test_a_pushing_agent_registers_with_a_planner_that_predates_report_inventory(monkeypatch):
    """A planner from before ReportInventory has no such method (gRPC answers UNIMPLEMENTED): the
    pushing agent registers to be dialled instead, and the host comes up READY."""
    import subprocess
    import sys

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loop = BackgroundLoop()
    planner = _planner(loop, [], without_methods=("ReportInventory",))
    agent = None
    try:
        agent = subprocess.Popen(
            [sys.executable, "-m", "gpu_agent.main", "--listen", "127.0.0.1:0", "--replay", str(H100_CAPTURE),
             "--hostname", "h100-older-planner", "--interval-seconds", "0.2", "--register-with", planner.address,
             "--register-mode", "push", "--grace-seconds", "0.5"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        agent_address = agent.stdout.readline().strip()
        with FleetClient(planner.address) as client:
            _registered(client, "h100-older-planner", agent_address, "registered")
    finally:
        _stop(agent, planner, loop)
    assert "has no ReportInventory: registering to be dialled instead" in agent.stderr.read()


def test_planner_server_hosts_the_fleet_service_next_to_planner_service(fleet):
    """The wiring the planner bootstrap needs: FleetFlags settings + ExtraService(fleet.register)."""
    from pydantic_settings import SettingsConfigDict

    from clients.sdk.planner_client import PlannerClient
    from planner_service.fleet.evaluator import TwinProvider
    from planner_service.fleet.runtime import FleetFlags
    from planner_service.server.app import ExtraService, PlannerServiceSettings, build_planner_server, build_resolver

    class Settings(PlannerServiceSettings, FleetFlags):
        model_config = SettingsConfigDict(env_prefix="VLLM_PLANNER_", extra="forbid", protected_namespaces=())

    agents, addresses, loop = fleet
    settings = Settings(listen="127.0.0.1:0", agents=[",".join(addresses.values())], fleet_heartbeat_seconds=0.5)
    resolver = build_resolver(settings)
    runtime = FleetRuntime(settings.fleet_settings(), provider=TwinProvider(resolve=resolver.resolve))

    async def start():
        await runtime.start()
        return await build_planner_server(settings, resolver=resolver,
                                          extra_services=[ExtraService(runtime.register, FLEET_SERVICE_NAME)])

    server = loop.run(start())
    try:
        with FleetClient(server.address) as client, PlannerClient(server.address) as planner:
            wait_until(lambda: _ready(client, 4), timeout_seconds=WAIT_SECONDS)
            assert client.place(_dep("Qwen/Qwen3-8B")).selected
            assert planner.plan(PlanRequest(model=ModelOptions(model="Qwen/Qwen3-8B"),
                                        hardware=HardwareOptions(gpu="H100"))).feasibility.fits
    finally:
        async def stop():
            await server.stop(0)
            await runtime.stop()

        loop.run(stop())
