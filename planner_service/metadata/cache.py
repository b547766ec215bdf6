"""A small thread-safe LRU + TTL cache of resolved ModelSources, shared across requests.

The gRPC service resolves the same few models over and over; a Hub round trip (or re-reading a
few hundred shard headers) per request would dominate planning time. Entries expire after a TTL so
that a re-uploaded checkpoint or an edited local folder is picked up eventually. An OrderedDict is
enough here: a lock around O(1) operations, no extra dependency.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict

from planner_service.engine.source import ModelSource

LookupKind = Literal["local", "repo"]


class CacheKey(NamedTuple):
    """``model`` is the resolved real path for local folders and the lower-cased repo id otherwise."""

    model: str
    revision: str | None
    kind: LookupKind


class CacheStats(BaseModel):
    model_config = ConfigDict(frozen=True)

    hits: int
    misses: int
    evictions: int
    expirations: int
    size: int
    max_entries: int
    ttl_seconds: float


class MetadataCache:
    """LRU cache bounded by ``max_entries``; each entry lives ``ttl_seconds`` from when it was stored."""

    def __init__(
        self,
        *,
        max_entries: int = 256,
        ttl_seconds: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self._max_entries = max_entries
        self._ttl_seconds = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[CacheKey, tuple[float, ModelSource]] = OrderedDict()
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._expirations = 0

    def get(self, key: CacheKey) -> ModelSource | None:
        with self._lock:
            item = self._entries.get(key)
            if item is not None and item[0] <= self._clock():
                del self._entries[key]
                self._expirations += 1
                item = None
            if item is None:
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return item[1]

    def put(self, key: CacheKey, source: ModelSource) -> None:
        with self._lock:
            self._entries[key] = (self._clock() + self._ttl_seconds, source)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
                self._evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def hits(self) -> int:
        return self._hits

    @property
    def misses(self) -> int:
        return self._misses

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                evictions=self._evictions,
                expirations=self._expirations,
                size=len(self._entries),
                max_entries=self._max_entries,
                ttl_seconds=self._ttl_seconds,
            )
