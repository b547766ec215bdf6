"""Metrics, logs with request ids, the health-only port and graceful shutdown, on real servers."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from vllm_planner.transport import metrics
from vllm_planner.transport.channel import ChannelOptions, create_aio_channel
from vllm_planner.transport.logs import REQUEST_ID, configure_logging
from vllm_planner.transport.observability import request_id_from
from vllm_planner.transport.server import ServerOptions, start_server

TIMEOUT_SECONDS = 5
app_log = logging.getLogger("test.app")


async def _echo(request: bytes, context) -> bytes:
    app_log.info("handling echo")
    return b"echo:" + request


async def _fail(request: bytes, context) -> bytes:
    await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "does not fit")


async def _crash(request: bytes, context) -> bytes:
    raise RuntimeError("bug in a handler")


async def _slow(request: bytes, context) -> bytes:
    await asyncio.sleep(0.5)
    return b"done"


async def _ticks(request: bytes, context):
    for i in range(2):
        yield bytes([i])


def _register(server: grpc.aio.Server) -> None:
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo),
        "Fail": grpc.unary_unary_rpc_method_handler(_fail),
        "Crash": grpc.unary_unary_rpc_method_handler(_crash),
        "Slow": grpc.unary_unary_rpc_method_handler(_slow),
        "Ticks": grpc.unary_stream_rpc_method_handler(_ticks),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Ops", handlers),))


def _handled(method: str, code: str, rpc_type: str = "unary") -> float:
    labels = {"grpc_service": "test.Ops", "grpc_method": method, "grpc_type": rpc_type, "grpc_code": code}
    return REGISTRY.get_sample_value("grpc_server_handled_total", labels) or 0.0


def _latency_count(method: str, code: str) -> float:
    labels = {"grpc_service": "test.Ops", "grpc_method": method, "grpc_type": "unary", "grpc_code": code}
    return REGISTRY.get_sample_value("grpc_server_handling_seconds_count", labels) or 0.0


def test_rpc_metrics_by_method_and_code_and_the_http_endpoint():
    before = {
        "ok": _handled("Echo", "OK"),
        "fail": _handled("Fail", "FAILED_PRECONDITION"),
        "unauth": _handled("Echo", "UNAUTHENTICATED"),
        "crash": _handled("Crash", "INTERNAL"),
        "stream": _handled("Ticks", "OK", "server_stream"),
        "latency": _latency_count("Echo", "OK"),
    }

    async def scenario() -> str:
        running = await start_server(
            ServerOptions(listen="127.0.0.1:0", auth_token="t", metrics_listen="127.0.0.1:0"),
            register=_register,
            service_full_names=["test.Ops"],
        )
        try:
            target = f"127.0.0.1:{running.port}"
            async with create_aio_channel(ChannelOptions(target, auth_token="t")) as channel:
                for _ in range(3):
                    await channel.unary_unary("/test.Ops/Echo")(b"x", timeout=TIMEOUT_SECONDS)
                with pytest.raises(grpc.aio.AioRpcError):
                    await channel.unary_unary("/test.Ops/Fail")(b"", timeout=TIMEOUT_SECONDS)
                with pytest.raises(grpc.aio.AioRpcError) as crashed:
                    await channel.unary_unary("/test.Ops/Crash")(b"", timeout=TIMEOUT_SECONDS)
                # A handler's bug is INTERNAL with a generic message (the transport's guard), never UNKNOWN.
                assert crashed.value.code() == grpc.StatusCode.INTERNAL
                assert "bug in a handler" not in crashed.value.details()
                assert [t async for t in channel.unary_stream("/test.Ops/Ticks")(b"", timeout=TIMEOUT_SECONDS)] == [
                    b"\x00",
                    b"\x01",
                ]
            async with create_aio_channel(ChannelOptions(target, auth_token="wrong")) as channel:
                with pytest.raises(grpc.aio.AioRpcError):
                    await channel.unary_unary("/test.Ops/Echo")(b"x", timeout=TIMEOUT_SECONDS)
            url = running.metrics_server.url
            return await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
        finally:
            await running.stop(0)

    exposition = asyncio.run(scenario())
    assert _handled("Echo", "OK") - before["ok"] == 3
    assert _handled("Fail", "FAILED_PRECONDITION") - before["fail"] == 1
    assert _handled("Echo", "UNAUTHENTICATED") - before["unauth"] == 1
    assert _handled("Crash", "INTERNAL") - before["crash"] == 1
    assert _handled("Ticks", "OK", "server_stream") - before["stream"] == 1
    assert _latency_count("Echo", "OK") - before["latency"] == 3
    assert 'grpc_server_handled_total{grpc_code="OK",grpc_method="Echo",grpc_service="test.Ops",grpc_type="unary"}' in exposition
    assert "vllm_planner_fleet_hosts" in exposition  # the service metrics are exposed too
    assert "process_cpu_seconds_total" in exposition or "python_info" in exposition


def test_metrics_endpoint_is_off_by_default_and_closed_on_stop():
    async def scenario():
        running = await start_server(ServerOptions(listen="127.0.0.1:0"), _register, ["test.Ops"])
        assert running.metrics_server is None
        await running.stop(0)
        with_metrics = await start_server(
            ServerOptions(listen="127.0.0.1:0", metrics_listen="127.0.0.1:0"), _register, ["test.Ops"]
        )
        url = with_metrics.metrics_server.url
        await with_metrics.stop(0)
        return url

    url = asyncio.run(scenario())
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)


def test_service_metric_registry_api_is_idempotent():
    first = metrics.counter("vllm_planner_test_widgets", "Widgets.", ("kind",))
    again = metrics.counter("vllm_planner_test_widgets", "Widgets.", ("kind",))
    assert first is again
    first.labels(kind="a").inc(2)
    assert REGISTRY.get_sample_value("vllm_planner_test_widgets_total", {"kind": "a"}) >= 2
    with pytest.raises(ValueError):
        metrics.gauge("vllm_planner_test_widgets", "Widgets.", ("kind",))
    metrics.FLEET_HOSTS.labels(state="healthy").set(7)
    assert REGISTRY.get_sample_value("vllm_planner_fleet_hosts", {"state": "healthy"}) == 7
    metrics.HUB_CACHE_REQUESTS_TOTAL.labels(result="hit").inc()
    with metrics.AGENT_COLLECTION_SECONDS.labels(source="fake").time():
        pass
    assert REGISTRY.get_sample_value("vllm_planner_agent_collection_seconds_count", {"source": "fake"}) >= 1
    assert metrics.split_method("/a.b.Svc/Get") == ("a.b.Svc", "Get")


def test_json_logs_carry_the_request_id_from_metadata_or_a_generated_one():
    buffer = io.StringIO()

    async def scenario():
        running = await start_server(ServerOptions(listen="127.0.0.1:0"), _register, ["test.Ops"])
        try:
            async with create_aio_channel(ChannelOptions(f"127.0.0.1:{running.port}")) as channel:
                echo = channel.unary_unary("/test.Ops/Echo")
                await echo(b"x", timeout=TIMEOUT_SECONDS, metadata=(("x-request-id", "req-123"),))
                await echo(b"y", timeout=TIMEOUT_SECONDS)
                # An id that could forge log lines is replaced, not logged.
                await echo(b"z", timeout=TIMEOUT_SECONDS, metadata=(("x-request-id", "spaces ] FORGED ["),))
        finally:
            await running.stop(0)

    handler = configure_logging(log_format="json", log_level="INFO", stream=buffer)
    try:
        asyncio.run(scenario())
    finally:
        logging.getLogger().removeHandler(handler)
    records = [json.loads(line) for line in buffer.getvalue().splitlines()]
    app_records = [r for r in records if r["logger"] == "test.app"]
    access = [r for r in records if r["logger"] == "vllm_planner.rpc" and r.get("grpc_method") == "/test.Ops/Echo"]
    assert len(app_records) == 3 and len(access) == 3
    assert app_records[0]["request_id"] == "req-123" and access[0]["request_id"] == "req-123"
    generated = {app_records[1]["request_id"], app_records[2]["request_id"]}
    assert len(generated) == 2 and all(len(g) == 32 for g in generated)
    assert access[1]["request_id"] == app_records[1]["request_id"]
    assert access[0]["grpc_code"] == "OK" and access[0]["duration_ms"] >= 0
    assert all(set(r) >= {"time", "level", "logger", "message"} for r in records)
    assert "FORGED" not in buffer.getvalue()


def test_text_logs_and_settings_validation():
    buffer = io.StringIO()
    handler = configure_logging(log_format="text", log_level="debug", stream=buffer)
    try:
        token = REQUEST_ID.set("abc")
        logging.getLogger("test.text").debug("hello")
        REQUEST_ID.reset(token)
        logging.getLogger("test.text").info("outside")
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(logging.WARNING)
    lines = buffer.getvalue().splitlines()
    assert "DEBUG test.text [abc] hello" in lines[0]
    assert "[-] outside" in lines[1]
    with pytest.raises(ValueError):
        configure_logging(log_format="xml")
    assert request_id_from([("x-request-id", b"bytes-id")]) == "bytes-id"


def test_in_flight_rpc_completes_during_graceful_shutdown_and_new_calls_are_refused():
    async def scenario():
        running = await start_server(
            ServerOptions(listen="127.0.0.1:0", grace_seconds=5, health_listen="127.0.0.1:0"),
            _register,
            ["test.Ops"],
        )
        target = f"127.0.0.1:{running.port}"
        async with create_aio_channel(ChannelOptions(target)) as channel, create_aio_channel(
            ChannelOptions(f"127.0.0.1:{running.health_port}")
        ) as health_channel:
            health_stub = health_pb2_grpc.HealthStub(health_channel)
            serving = await health_stub.Check(health_pb2.HealthCheckRequest(service="test.Ops"), timeout=5)
            assert serving.status == health_pb2.HealthCheckResponse.SERVING
            slow = asyncio.ensure_future(channel.unary_unary("/test.Ops/Slow")(b"", timeout=TIMEOUT_SECONDS))
            await asyncio.sleep(0.1)  # the call is now in flight
            stopping = asyncio.ensure_future(running.stop())
            await asyncio.sleep(0.1)
            # Health reports NOT_SERVING while draining; the main port takes no new calls.
            draining = await health_stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await channel.unary_unary("/test.Ops/Echo")(b"", timeout=2)
            assert await slow == b"done"
            await stopping
        return draining.status, refused.value.code()

    draining_status, refused_code = asyncio.run(scenario())
    assert draining_status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert refused_code == grpc.StatusCode.UNAVAILABLE


def test_health_port_is_plaintext_and_health_only():
    async def scenario():
        running = await start_server(
            ServerOptions(listen="127.0.0.1:0", auth_token="t", health_listen="127.0.0.1:0"), _register, ["test.Ops"]
        )
        try:
            async with create_aio_channel(ChannelOptions(f"127.0.0.1:{running.health_port}")) as channel:
                status = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await channel.unary_unary("/test.Ops/Echo")(b"", timeout=5)
        finally:
            await running.stop(0)
        return status.status, info.value.code()

    status, code = asyncio.run(scenario())
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert code == grpc.StatusCode.UNIMPLEMENTED
