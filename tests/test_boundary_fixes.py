"""Regression tests for the request/metadata/service boundary defects the reliability suite found.

Each section drives the real part: pydantic models as the SDK builds them, the CLI through
``clients.cli.main.main``, ``find_local_folder`` on a real temporary model root, the proto converter,
real gRPC servers on 127.0.0.1:0 behind the real error-mapping interceptor, and a fresh Python
process talking to a loopback "Hub" socket. No network beyond loopback.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import grpc
import pytest
from pydantic import ValidationError

from clients.cli.main import main as cli_main
from clients.sdk.errors import Unavailable
from clients.sdk.planner_client import SERVICE_FULL_NAME, PlannerClient
from helpers.offline import offline_hub
from helpers.paths import REPO
from planner_service.engine.errors import InvalidRequestError, MetadataUnavailableError
from planner_service.engine.models import (
    GIB,
    EngineOptions,
    HardwareOptions,
    ModelOptions,
    PlanRequest,
    PolicyOptions,
)
from planner_service.metadata.local import Confinement, find_local_folder
from planner_service.server import convert
from planner_service.server.app import PlannerServiceSettings
from planner_service.server.background import BackgroundPlannerServer
from planner_service.server.interceptor import RETRY_PUSHBACK_KEY, ErrorMappingInterceptor
from vllm_planner.transport.server import ServerOptions, start_server
from vllm_planner.v1 import planner_pb2, planner_pb2_grpc

CATALOG_MODEL = "Qwen/Qwen3-8B"
HUGE_NAME = "a" * 100_000
NUL_NAME = "qwen3-8b\x00/../../etc"


# --------------------------------------------------------------------------------------------------
# 1. The request models: finite numbers, bounded lengths and counts
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: ModelOptions(model="m", max_model_len=0),
        lambda: ModelOptions(model="m", max_model_len=-5),
        lambda: ModelOptions(model="m", max_model_len=-5.0),
        lambda: ModelOptions(model="m", max_model_len=10**12),
        lambda: ModelOptions(model="m", max_model_len=True),
        lambda: ModelOptions(model="m", params_b=math.inf),
        lambda: ModelOptions(model="m", params_b=math.nan),
        lambda: ModelOptions(model="m", params_b=1e6),
        lambda: HardwareOptions(vram_gb=math.inf),
        lambda: HardwareOptions(free_memory_bytes=10**30),
        lambda: PolicyOptions(overhead_gb=math.inf),
        lambda: PolicyOptions(gpu_memory_utilization=math.nan),
        lambda: PolicyOptions(fragmentation_factor=math.nan),
        lambda: EngineOptions(kv_cache_memory_bytes=10**30),
    ],
    ids=["len-0", "len-neg", "len-neg-float", "len-huge", "len-bool", "params-inf", "params-nan", "params-huge",
         "vram-inf", "free-huge", "overhead-inf", "util-nan", "frag-nan", "kv-bytes-huge"],
)
def test_out_of_range_and_non_finite_numbers_are_refused(build):
    with pytest.raises(ValidationError):
        build()


def test_valid_lengths_and_counts_still_validate():
    assert ModelOptions(model="m", max_model_len="auto").max_model_len == "auto"
    assert ModelOptions(model="m", max_model_len=8192).max_model_len == 8192
    assert ModelOptions(model="m", max_model_len=None).max_model_len is None
    assert ModelOptions(model="m", params_b=8.2).params_b == 8.2
    assert HardwareOptions(free_memory_bytes=70 * GIB).free_memory_bytes == 70 * GIB


def test_the_length_error_is_one_violation_naming_the_field():
    with pytest.raises(ValidationError) as info:
        ModelOptions(model="m", max_model_len=-5)
    errors = info.value.errors()
    assert [e["loc"] for e in errors] == [("max_model_len",)]
    assert "auto" in errors[0]["msg"]


# --------------------------------------------------------------------------------------------------
# 2. The CLI: one line, non-zero exit, vLLM's -1 still means auto
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [
        ["--max-model-len", "-5"], ["--max-model-len", "0"], ["--max-model-len", "lots"],
        ["--gpus", "0"], ["--tp", "-2"], ["--pp", "x"], ["--vram-gb", "inf"], ["--params-b", "nan"],
        ["--gpu-memory-utilization", "nan"], ["--overhead-gb", "-1"], ["--headroom-gb", "inf"],
        ["--free-memory-gb", "-3"], ["--max-num-seqs", "0"], ["--max-num-batched-tokens", "-8k"],
        ["--kv-cache-memory-bytes", "-1G"], ["--block-size", "0"], ["--concurrency", "-1"],
        ["--prompt-tokens", "0"],
    ],
    ids=lambda flags: " ".join(flags),
)
def test_cli_numeric_flags_give_one_error_line(capsys, flags):
    code = cli_main(["plan", "-m", CATALOG_MODEL, *flags])
    err = capsys.readouterr().err
    assert code == 2
    # One line naming the flag: no argparse usage dump, no traceback.
    assert err.count("\n") == 1 and err.startswith("error: --"), err
    assert flags[0] in err.split(": ")[1].split("/"), err  # e.g. "error: --tensor-parallel-size/--tp: ..."


def test_cli_minus_one_still_means_auto(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = cli_main(["plan", "-m", CATALOG_MODEL, "--gpu", "H100", "--max-model-len", "-1", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    reply = json.loads(out)
    # auto-fit picks the longest context that fits: at most the model's own limit, and positive.
    assert 0 < reply["config"]["max_model_len"] <= reply["model"]["derived_max_model_len"]


# --------------------------------------------------------------------------------------------------
# 3. Local model names no filesystem call can take
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [HUGE_NAME, NUL_NAME, "x/" * 60_000], ids=["100k-chars", "nul-byte", "100k-path"])
@pytest.mark.parametrize("confined", [True, False], ids=["roots", "anywhere"])
def test_unusable_local_names_are_invalid_requests(tmp_path, name, confined):
    confinement = Confinement([tmp_path] if confined else None)
    with pytest.raises(InvalidRequestError) as info:
        find_local_folder(name, confinement, allow_local_paths=True)
    assert [v.field for v in info.value.violations] == ["model.model"]
    assert len(str(info.value)) < 200  # the message never echoes a 100k-char name


def test_a_real_folder_is_still_found(tmp_path):
    (tmp_path / "m").mkdir()
    assert find_local_folder("m", Confinement([tmp_path]), allow_local_paths=True) == tmp_path / "m"


# --------------------------------------------------------------------------------------------------
# 4. Inline config_json over the wire: presence, not emptiness; bounded parsing
# --------------------------------------------------------------------------------------------------


def _inline(text: str | None) -> planner_pb2.PlanRequest:
    model = planner_pb2.ModelOptions(model="inline")
    if text is not None:
        model.config_json = text
    return planner_pb2.PlanRequest(model=model)


@pytest.mark.parametrize("text", ["", "[" * 100_000 + "]" * 100_000, "{bad", "[1, 2]"],
                         ids=["empty", "nested-100k", "not-json", "list"])
def test_a_present_but_bad_config_json_is_invalid(text):
    with pytest.raises(InvalidRequestError) as info:
        convert.from_proto(_inline(text), PlanRequest)
    assert [v.field for v in info.value.violations] == ["model.config_json"]


def test_an_absent_config_json_stays_none_and_a_good_one_parses():
    assert convert.from_proto(_inline(None), PlanRequest).model.config_json is None
    assert convert.from_proto(_inline('{"a": 1}'), PlanRequest).model.config_json == {"a": 1}


# --------------------------------------------------------------------------------------------------
# The same through a real planner server (the statuses any client sees)
# --------------------------------------------------------------------------------------------------


@contextmanager
def counting_hub() -> Iterator[tuple[str, list[bytes]]]:
    """A loopback "Hub" that records the first bytes of each connection and closes it unanswered."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    seen: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(1.0)
                try:
                    seen.append(conn.recv(4096))
                except OSError:
                    seen.append(b"")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", seen
    finally:
        stop.set()
        thread.join(2)
        server.close()


