"""What every SDK client shares: connection keywords, deadlines, error mapping, streams and closing.

A client subclasses ``SyncClient`` or ``AsyncClient`` and sets three class attributes:

- ``stub_class``: the generated ``...Stub`` of its service;
- ``retry_methods``: the full names (``pkg.Service`` or ``pkg.Service/Method``) the channel retries
  on UNAVAILABLE (only idempotent ones);
- ``default_timeouts_seconds``: per-method deadlines when neither the call nor the client gives one.

Every client therefore takes the same connection keywords (TLS, mutual TLS, server-name override,
bearer token, ``timeout_seconds``) and raises only ``clients.sdk.errors`` exceptions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator, Callable, ClassVar, Iterator, Mapping, Self, Sequence, TypeVar

import grpc

from clients.sdk.errors import from_rpc_error
from vllm_planner.transport.channel import ChannelOptions, create_aio_channel, create_channel

T = TypeVar("T")


def _path(value: str | Path | None) -> Path | None:
    return Path(value) if value else None  # callers may pass str


class _ClientBase:
    stub_class: ClassVar[Callable[[Any], Any]]
    service_name: ClassVar[str] = ""  # full name of the service, for errors naming what was expected
    retry_methods: ClassVar[tuple[str, ...]] = ()
    default_timeouts_seconds: ClassVar[Mapping[str, float]] = {}

    def __init__(
        self,
        target: str,
        *,
        tls: bool = False,
        tls_ca_file: str | Path | None = None,
        tls_cert_file: str | Path | None = None,
        tls_key_file: str | Path | None = None,
        tls_server_name: str | None = None,
        token: str | None = None,
        timeout_seconds: float | None = None,
        channel_options: Sequence[tuple[str, object]] = (),
    ) -> None:
        """Args:
        target: ``HOST:PORT`` of the service.
        tls: use TLS (implied by any ``tls_*_file``); ``tls_ca_file`` None = the system roots.
        tls_cert_file, tls_key_file: client certificate and key for mutual TLS.
        tls_server_name: name to check the server certificate against, when it differs from the host.
        token: bearer token the service was started with (``--auth-token``).
        timeout_seconds: deadline of every unary call; None = the per-method defaults.
        channel_options: more gRPC channel arguments (e.g. ``grpc.use_local_subchannel_pool``).
        """
        self._options = ChannelOptions(
            target=target, tls=tls, tls_ca_file=_path(tls_ca_file), tls_cert_file=_path(tls_cert_file),
            tls_key_file=_path(tls_key_file), tls_server_name=tls_server_name, auth_token=token,
            retry_methods=self.retry_methods, extra_options=tuple(channel_options),
        )
        self._timeout_seconds = timeout_seconds
        self._channel = self._create_channel(self._options)
        self._stub = self.stub_class(self._channel)

    def _error(self, exc: grpc.RpcError):  # noqa: ANN202  (SdkError)
        return from_rpc_error(exc, target=self._options.target, service=self.service_name)

    @staticmethod
    def _create_channel(options: ChannelOptions) -> Any:
        raise NotImplementedError

    def _call_kwargs(self, method: str, timeout_seconds: float | None) -> dict[str, Any]:
        timeout = timeout_seconds or self._timeout_seconds or self.default_timeouts_seconds.get(method)
        return self._stream_kwargs(timeout)

    def _stream_kwargs(self, timeout_seconds: float | None) -> dict[str, Any]:
        # Streams are long-lived: only the caller's own timeout bounds them, never a default.
        return {"timeout": timeout_seconds, "metadata": self._options.auth_metadata() or None}


def _cancelled(exc: grpc.RpcError) -> bool:
    # The caller stopped iterating (or closed the client): the end of the stream, not an error.
    return exc.code() == grpc.StatusCode.CANCELLED


class SyncClient(_ClientBase):
    """Base of the synchronous clients; thread-safe. Close it (or use ``with``)."""

    _create_channel = staticmethod(create_channel)

    def _call(self, method: str, request: Any, timeout_seconds: float | None, *, stub: Any = None) -> Any:
        """Unary ``method`` of ``stub`` (default: the service's) with its deadline; errors mapped."""
        try:
            return getattr(stub or self._stub, method)(request, **self._call_kwargs(method, timeout_seconds))
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def _stream(self, method: str, request: Any, timeout_seconds: float | None, convert: Callable[[Any], T]) -> Iterator[T]:
        """Server stream ``method``, each message converted; ends quietly when cancelled."""
        call = getattr(self._stub, method)(request, **self._stream_kwargs(timeout_seconds))
        try:
            for message in call:
                yield convert(message)
        except grpc.RpcError as exc:
            if not _cancelled(exc):
                raise self._error(exc) from None
        finally:
            call.cancel()

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncClient(_ClientBase):
    """Base of the asyncio clients (``grpc.aio``); create one inside the running loop, ``await close()``."""

    _create_channel = staticmethod(create_aio_channel)

    async def _call(self, method: str, request: Any, timeout_seconds: float | None, *, stub: Any = None) -> Any:
        try:
            return await getattr(stub or self._stub, method)(request, **self._call_kwargs(method, timeout_seconds))
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    async def _stream(
        self, method: str, request: Any, timeout_seconds: float | None, convert: Callable[[Any], T]
    ) -> AsyncIterator[T]:
        call = getattr(self._stub, method)(request, **self._stream_kwargs(timeout_seconds))
        try:
            async for message in call:
                yield convert(message)
        except grpc.RpcError as exc:
            if not _cancelled(exc):
                raise self._error(exc) from None
        finally:
            call.cancel()

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
