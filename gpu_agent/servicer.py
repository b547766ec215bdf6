"""``vllm_planner.v1.GpuAgentService``: a thin adapter over the collector's cached snapshot.

Both RPCs only read the cache; neither runs a command nor reads a file. Before the first successful
collection GetInventory answers UNAVAILABLE (with the collector's last error), and WatchInventory
sends heartbeats (stale) until the first snapshot exists. WatchInventory sends the inventory when its
content changed and a heartbeat otherwise: at once when the collector reports a change of freshness
(a failed collection, a recovery), and every heartbeat interval while nothing happens. Each heartbeat
carries the snapshot's freshness and the reason, so the planner follows stale -> fresh without waiting
for the GPUs' memory to change.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import AsyncIterator

import grpc

from gpu_agent.collector import Collector
from gpu_agent.convert import heartbeat_to_proto, inventory_to_proto
from vllm_planner.v1 import agent_pb2 as pb
from vllm_planner.v1 import agent_pb2_grpc

SERVICE_FULL_NAME = pb.DESCRIPTOR.services_by_name["GpuAgentService"].full_name


class ChangeSignal:
    """Wakes every WatchInventory stream when the collector reports a change (thread-safe)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def notify_threadsafe(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    def current(self) -> asyncio.Event:
        return self._event


class GpuAgentServicer(agent_pb2_grpc.GpuAgentServiceServicer):
    def __init__(self, collector: Collector, changes: ChangeSignal, heartbeat_seconds: float) -> None:
        self._collector = collector
        self._changes = changes
        self._heartbeat_seconds = heartbeat_seconds

    async def GetInventory(self, request: pb.GetInventoryRequest, context: grpc.aio.ServicerContext) -> pb.GetInventoryResponse:
        snapshot = self._collector.snapshot()
        if snapshot is None:
            reason = self._collector.last_error or "first collection still running"
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"no inventory collected yet: {reason}")
        return pb.GetInventoryResponse(inventory=inventory_to_proto(snapshot))

    async def WatchInventory(
        self, request: pb.WatchInventoryRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchInventoryResponse]:
        sent_generation = -1
        while True:
            changed = self._changes.current()  # taken before reading, so no change is missed
            snapshot = self._collector.snapshot()
            generation = self._collector.generation
            if snapshot is not None and generation != sent_generation:
                sent_generation = generation
                yield pb.WatchInventoryResponse(inventory=inventory_to_proto(snapshot))
            else:
                reason = None if snapshot is not None else (self._collector.last_error or "first collection still running")
                yield pb.WatchInventoryResponse(heartbeat=heartbeat_to_proto(datetime.now(timezone.utc), snapshot, reason))
            try:  # asyncio.timeout: Python 3.11's wait_for can swallow the stream's cancellation
                async with asyncio.timeout(self._heartbeat_seconds):
                    await changed.wait()
            except TimeoutError:
                pass