@pytest.fixture(scope="module")
def hub_and_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    with counting_hub() as (endpoint, seen), offline_hub(tmp_path_factory.mktemp("hf-home"), endpoint):
        settings = PlannerServiceSettings(listen="127.0.0.1:0", model_root=[root], hub_timeout_seconds=2)
        with BackgroundPlannerServer(settings) as running:
            yield running, seen


@pytest.mark.parametrize(
    "request_",
    [
        planner_pb2.PlanRequest(model=planner_pb2.ModelOptions(model=HUGE_NAME)),
        planner_pb2.PlanRequest(model=planner_pb2.ModelOptions(model=NUL_NAME)),
        _inline(""),
        _inline("[" * 100_000 + "]" * 100_000),
        planner_pb2.PlanRequest(model=planner_pb2.ModelOptions(model=CATALOG_MODEL, max_model_len=-5)),
        planner_pb2.PlanRequest(model=planner_pb2.ModelOptions(model=CATALOG_MODEL, params_b=math.inf)),
    ],
    ids=["huge-id", "nul-id", "inline-empty", "inline-nested-100k", "len-negative", "params-inf"],
)
def test_the_service_answers_invalid_argument(hub_and_server, request_):
    server, _ = hub_and_server
    with grpc.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            planner_pb2_grpc.PlannerServiceStub(channel).Plan(request_, timeout=20)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()[:200]


# --------------------------------------------------------------------------------------------------
# 5a. The service's own UNAVAILABLE carries "do not retry"; the SDK honours it
# --------------------------------------------------------------------------------------------------


