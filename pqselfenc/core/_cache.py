"""``CachingChunkStore``: a wrapper store that keeps recently fetched chunks (LRU + TTL).

A wrapper, not a flag (restic's ``cache/`` backend): wrap any store, and every reader of the
wrapper shares the cache. Only verified bytes enter it (the inner store's check, or ours when
the inner store does not verify), and chunks are immutable under their content address, so a
cached chunk is as good as a fresh fetch until it expires. The clock is injected for tests.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from pqselfenc.core._checks import check_int
from pqselfenc.core._memory import DEFAULT_MAX_CHUNK_CACHE, MAX_BYTES, CacheConfig
from pqselfenc.core._store import ChunkInfo, ChunkStore, WrappingStore, verify_chunk
from pqselfenc.core.config import EncryptionConfig

__all__ = ["CachingChunkStore", "cached"]

Clock = Callable[[], float]


def cached(store: ChunkStore, config: EncryptionConfig, clock: Clock | None = None) -> ChunkStore:
    """``store`` behind a ``CachingChunkStore`` of ``config.cache`` and
    ``config.memory.max_chunk_cache`` bytes, or ``store`` itself when ``config.cache`` is None."""
    if config.cache is None:
        return store
    return CachingChunkStore(
        store,
        config.cache,
        max_bytes=config.memory.max_chunk_cache,
        clock=clock if clock is not None else time.monotonic,
    )


class CachingChunkStore(WrappingStore):
    """Serves ``retrieve`` from an LRU of at most ``cache.capacity`` chunks and ``max_bytes``
    bytes; an entry expires ``cache.ttl`` seconds (of ``clock``) after it was fetched.
    Everything else goes to the inner store (a delete also drops the cached copy); writes keep
    the inner store's ``put_named`` and ``batch``, batched durability included."""

    verifies_on_retrieve = True  # only verified bytes enter the cache

    def __init__(
        self,
        inner: ChunkStore,
        cache: CacheConfig | None = None,
        *,
        max_bytes: int = DEFAULT_MAX_CHUNK_CACHE,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(inner)
        self.cache = cache if cache is not None else CacheConfig()
        self.max_bytes = check_int("max_bytes", max_bytes, 0, MAX_BYTES)
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0
        self.hits = self.misses = 0

    def __repr__(self) -> str:
        return f"CachingChunkStore({self.inner!r}, chunks={len(self)}, bytes={self._bytes})"

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def cached_bytes(self) -> int:
        """Bytes of chunk content held in the cache now."""
        with self._lock:
            return self._bytes

    def retrieve(self, info: ChunkInfo) -> bytes:
        hit = self._lookup(info.name)
        if hit is not None:
            return hit
        content = self.inner.retrieve(info)
        if not self.inner.verifies_on_retrieve:
            verify_chunk(info, content)
        self._insert(info.name, content)
        return content

    def has(self, info: ChunkInfo) -> bool:
        return self._lookup(info.name, count=False) is not None or self.inner.has(info)

    def delete(self, info: ChunkInfo) -> None:
        with self._lock:
            self._drop(info.name)
        self.inner.delete(info)

    def clear(self) -> None:
        """Drop every cached chunk (the inner store is untouched)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def _lookup(self, name: bytes, *, count: bool = True) -> bytes | None:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None and self._expired(entry[0], now):
                self._drop(name)
                entry = None
            if count:
                if entry is None:
                    self.misses += 1
                else:
                    self.hits += 1
            if entry is None:
                return None
            self._entries.move_to_end(name)
            return entry[1]

    def _insert(self, name: bytes, content: bytes) -> None:
        if len(content) > self.max_bytes:
            return  # would evict everything and still not fit
        now = self._clock()
        with self._lock:
            self._drop(name)
            self._entries[name] = (now, content)
            self._bytes += len(content)
            while len(self._entries) > self.cache.capacity or self._bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def _expired(self, fetched: float, now: float) -> bool:
        ttl = self.cache.ttl
        return ttl is not None and now - fetched >= ttl

    def _drop(self, name: bytes) -> None:
        entry = self._entries.pop(name, None)
        if entry is not None:
            self._bytes -= len(entry[1])
