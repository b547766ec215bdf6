"""Run a real planner server on its own event loop in a background thread.

For tests and for programs that embed the service next to synchronous code::

    with BackgroundPlannerServer(PlannerServiceSettings(listen="127.0.0.1:0")) as server:
        with PlannerClient(server.address) as client:
            client.plan(request)
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

from planner_service.server.app import PlannerServiceSettings, build_planner_server
from vllm_planner.transport.server import RunningServer

_START_TIMEOUT_SECONDS = 30.0


class BackgroundPlannerServer:
    """Context manager: starts the server on enter, stops it (gracefully) on exit."""

    def __init__(self, settings: PlannerServiceSettings, *, resolver=None) -> None:  # noqa: ANN001
        self._settings = settings
        self._resolver = resolver
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="planner-server", daemon=True)
        self._running: RunningServer | None = None

    @property
    def address(self) -> str:
        if self._running is None:
            raise RuntimeError("server not started")
        return self._running.address

    def call(self, coroutine, timeout_seconds: float = _START_TIMEOUT_SECONDS):  # noqa: ANN001, ANN201
        """Run a coroutine on the server's loop and wait for its result."""
        future: Future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=timeout_seconds)

    def start(self) -> "BackgroundPlannerServer":
        self._thread.start()
        self._running = self.call(build_planner_server(self._settings, resolver=self._resolver))
        return self

    def stop(self, grace_seconds: float = 1.0) -> None:
        if self._running is not None:
            self.call(self._running.stop(grace_seconds))
            self._running = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=_START_TIMEOUT_SECONDS)
        self._loop.close()

    def __enter__(self) -> "BackgroundPlannerServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
