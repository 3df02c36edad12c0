"""CachingChunkStore: a real LRU with TTL on an injected clock, holding only verified bytes."""

from __future__ import annotations

import os

import pytest

from pqselfenc import ChunkInfo, EncryptionConfig, MemoryChunkStore, SelfEncryptor
from pqselfenc.error import ChunkNotFound, IntegrityError
from pqselfenc.memory import CacheConfig, CachingChunkStore, MemoryConfig
from pqselfenc.streaming import StreamDecryptor
from tests._stream_helpers import CountingStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def filled(n: int, size: int = 100) -> tuple[CountingStore, list[ChunkInfo]]:
    inner = CountingStore(MemoryChunkStore())
    return inner, [inner.store(os.urandom(size)) for _ in range(n)]


def test_lru_evicts_the_least_recently_used() -> None:
    inner, infos = filled(4)
    cache = CachingChunkStore(inner, CacheConfig(capacity=3, ttl=None))
    for i in (0, 1, 2, 0, 3):  # 1 is least recently used when 3 arrives
        cache.retrieve(infos[i])
    assert len(cache) == 3
    inner.fetched.clear()
    for i in (0, 2, 3):
        cache.retrieve(infos[i])
    assert inner.fetched == []
    cache.retrieve(infos[1])
    assert inner.fetched == [infos[1].name]
    assert (cache.hits, cache.misses) == (4, 5)


def test_byte_bound_evicts_and_oversized_chunks_are_not_kept() -> None:
    inner, infos = filled(3, size=400)
    cache = CachingChunkStore(inner, CacheConfig(capacity=100), max_bytes=1000)
    for info in infos:
        cache.retrieve(info)
    assert len(cache) == 2 and cache.cached_bytes == 800
    big = inner.store(os.urandom(2000))
    assert len(cache.retrieve(big)) == 2000
    assert len(cache) == 2 and cache.cached_bytes == 800


def test_entries_expire_after_ttl_on_the_injected_clock() -> None:
    inner, infos = filled(2)
    clock = Clock()
    cache = CachingChunkStore(inner, CacheConfig(capacity=10, ttl=60), clock=clock)
    cache.retrieve(infos[0])
    clock.now += 59.9
    cache.retrieve(infos[0])
    assert inner.fetched == [infos[0].name]
    clock.now += 0.1  # 60 s after the fetch: expired, even though it was just used
    cache.retrieve(infos[0])
    assert inner.fetched == [infos[0].name] * 2
    clock.now += 30
    assert cache.has(infos[0]) and len(cache) == 1
    clock.now += 30
    assert cache.has(infos[0])  # expired here, still in the inner store
    assert len(cache) == 0


def test_only_verified_bytes_are_cached() -> None:
    inner, infos = filled(1)
    liar = CountingStore(inner, verifies=False)
    liar.tamper[infos[0].name] = b"not the chunk"
    cache = CachingChunkStore(liar, CacheConfig())
    with pytest.raises(IntegrityError):
        cache.retrieve(infos[0])
    assert len(cache) == 0
    del liar.tamper[infos[0].name]
    assert cache.retrieve(infos[0]) == inner.retrieve(infos[0])


def test_writes_and_deletes_go_through() -> None:
    inner = MemoryChunkStore()
    cache = CachingChunkStore(inner, CacheConfig())
    info = cache.store(b"chunk bytes")
    assert cache.retrieve(info) == b"chunk bytes" and len(cache) == 1
    assert [i.name for i in cache] == [info.name]
    cache.delete(info)
    assert len(cache) == 0 and not inner.has(info)
    with pytest.raises(ChunkNotFound):
        cache.retrieve(info)
    cache.store(b"again")
    cache.clear()
    assert len(cache) == 0 and "CachingChunkStore" in repr(cache)
    with pytest.raises(TypeError):
        CachingChunkStore({})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        CachingChunkStore(inner, max_bytes=-1)


def test_a_stream_decryptor_reads_through_the_cache() -> None:
    cfg = EncryptionConfig(chunk_size=256)
    data = os.urandom(256 * 10)
    inner = CountingStore(MemoryChunkStore())
    data_map, _ = SelfEncryptor(data, cfg, chunk_store=inner).encrypt()
    clock = Clock()
    dec = StreamDecryptor.from_data_map(
        data_map, inner, cfg, cache=CacheConfig(capacity=4, ttl=10),
        memory=MemoryConfig(max_chunk_cache=1 << 20), clock=clock,
    )  # fmt: skip
    for _ in range(3):
        assert dec.read_range(300, 400) == data[300:700]
    assert len(inner.fetched) == 2  # chunks 1 and 2, once
    clock.now += 10
    assert dec.read_range(300, 400) == data[300:700]
    assert len(inner.fetched) == 4
    assert isinstance(dec.store, CachingChunkStore)
