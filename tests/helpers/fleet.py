"""A FleetService on a real gRPC server (127.0.0.1), run on a ``BackgroundLoop`` of the test."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from planner_service.fleet.runtime import FLEET_SERVICE_NAME, FleetRuntime, FleetSettings
from planner_service.fleet.testing import BackgroundLoop
from planner_service.server.interceptor import ErrorMappingInterceptor
from vllm_planner.transport.server import ServerOptions, start_server
from vllm_planner.v1 import fleet_pb2_grpc


class FleetPlanner:
    """``FleetRuntime(settings, **runtime_kwargs)`` behind the real error-mapping interceptor.

    ``server`` overrides the listen address / TLS / token (its interceptors are replaced);
    ``without_methods`` serves FleetService as a planner release that lacked those RPCs would: absent
    from the service's method table, so gRPC itself answers them UNIMPLEMENTED.
    """

    def __init__(self, loop: BackgroundLoop, settings: FleetSettings, *, server: ServerOptions | None = None,
                 without_methods: tuple[str, ...] = (), **runtime_kwargs: Any) -> None:
        self.loop = loop
        self.runtime = FleetRuntime(settings, **runtime_kwargs)
        options = replace(server or ServerOptions(listen="127.0.0.1:0"), interceptors=[ErrorMappingInterceptor()])
        register = self.runtime.register if not without_methods else (
            lambda grpc_server: _register_without(self.runtime, grpc_server, without_methods))

        async def start():  # noqa: ANN202
            await self.runtime.start()
            return await start_server(options, register=register, service_full_names=[FLEET_SERVICE_NAME])

        self.server = loop.run(start())
        self.address = self.server.address

    def stop(self) -> None:
        async def stop() -> None:
            await self.server.stop(0)
            await self.runtime.stop()

        self.loop.run(stop())


def _register_without(runtime: FleetRuntime, server: Any, methods: tuple[str, ...]) -> None:
    """The generated registration's method table, less ``methods``, as one generic handler."""
    import grpc

    from planner_service.fleet.servicer import FleetServicer

    table: dict[str, Any] = {}

    class _Capture:
        def add_generic_rpc_handlers(self, handlers: Any) -> None:
            pass  # the same methods as the registered table below

        def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
            table.update(handlers)

    fleet_pb2_grpc.add_FleetServiceServicer_to_server(FleetServicer(runtime), _Capture())
    kept = {name: handler for name, handler in table.items() if name not in methods}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(FLEET_SERVICE_NAME, kept),))