def _hub_requests(seen: list[bytes]) -> list[bytes]:
    return [first for first in seen if b"/api/agent-harnesses" not in first]


def test_the_sdk_asks_the_dead_hub_once_per_plan(hub_and_server):
    server, seen = hub_and_server
    with grpc.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            planner_pb2_grpc.PlannerServiceStub(channel).Plan(
                planner_pb2.PlanRequest(model=planner_pb2.ModelOptions(model="nobody/raw")), timeout=20)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (RETRY_PUSHBACK_KEY, "-1") in tuple(info.value.trailing_metadata())
    per_plan = len(_hub_requests(seen))
    assert per_plan >= 1

    before = len(_hub_requests(seen))
    with PlannerClient(server.address, timeout_seconds=20) as client:
        with pytest.raises(Unavailable):
            client.plan(PlanRequest(model=ModelOptions(model="nobody/through-the-sdk")))
    assert len(_hub_requests(seen)) - before == per_plan, "the SDK retried the service's own UNAVAILABLE"


class _CountingPlanner(planner_pb2_grpc.PlannerServiceServicer):
    """Plan fails like a dead Hub; ListGpuTypes answers UNAVAILABLE twice the way a draining proxy
    or a not-yet-ready server does (no pushback), then succeeds."""

    def __init__(self) -> None:
        self.plan_calls = 0
        self.list_calls = 0

    async def Plan(self, request, context):  # noqa: ANN001, N802
        self.plan_calls += 1
        raise MetadataUnavailableError("x/y: the Hugging Face Hub is unreachable")

    async def ListGpuTypes(self, request, context):  # noqa: ANN001, N802
        self.list_calls += 1
        if self.list_calls <= 2:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "not ready yet")
        return planner_pb2.ListGpuTypesResponse()


@pytest.fixture
def counting_server():
    servicer = _CountingPlanner()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro):  # noqa: ANN001, ANN202
        return asyncio.run_coroutine_threadsafe(coro, loop).result(20)

    running = run(start_server(
        ServerOptions(listen="127.0.0.1:0", interceptors=[ErrorMappingInterceptor()]),
        register=lambda server: planner_pb2_grpc.add_PlannerServiceServicer_to_server(servicer, server),
        service_full_names=[SERVICE_FULL_NAME],
    ))
    try:
        yield running.address, servicer
    finally:
        run(running.stop(0))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_domain_unavailable_is_not_retried_but_transport_unavailable_is(counting_server):
    address, servicer = counting_server
    with PlannerClient(address, timeout_seconds=10) as client:
        started = time.monotonic()
        with pytest.raises(Unavailable) as info:
            client.plan(PlanRequest(model=ModelOptions(model="x/y")))
        assert "hub" in str(info.value).lower()
        assert servicer.plan_calls == 1
        assert time.monotonic() - started < 2.0

        assert client.list_gpu_types() == []  # retried through two UNAVAILABLEs
        assert servicer.list_calls == 3


# --------------------------------------------------------------------------------------------------
# 5b. The first Hub request of a fresh process: no 3 s agent-registry fetch before it
# --------------------------------------------------------------------------------------------------

_FIRST_HUB_CALL = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from planner_service.engine.errors import PlannerError
    from planner_service.metadata.hub import fetch_from_hub
    started = time.monotonic()
    try:
        fetch_from_hub("nobody/first", revision=None, token=None, timeout_seconds=0.5, cache_dir=Path(sys.argv[1]))
        kind = "ok"
    except PlannerError as exc:
        kind = type(exc).__name__
    print(json.dumps({"kind": kind, "seconds": time.monotonic() - started}))
    """
)


def test_the_first_hub_failure_of_a_fresh_process_is_within_the_timeout(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_DISABLE_TELEMETRY", "DISABLE_TELEMETRY", "HF_HUB_OFFLINE")}
    with counting_hub() as (endpoint, seen):
        env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(REPO))
        done = subprocess.run([sys.executable, "-c", _FIRST_HUB_CALL, str(tmp_path / "cache")], env=env,
                              capture_output=True, text=True, timeout=60, cwd=REPO)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["kind"] == "MetadataUnavailableError"
    assert result["seconds"] < 0.5 + 1.0, result
    assert seen and not [first for first in seen if b"/api/agent-harnesses" in first], seen


def test_the_asyncio_sdk_honours_the_pushback_too(counting_server):
    from clients.sdk.planner_client import AsyncPlannerClient

    address, servicer = counting_server

    async def scenario() -> list:
        client = AsyncPlannerClient(address, timeout_seconds=10)
        try:
            with pytest.raises(Unavailable):
                await client.plan(PlanRequest(model=ModelOptions(model="x/y")))
            return await client.list_gpu_types()
        finally:
            await client.close()

    assert asyncio.run(scenario()) == []
    assert (servicer.plan_calls, servicer.list_calls) == (1, 3)
