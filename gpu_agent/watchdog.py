"""Timeouts around driver calls that may hang (NVML in uninterruptible sleep, a wedged nvidia-smi).

``CallGuard.call`` runs each call in a daemon thread and waits at most ``timeout_seconds``. A call
that does not return is abandoned (Python cannot kill a thread stuck in C); while it stays stuck,
further calls fail at once instead of piling up more stuck threads. Daemon threads never block exit.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class CallTimeout(Exception):
    """A guarded call did not return in time (or an earlier one is still stuck)."""


class CallGuard:
    def __init__(self, timeout_seconds: float) -> None:
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        self.timeout_seconds = timeout_seconds
        self._stuck: threading.Thread | None = None
        self._stuck_name = ""

    @property
    def hung(self) -> bool:
        return self._stuck is not None and self._stuck.is_alive()

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        name = getattr(fn, "__name__", repr(fn))
        if self.hung:
            raise CallTimeout(f"{self._stuck_name} is still hung; not calling {name}")
        result: dict[str, Any] = {}
        done = threading.Event()

        def run() -> None:
            try:
                result["value"] = fn(*args, **kwargs)
            except BaseException as exc:  # re-raised in the caller's thread
                result["error"] = exc
            finally:
                done.set()

        worker = threading.Thread(target=run, name=f"guarded {name}", daemon=True)
        worker.start()
        if not done.wait(self.timeout_seconds):
            self._stuck, self._stuck_name = worker, name
            raise CallTimeout(f"{name} did not return within {self.timeout_seconds:g}s")
        if "error" in result:
            raise result["error"]
        return result["value"]
