"""A FleetService on a real gRPC server (127.0.0.1), run on a ``BackgroundLoop`` of the test."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from planner_service.fleet.runtime import FLEET_SERVICE_NAME, FleetRuntime, FleetSettings
from planner_service.fleet.testing import BackgroundLoop
from planner_service.server.interceptor import ErrorMappingInterceptor
from vllm_planner.transport.server import ServerOptions, start_server


class FleetPlanner:
    """``FleetRuntime(settings, **runtime_kwargs)`` behind the real error-mapping interceptor.

    ``server`` overrides the listen address / TLS / token (its interceptors are replaced).
    """

    def __init__(self, loop: BackgroundLoop, settings: FleetSettings, *, server: ServerOptions | None = None,
                 **runtime_kwargs: Any) -> None:
        self.loop = loop
        self.runtime = FleetRuntime(settings, **runtime_kwargs)
        options = replace(server or ServerOptions(listen="127.0.0.1:0"), interceptors=[ErrorMappingInterceptor()])

        async def start():  # noqa: ANN202
            await self.runtime.start()
            return await start_server(options, register=self.runtime.register, service_full_names=[FLEET_SERVICE_NAME])

        self.server = loop.run(start())
        self.address = self.server.address

    def stop(self) -> None:
        async def stop() -> None:
            await self.server.stop(0)
            await self.runtime.stop()

        self.loop.run(stop())
