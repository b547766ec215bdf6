"""Polling for a condition that real servers, agents and streams reach asynchronously."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout_seconds: float = 5.0, interval_seconds: float = 0.05) -> T:
    """The first truthy value of ``predicate()``; AssertionError when none comes in time."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(interval_seconds)
