"""The one narrow interface every inventory source implements, plus the trivial ones.

``InventoryBackend.collect(guard)`` returns a whole ``HostInventory``; backends call the driver only
through ``guard`` (or, for subprocesses, with their own timeout), so the collector can bound them.
Backends: NVML (``nvml_backend``), nvidia-smi (``smi_backend``), none (``NoneBackend``: no GPU or
no driver, zero GPUs and the reason) and ``StaticBackend`` (a fixed inventory, for ``FakeAgent``).
"""

from __future__ import annotations

import socket
from datetime import datetime, timezone
from typing import Protocol, runtime_checkable

from gpu_agent import __version__
from gpu_agent.inventory import CollectionSource, HostInfo, HostInventory
from gpu_agent.watchdog import CallGuard


class BackendUnavailable(Exception):
    """This backend cannot work on this host (no library, no driver, no binary)."""


@runtime_checkable
class InventoryBackend(Protocol):
    name: str

    def collect(self, guard: CallGuard) -> HostInventory: ...


def host_info(driver_version: str | None = None, cuda_driver_version: str | None = None,
              nvml_version: str | None = None, hostname: str | None = None) -> HostInfo:
    return HostInfo(
        hostname=hostname or socket.gethostname(),
        agent_version=__version__,
        driver_version=driver_version,
        cuda_driver_version=cuda_driver_version,
        nvml_version=nvml_version,
    )


class NoneBackend:
    """A host without GPUs or driver: zero GPUs and the reason; the agent keeps serving."""

    name = "none"

    def __init__(self, reason: str = "backend 'none' selected") -> None:
        self.reason = reason

    def collect(self, guard: CallGuard) -> HostInventory:
        return HostInventory(host=host_info(), source=CollectionSource.NONE, status_reason=self.reason)


class StaticBackend:
    """Serves a given inventory (fresh collect_time each time); the source is kept as given."""

    name = "static"

    def __init__(self, inventory: HostInventory) -> None:
        self.inventory = inventory

    def collect(self, guard: CallGuard) -> HostInventory:
        return self.inventory.model_copy(update={"collect_time": datetime.now(timezone.utc), "stale": False})
