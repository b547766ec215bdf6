"""Reservations, paging and resumable watching over a real FleetService on 127.0.0.1.

Agents are in-process inventory streams (the watcher's injected opener) and the twin is the
transparent stand-in, so these tests are about the service's bookkeeping: concurrent reserving Place
calls never overlap on a GPU, holds end by release / expiry / the agent reporting the memory in use,
ListHosts pages per AIP-158, WatchFleet pages its snapshot and resumes, and a Place answer stays under
64 KiB however many hosts reject it.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from clients.sdk.errors import InvalidArgument, NotFound
from clients.sdk.fleet_client import FleetClient
from helpers.fleet import FleetPlanner
from helpers.waiting import wait_until
from planner_service.engine.models import ModelOptions, PlanRequest
from planner_service.engine.source import ModelSource
from planner_service.fleet.evaluator import TwinProvider
from planner_service.fleet.models import Deployment, HostFilter, HostState, RejectReason
from planner_service.fleet.registry import FleetTimings
from planner_service.fleet.reservations import ReservationBook
from planner_service.fleet.runtime import FleetSettings
from planner_service.fleet.testing import BackgroundLoop, StandInTwin, h100_host, h100_nvlink_host
from vllm_planner.v1 import fleet_pb2 as pb
from vllm_planner.v1 import fleet_pb2_grpc

GIB = 1 << 30
FAST = FleetTimings(heartbeat_interval_seconds=0.2, stale_after_seconds=5, sweep_interval_seconds=0.05,
                    backoff_initial_seconds=0.05, backoff_max_seconds=0.2)


class Streams:
    """Inventory streams by address; ``hosts`` may be replaced while streaming (a new report)."""

    def __init__(self, hosts: dict) -> None:
        self.hosts = hosts

    async def open(self, address: str):
        while True:
            yield self.hosts[address]
            await asyncio.sleep(0.05)


def _provider() -> TwinProvider:
    return TwinProvider(resolve=lambda m: ModelSource(model=m.model, source="inline", config={}), build=lambda s, r: StandInTwin()(r))


@pytest.fixture
def fleet():
    hosts = {f"10.1.0.{i}:50061": h100_host(f"h100-{i:02d}", address=f"10.1.0.{i}:50061") for i in range(1, 5)}
    hosts["10.1.1.1:50061"] = h100_nvlink_host("dgx-1", gpus=4, address="10.1.1.1:50061")
    streams = Streams(hosts)
    loop = BackgroundLoop()
    planner = FleetPlanner(loop, FleetSettings(agents=list(hosts), timings=FAST), open_stream=streams.open, provider=_provider())
    planner.streams = streams
    with FleetClient(planner.address) as client:
        wait_until(lambda: len([h for h in client.list_hosts() if h.state is HostState.READY]) == len(hosts), timeout_seconds=10)
    yield planner
    planner.stop()
    loop.close()


def _dep(params_b: float = 30.0, replicas: int = 1) -> Deployment:
    # A 30B stand-in model takes most of one H100: two answers can never share a GPU.
    return Deployment(plan=PlanRequest(model=ModelOptions(model="m", max_model_len=4096, params_b=params_b)), replicas=replicas)


def test_concurrent_reserving_place_calls_never_overlap(fleet):
    with FleetClient(fleet.address) as client:
        free = {(h.address, g.uuid): g.memory_free_bytes for h in client.list_hosts() for g in h.gpus}
        with ThreadPoolExecutor(max_workers=12) as pool:
            answers = list(pool.map(lambda _: client.place(_dep(), reserve_seconds=30), range(12)))
        held: dict[tuple[str, str], int] = {}
        for answer in answers:
            for p in answer.selected:
                for uuid in p.gpu_uuids:
                    held[(p.address, uuid)] = held.get((p.address, uuid), 0) + p.reserved_bytes
        assert held and all(held[k] <= free[k] for k in held), held  # no GPU promised twice
        placed = [a for a in answers if a.selected]
        assert len(placed) == 8  # 4 single H100s + 4 GPUs of the NVLink host, one replica each
        assert all(a.reservation is not None and a.reservation.holds for a in placed)
        assert all(not a.selected and a.reservation is None for a in answers if a not in placed)
        # Held memory shows in ListHosts, and the next caller gets nothing until a hold ends.
        shown = {(h.address, g.uuid): g.memory_held_bytes for h in client.list_hosts() for g in h.gpus}
        assert {k: v for k, v in shown.items() if v} == held
        assert not client.place(_dep()).selected
        released = client.release_reservation(placed[0].reservation.reservation_id)
        assert released.state.value == "released"
        again = client.place(_dep())
        assert again.selected[0].gpu_uuids == placed[0].selected[0].gpu_uuids
        with pytest.raises(NotFound):
            client.release_reservation(placed[0].reservation.reservation_id)
        assert len(client.list_reservations()) == 7


def test_holds_expire_and_are_consumed_when_the_agent_reports_the_memory_in_use(fleet):
    with FleetClient(fleet.address) as client:
        quick = client.place(_dep(), reserve_seconds=0.5)
        assert quick.selected and client.list_reservations()
        time.sleep(0.6)
        assert client.list_reservations() == []  # expired
        answer = client.place(_dep(replicas=1), reserve_seconds=60)
        (p,) = answer.selected
        host = fleet.streams.hosts[p.address]
        gpus = tuple(g.model_copy(update={"memory_free_bytes": g.memory_free_bytes - p.requested_memory_bytes})
                     if g.uuid in p.gpu_uuids else g for g in host.gpus)
        fleet.streams.hosts[p.address] = host.model_copy(update={"gpus": gpus})  # vLLM started there
        wait_until(lambda: client.get_host(p.address).gpus[0].memory_free_bytes < host.gpus[0].memory_free_bytes
                   if p.address != "10.1.1.1:50061" else True, timeout_seconds=5)
        time.sleep(0.2)
        client.place(_dep())  # applying the holds notices the consumption
        assert [r.reservation_id for r in client.list_reservations()] == []


def test_reservation_book_consumes_holds_on_one_gpu_oldest_first():
    host = h100_host("h", address="h:1")
    gpu = host.gpus[0]
    book = ReservationBook(startup_overhead_bytes=GIB)
    from planner_service.fleet.models import Placement

    def placement(reserved: int) -> Placement:
        return Placement(host="h", address="h:1", gpu_uuids=(gpu.uuid,), gpu_indices=(0,), gpu_name=gpu.name, tensor_parallel_size=1,
                         interconnect="single", gpu_memory_utilization=0.3, memory_total_bytes=gpu.memory_total_bytes,
                         memory_free_bytes=gpu.memory_free_bytes, requested_memory_bytes=reserved - GIB, reserved_bytes=reserved,
                         fits=True, kv_cache_tokens=1, max_concurrency=1.0, max_model_len=1, kv_cache_bytes=1, weights_bytes=1)

    with book.lock:
        a = book.reserve("a", [placement(31 * GIB)], book.apply((host,)), 60)
        view = book.apply((host,))
        assert view[0].gpus[0].memory_free_bytes == gpu.memory_free_bytes - 31 * GIB
        b = book.reserve("b", [placement(21 * GIB)], view, 60)
        # A's vLLM starts: free memory falls by its claim (30 GiB): A is consumed, B still holds.
        started = host.model_copy(update={"gpus": (gpu.model_copy(update={"memory_free_bytes": gpu.memory_free_bytes - 30 * GIB}),)})
        view = book.apply((started,))
    assert [r.reservation_id for r in book.active()] == [b.reservation_id]
    assert view[0].gpus[0].memory_held_bytes == 21 * GIB
    assert a.reservation_id != b.reservation_id


def test_list_hosts_pages_and_tokens_are_bound_to_the_filter(fleet):
    with FleetClient(fleet.address) as client:
        first = client.list_hosts_page(page_size=2)
        assert len(first.hosts) == 2 and first.total_size == 5 and first.next_page_token
        second = client.list_hosts_page(page_size=2, page_token=first.next_page_token)
        third = client.list_hosts_page(page_size=2, page_token=second.next_page_token)
        names = [h.host for page in (first, second, third) for h in page.hosts]
        assert names == sorted(names) and len(set(names)) == 5 and not third.next_page_token
        assert [h.host for h in client.list_hosts(page_size=1)] == names  # the SDK follows the pages
        with pytest.raises(InvalidArgument, match="page_token"):
            client.list_hosts_page(HostFilter(gpu_types=("H100",)), page_size=2, page_token=first.next_page_token)
        with pytest.raises(InvalidArgument, match="page_token"):
            client.list_hosts_page(page_token="not-a-token!")
        with pytest.raises(InvalidArgument, match="page_size"):
            client.list_hosts_page(page_size=-1)


def test_watch_fleet_pages_the_snapshot_and_resumes_after_the_last_event(fleet):
    with FleetClient(fleet.address) as client:
        events = []
        for event in client.watch_fleet(page_size=2, timeout_seconds=10):
            events.append(event)
            if event.snapshot_complete:
                break
        assert len(events) == 5 and all(e.initial for e in events) and events[-1].snapshot_complete
        token = events[-1].resume_token
        # Something changes while nobody watches: one host is re-reported with less free memory.
        address = "10.1.0.1:50061"
        host = fleet.streams.hosts[address]
        fleet.streams.hosts[address] = host.model_copy(update={"gpus": (host.gpus[0].model_copy(update={"memory_free_bytes": 10 * GIB}),)})
        wait_until(lambda: client.get_host(address).gpus[0].memory_free_bytes == 10 * GIB, timeout_seconds=5)
        resumed = []
        for event in client.watch_fleet(resume_token=token, timeout_seconds=10):
            resumed.append(event)
            if event.snapshot_complete:
                break
        assert [(e.host.address, e.initial) for e in resumed] == [(address, False)]
        # A token from another planner instance cannot be honoured: a full snapshot, flagged reset.
        channel_events = []
        stub = fleet_pb2_grpc.FleetServiceStub(__import__("grpc").insecure_channel(fleet.address))
        bogus = "eyJpIjoib3RoZXIiLCJyIjoxfQ"  # {"i":"other","r":1}
        for message in stub.WatchFleet(pb.WatchFleetRequest(resume_token=bogus, page_size=10), timeout=10):
            channel_events.append(message)
            if message.snapshot_complete:
                break
        assert channel_events[0].reset and len(channel_events[0].hosts) == 5


def test_place_answer_stays_small_with_thousands_of_rejections():
    hosts = {f"10.2.{i // 250}.{i % 250}:50061": h100_host(f"busy-{i:04d}", busy=True, address=f"10.2.{i // 250}.{i % 250}:50061")
             for i in range(3000)}
    loop = BackgroundLoop()
    planner = FleetPlanner(loop, FleetSettings(agents=list(hosts), timings=FAST), open_stream=Streams(hosts).open, provider=_provider())
    try:
        stub = fleet_pb2_grpc.FleetServiceStub(__import__("grpc").insecure_channel(planner.address))
        ready = pb.FleetHostFilter(states=[pb.FLEET_HOST_STATE_READY])
        wait_until(lambda: stub.ListHosts(pb.ListHostsRequest(filter=ready, page_size=1)).total_size == 3000, timeout_seconds=60)
        from planner_service.fleet import converters as conv

        request = pb.PlaceRequest(deployment=conv.deployment_to_proto(_dep(params_b=70.0)))  # fits no busy H100
        answer = stub.Place(request, timeout=60)
        assert answer.ByteSize() <= 64 * 1024 and not answer.rejections  # the deprecated list stays empty
        assert [(c.reason, c.hosts) for c in answer.rejection_counts] == [(pb.FLEET_REJECT_REASON_DOES_NOT_FIT, 3000)]
        assert len(answer.closest_rejections) == 5 and answer.hosts_considered == 3000
        many = stub.Place(pb.PlaceRequest(deployment=conv.deployment_to_proto(_dep(params_b=1.0, replicas=64)), max_results=100), timeout=60)
        assert len(many.selected) == 64 and many.ByteSize() <= 64 * 1024
        assert sum(1 for p in many.selected if p.HasField("artifacts")) >= 1
    finally:
        planner.stop()
        loop.close()
    assert RejectReason.DOES_NOT_FIT.value == "does_not_fit"
