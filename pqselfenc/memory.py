"""Memory limits and the chunk cache.

``MemoryConfig(max_total_memory, max_chunk_cache)`` bounds what a stream holds (writers wait
when the bound is reached) and what a chunk cache may keep, in bytes. ``CacheConfig(capacity,
ttl)`` configures ``CachingChunkStore``, a wrapper store with an LRU of fetched chunks whose
entries expire ``ttl`` seconds after they were fetched (the clock is passed in).

A thin public module: the code lives in ``pqselfenc.core`` (``_memory``, ``_cache``).
"""

from __future__ import annotations

from pqselfenc.core._cache import CachingChunkStore
from pqselfenc.core._memory import CacheConfig, MemoryConfig

__all__ = ["CacheConfig", "CachingChunkStore", "MemoryConfig"]
