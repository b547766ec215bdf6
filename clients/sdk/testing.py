"""Test helpers for SDK users: ``FakeAgent``, a real in-process GPU agent serving a given inventory.

    inventory = HostInventory(host=HostInfo(hostname="h1", agent_version="test"), gpus=(...,), source="static")
    with FakeAgent(inventory) as address:
        with AgentClient(address) as agent:
            assert agent.get_inventory().gpus == inventory.gpus

It is the real server (gRPC, health, reflection, WatchInventory) over a ``StaticBackend``;
``set_inventory`` swaps what it serves, and watchers see the change within one interval.
``FakeAgent.from_capture(DIR, variant)`` serves a recorded capture folder instead.
"""

from __future__ import annotations

from pathlib import Path

from gpu_agent.app import BackgroundAgent, GpuAgentSettings
from gpu_agent.backends import InventoryBackend, StaticBackend
from gpu_agent.factory import replay_backend
from gpu_agent.inventory import HostInventory


class FakeAgent:
    def __init__(
        self,
        inventory: HostInventory | None = None,
        *,
        backend: InventoryBackend | None = None,
        interval_seconds: float = 0.1,
        heartbeat_seconds: float = 0.5,
        token: str | None = None,
    ) -> None:
        if (inventory is None) == (backend is None):
            raise ValueError("give an inventory or a backend")
        self._static = StaticBackend(inventory) if inventory is not None else None
        self._settings = GpuAgentSettings(
            listen="127.0.0.1:0", interval_seconds=interval_seconds, heartbeat_seconds=heartbeat_seconds,
            auth_token=token, collect_timeout_seconds=10.0,
        )
        self._agent = BackgroundAgent(self._settings, backend or self._static)

    @classmethod
    def from_capture(cls, directory: str | Path, variant: str = "idle", *, hostname: str | None = None, **kwargs) -> "FakeAgent":  # noqa: ANN003
        return cls(backend=replay_backend(Path(directory), variant, hostname=hostname), **kwargs)

    @property
    def address(self) -> str:
        return self._agent.address

    def set_inventory(self, inventory: HostInventory) -> None:
        if self._static is None:
            raise RuntimeError("set_inventory needs a FakeAgent built from an inventory")
        self._static.inventory = inventory

    def start(self) -> str:
        self._agent.start()
        return self.address

    def stop(self) -> None:
        self._agent.stop()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
