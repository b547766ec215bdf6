"""What the SDK clients share (``clients/sdk/_base.py``) and the CLI's shared connection flags
(``clients/cli/backend.py``): the same connection keywords everywhere, mutual TLS + token for the
fleet client and ``vllm-planner fleet`` (a real FleetService on 127.0.0.1:0 behind mTLS), and
one-line errors for unusable token files.
"""

from __future__ import annotations

import asyncio
import inspect
import json

import pytest

from clients.cli.main import main
from clients.sdk import (
    AgentClient,
    AsyncAgentClient,
    AsyncFleetClient,
    AsyncPlannerClient,
    FleetClient,
    PlannerClient,
    Unauthenticated,
    Unavailable,
)
from helpers.fleet import FleetPlanner
from helpers.pki import make_pki
from planner_service.fleet.registry import FleetTimings
from planner_service.fleet.runtime import FleetSettings
from planner_service.fleet.testing import BackgroundLoop
from vllm_planner.transport.server import ServerOptions

TOKEN = "fleet-token"
CONNECTION_KEYWORDS = ["tls", "tls_ca_file", "tls_cert_file", "tls_key_file", "tls_server_name", "token", "timeout_seconds",
                       "channel_options"]


def test_every_client_takes_the_same_connection_keywords():
    for cls in (PlannerClient, AsyncPlannerClient, FleetClient, AsyncFleetClient, AgentClient, AsyncAgentClient):
        parameters = inspect.signature(cls).parameters
        assert list(parameters) == ["target", *CONNECTION_KEYWORDS], cls.__name__
        assert all(parameters[name].kind is inspect.Parameter.KEYWORD_ONLY for name in CONNECTION_KEYWORDS)


def test_default_deadlines_apply_per_method_unless_the_client_or_call_sets_one():
    client = FleetClient("127.0.0.1:9")
    try:
        assert client._call_kwargs("PlanFleet", None)["timeout"] == 600.0
        assert client._call_kwargs("PlanFleet", 3.0)["timeout"] == 3.0
    finally:
        client.close()
    with AgentClient("127.0.0.1:9", timeout_seconds=2.5) as agent:
        assert agent.timeout_seconds == 2.5 and agent._call_kwargs("GetInventory", None)["timeout"] == 2.5
    with AgentClient("127.0.0.1:9") as agent:
        assert agent.timeout_seconds == 10.0 and agent._call_kwargs("Check", None)["timeout"] == 10.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mtls_fleet(pki):
    loop = BackgroundLoop()
    server = ServerOptions(listen="127.0.0.1:0", tls_cert_file=pki["server_cert"], tls_key_file=pki["server_key"],
                           tls_client_ca_file=pki["ca"], auth_token=TOKEN)
    planner = FleetPlanner(loop, FleetSettings(timings=FleetTimings()), server=server)
    try:
        # The certificate names localhost; the server listens on 127.0.0.1.
        yield f"localhost:{planner.server.port}"
    finally:
        planner.stop()
        loop.close()


def test_fleet_clients_speak_mutual_tls_with_a_token(mtls_fleet, pki):
    tls = dict(tls_ca_file=pki["ca"], tls_cert_file=pki["client_cert"], tls_key_file=pki["client_key"])
    with FleetClient(mtls_fleet, token=TOKEN, **tls) as client:
        assert client.list_hosts() == []
    with FleetClient(mtls_fleet, token="wrong", **tls) as client, pytest.raises(Unauthenticated):
        client.list_hosts()
    with FleetClient(mtls_fleet, token=TOKEN, tls_ca_file=pki["ca"], timeout_seconds=5) as client:
        with pytest.raises(Unavailable):  # no client certificate: the handshake fails
            client.list_hosts()

    async def run() -> list:
        async with AsyncFleetClient(mtls_fleet, token=TOKEN, **tls) as client:
            return await client.list_hosts()

    assert asyncio.run(run()) == []


def test_fleet_cli_takes_the_shared_mtls_and_token_flags(mtls_fleet, pki, capsys, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    tls = ["--tls-ca-file", str(pki["ca"]), "--tls-cert-file", str(pki["client_cert"]), "--tls-key-file", str(pki["client_key"])]
    assert main(["fleet", "hosts", "--planner", mtls_fleet, *tls, "--token-file", str(token_file), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["fleet", "hosts", "--planner", mtls_fleet, *tls, "--token", "wrong", "--json"]) == 2
    err = capsys.readouterr().err
    # --json: the error is one JSON object on stderr too.
    assert len(err.strip().splitlines()) == 1 and json.loads(err)["error"]["kind"] == "unauthenticated"


@pytest.mark.parametrize("command", [["fleet", "hosts", "--planner", "127.0.0.1:9"], ["detect", "--agent", "127.0.0.1:9"]])
def test_an_unreadable_token_file_is_one_line_not_a_traceback(command, capsys, tmp_path):
    assert main([*command, "--token-file", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --token-file ") and "No such file" in err and len(err.strip().splitlines()) == 1
