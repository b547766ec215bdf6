"""TLS, mutual TLS and bearer-token auth on a real grpc.aio server started with start_server.

Certificates come from ``helpers.pki`` (a throw-away CA, a server certificate for
localhost/127.0.0.1, a client certificate, and a second CA nobody trusts). The servicers are the
standard health and reflection services plus a tiny generic handler with a unary and a
server-streaming method, so these tests depend on no other engineer's service.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from helpers.pki import make_pki
from vllm_planner.transport.auth import BearerTokenInterceptor
from vllm_planner.transport.channel import ChannelOptions, create_aio_channel, create_channel
from vllm_planner.transport.server import ServerOptions, start_server

TOKEN = "s3cret-token"
TIMEOUT_SECONDS = 5


# --- certificates -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _mtls_server(pki: dict[str, Path], **extra) -> ServerOptions:
    """A server on 127.0.0.1:0 with the test certificate that wants client certificates of the test CA."""
    return ServerOptions(listen="127.0.0.1:0", tls_cert_file=pki["server_cert"], tls_key_file=pki["server_key"],
                         tls_client_ca_file=pki["ca"], **extra)


# --- a tiny service ---------------------------------------------------------------------------------


async def _echo(request: bytes, context) -> bytes:
    return b"echo:" + request


async def _auth_headers(request: bytes, context) -> bytes:
    """How many authorization headers arrived (the client must never send two)."""
    return str(sum(1 for key, _ in context.invocation_metadata() if key == "authorization")).encode()


async def _join(request_iterator, context) -> bytes:
    return b"+".join([item async for item in request_iterator])


async def _count(request: bytes, context):
    for i in range(3):
        yield str(i).encode()


def _register(server: grpc.aio.Server) -> None:
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.Echo",
                {
                    "Unary": grpc.unary_unary_rpc_method_handler(_echo),
                    "Count": grpc.unary_stream_rpc_method_handler(_count),
                    "AuthHeaders": grpc.unary_unary_rpc_method_handler(_auth_headers),
                    "Join": grpc.stream_unary_rpc_method_handler(_join),
                },
            ),
        )
    )


async def _serve(options: ServerOptions):
    return await start_server(options, register=_register, service_full_names=["test.Echo"])


async def _unary(channel: grpc.aio.Channel, metadata=None) -> bytes:
    return await channel.unary_unary("/test.Echo/Unary")(b"hi", timeout=TIMEOUT_SECONDS, metadata=metadata)


async def _stream(channel: grpc.aio.Channel, metadata=None) -> list[bytes]:
    call = channel.unary_stream("/test.Echo/Count")(b"", timeout=TIMEOUT_SECONDS, metadata=metadata)
    return [item async for item in call]


async def _client_stream(channel: grpc.aio.Channel) -> bytes:
    async def parts():
        for part in (b"a", b"b"):
            yield part

    return await channel.stream_unary("/test.Echo/Join")(parts(), timeout=TIMEOUT_SECONDS)


async def _reflection_list(channel: grpc.aio.Channel, metadata=None) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def requests():
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names = []
    async for response in stub.ServerReflectionInfo(requests(), timeout=TIMEOUT_SECONDS, metadata=metadata):
        names += [s.name for s in response.list_services_response.service]
    return names


async def _health(channel: grpc.aio.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return (await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_SECONDS)).status


def _code(coro) -> grpc.StatusCode:
    async def run():
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await coro
        return info.value.code()

    return run()


# --- TLS / mTLS -------------------------------------------------------------------------------------


def test_tls_client_with_the_ca_works_and_one_without_it_fails(pki):
    async def scenario():
        running = await _serve(
            ServerOptions(listen="127.0.0.1:0", tls_cert_file=pki["server_cert"], tls_key_file=pki["server_key"])
        )
        target = f"localhost:{running.port}"
        try:
            async with create_aio_channel(ChannelOptions(target, tls_ca_file=pki["ca"])) as good:
                assert await _unary(good) == b"echo:hi"
            # System roots do not know our CA; a CA that did not sign the server is no better.
            async with create_aio_channel(ChannelOptions(target, tls=True)) as no_ca:
                assert await _code(_unary(no_ca)) == grpc.StatusCode.UNAVAILABLE
            async with create_aio_channel(ChannelOptions(target, tls_ca_file=pki["rogue_ca"])) as wrong_ca:
                assert await _code(_unary(wrong_ca)) == grpc.StatusCode.UNAVAILABLE
            # A plaintext client cannot talk to a TLS server at all.
            async with create_aio_channel(ChannelOptions(target)) as plain:
                assert await _code(_unary(plain)) == grpc.StatusCode.UNAVAILABLE
        finally:
            await running.stop(0)

    asyncio.run(scenario())


def test_mtls_requires_a_client_certificate_from_the_trusted_ca(pki):
    async def scenario():
        running = await _serve(_mtls_server(pki))
        target = f"localhost:{running.port}"
        try:
            with_cert = ChannelOptions(
                target, tls_ca_file=pki["ca"], tls_cert_file=pki["client_cert"], tls_key_file=pki["client_key"]
            )
            async with create_aio_channel(with_cert) as good:
                assert await _unary(good) == b"echo:hi"
            async with create_aio_channel(ChannelOptions(target, tls_ca_file=pki["ca"])) as no_cert:
                assert await _code(_unary(no_cert)) == grpc.StatusCode.UNAVAILABLE
            rogue = ChannelOptions(
                target,
                tls_ca_file=pki["ca"],
                tls_cert_file=pki["rogue_client_cert"],
                tls_key_file=pki["rogue_client_key"],
            )
            async with create_aio_channel(rogue) as bad:
                assert await _code(_unary(bad)) == grpc.StatusCode.UNAVAILABLE
        finally:
            await running.stop(0)

    asyncio.run(scenario())


def test_sync_channel_with_mtls_and_token(pki):
    """The sync SDK path: TLS + client certificate + token as call credentials."""

    async def scenario():
        running = await _serve(_mtls_server(pki, auth_token=TOKEN))
        options = ChannelOptions(
            f"127.0.0.1:{running.port}",
            tls_ca_file=pki["ca"],
            tls_cert_file=pki["client_cert"],
            tls_key_file=pki["client_key"],
            tls_server_name="localhost",
            auth_token=TOKEN,
        )

        def call_sync() -> bytes:
            with create_channel(options) as channel:
                return channel.unary_unary("/test.Echo/Unary")(b"sync", timeout=TIMEOUT_SECONDS)

        try:
            assert await asyncio.to_thread(call_sync) == b"echo:sync"
        finally:
            await running.stop(0)

    asyncio.run(scenario())


def test_server_refuses_half_configured_tls(pki):
    with pytest.raises(ValueError, match="both a certificate and a key"):
        asyncio.run(_serve(ServerOptions(tls_cert_file=pki["server_cert"])))
    with pytest.raises(ValueError, match="client CA"):
        asyncio.run(_serve(ServerOptions(tls_client_ca_file=pki["ca"])))
    with pytest.raises(ValueError, match="both --tls-cert-file and --tls-key-file"):
        create_channel(ChannelOptions("localhost:1", tls_cert_file=pki["client_cert"]))


# --- bearer token -----------------------------------------------------------------------------------


@pytest.mark.parametrize("use_tls", [False, True], ids=["plaintext", "tls"])
def test_bearer_token_on_unary_and_streaming_methods(pki, use_tls):
    async def scenario():
        tls = dict(tls_cert_file=pki["server_cert"], tls_key_file=pki["server_key"]) if use_tls else {}
        running = await _serve(ServerOptions(listen="127.0.0.1:0", auth_token=TOKEN, **tls))
        target = f"localhost:{running.port}"
        ca = dict(tls_ca_file=pki["ca"]) if use_tls else {}
        try:
            async with create_aio_channel(ChannelOptions(target, auth_token=TOKEN, **ca)) as good:
                assert await _unary(good) == b"echo:hi"
                assert await _stream(good) == [b"0", b"1", b"2"]
                assert await _client_stream(good) == b"a+b"
                assert "test.Echo" in await _reflection_list(good)
            for token in ("wrong-token", None):
                async with create_aio_channel(ChannelOptions(target, auth_token=token, **ca)) as bad:
                    assert await _code(_unary(bad)) == grpc.StatusCode.UNAUTHENTICATED
                    assert await _code(_stream(bad)) == grpc.StatusCode.UNAUTHENTICATED
                    assert await _code(_client_stream(bad)) == grpc.StatusCode.UNAUTHENTICATED
                    assert await _code(_reflection_list(bad)) == grpc.StatusCode.UNAUTHENTICATED
                    # Unknown methods are rejected the same way: no probing for what exists.
                    unknown = bad.unary_unary("/test.Echo/Nope")(b"", timeout=TIMEOUT_SECONDS)
                    assert await _code(unknown) == grpc.StatusCode.UNAUTHENTICATED
                    # Health is exempt so kubelet probes work without the token.
                    assert await _health(bad) == health_pb2.HealthCheckResponse.SERVING
        finally:
            await running.stop(0)

    asyncio.run(scenario())


def test_explicit_auth_metadata_and_sync_plaintext_interceptor():
    async def scenario():
        running = await _serve(ServerOptions(listen="127.0.0.1:0", auth_token=TOKEN))
        target = f"127.0.0.1:{running.port}"
        try:
            options = ChannelOptions(target, auth_token=TOKEN)
            # A caller passing auth_metadata() itself must not end up with two headers.
            async with create_aio_channel(options) as channel:
                assert await _unary(channel, metadata=options.auth_metadata()) == b"echo:hi"
                headers = channel.unary_unary("/test.Echo/AuthHeaders")
                assert await headers(b"", timeout=TIMEOUT_SECONDS, metadata=options.auth_metadata()) == b"1"
                assert await headers(b"", timeout=TIMEOUT_SECONDS) == b"1"
            async with create_aio_channel(ChannelOptions(target)) as channel:
                assert await _unary(channel, metadata=(("authorization", f"Bearer {TOKEN}"),)) == b"echo:hi"
                wrong_scheme = (("authorization", f"Basic {TOKEN}"),)
                assert await _code(_unary(channel, metadata=wrong_scheme)) == grpc.StatusCode.UNAUTHENTICATED

            def sync_calls() -> tuple[bytes, list[bytes], grpc.StatusCode]:
                with create_channel(options) as channel:
                    unary = channel.unary_unary("/test.Echo/Unary")(b"x", timeout=TIMEOUT_SECONDS)
                    streamed = list(channel.unary_stream("/test.Echo/Count")(b"", timeout=TIMEOUT_SECONDS))
                with create_channel(ChannelOptions(target, auth_token="nope")) as channel:
                    with pytest.raises(grpc.RpcError) as info:
                        channel.unary_unary("/test.Echo/Unary")(b"x", timeout=TIMEOUT_SECONDS)
                return unary, streamed, info.value.code()

            unary, streamed, code = await asyncio.to_thread(sync_calls)
            assert unary == b"echo:x"
            assert streamed == [b"0", b"1", b"2"]
            assert code == grpc.StatusCode.UNAUTHENTICATED
        finally:
            await running.stop(0)

    asyncio.run(scenario())


def test_token_interceptor_rejects_blank_tokens():
    for bad in ("", " padded "):
        with pytest.raises(ValueError):
            BearerTokenInterceptor(bad)
    interceptor = BearerTokenInterceptor(TOKEN)
    assert interceptor.is_authorized([("authorization", f"Bearer {TOKEN}")])
    assert interceptor.is_authorized([("authorization", f"Bearer {TOKEN}".encode())])
    assert not interceptor.is_authorized([("authorization", f"Bearer {TOKEN}x")])
    assert not interceptor.is_authorized([("authorization", TOKEN)])
    assert not interceptor.is_authorized([])
