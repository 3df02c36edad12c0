"""``StreamEncryptor`` and ``StreamDecryptor``: the asyncio front ends of ``_stream``.

The synchronous ``StreamEncryption``/``StreamDecryption`` run on one feeder thread per stream,
so CPU work never runs on the event loop. Public as ``pqselfenc.streaming`` (usage there).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TypeVar

from pqselfenc.core._cache import CachingChunkStore
from pqselfenc.core._checks import Data, as_view
from pqselfenc.core._memory import CacheConfig, MemoryConfig
from pqselfenc.core._store import ChunkStore, EncryptedChunk, as_store
from pqselfenc.core._stream import StreamDecryption, StreamEncryption
from pqselfenc.core.config import EncryptionConfig
from pqselfenc.core.datamap import DataMap
from pqselfenc.core.encryptor import ConvergenceSecretSource, resolve_config

__all__ = ["StreamDecryptor", "StreamEncryptor"]

T = TypeVar("T")
_END = object()


def _feeder() -> ThreadPoolExecutor:
    """One thread per stream: runs its steps in order, off the event loop."""
    return ThreadPoolExecutor(1, thread_name_prefix="pqselfenc-feed")


class StreamEncryptor:
    """Self-encrypts bytes written in pieces of any size.

    With ``chunk_store`` the chunks go into the store as they are made and memory stays within
    ``memory`` (a ``MemoryConfig``). Without one they are kept and, after ``finalize``, listed
    by ``chunks`` (sorted by name, as ``SelfEncryptor.encrypt`` returns them); that list grows
    with the input, so use a store for anything large.
    """

    def __init__(
        self,
        config: EncryptionConfig | None = None,
        chunk_store: ChunkStore | None = None,
        key_store: ConvergenceSecretSource | None = None,
        *,
        memory: MemoryConfig | None = None,
        executor: Executor | None = None,
    ) -> None:
        if chunk_store is not None and not isinstance(chunk_store, ChunkStore):
            raise TypeError("chunk_store must be a ChunkStore")
        self._kept: list[EncryptedChunk] = []
        sink = chunk_store.put_named if chunk_store is not None else self._kept.append
        self._core = StreamEncryption(resolve_config(config, key_store), sink, memory, executor)
        self._feeder = _feeder()
        self._lock = asyncio.Lock()
        self._map: DataMap | None = None

    def __repr__(self) -> str:
        return f"StreamEncryptor(written={self._core.total}, config={self._core.config!r})"

    @property
    def written(self) -> int:
        """Bytes written so far."""
        return self._core.total

    @property
    def chunks(self) -> list[EncryptedChunk]:
        """The chunks made when no store was given (empty until ``finalize``)."""
        return list(self._kept) if self._map is not None else []

    async def write(self, data: Data) -> None:
        """Append ``data``; returns once it is buffered or handed to a worker."""
        view = as_view(data)
        async with self._lock:
            self._core.check_open()
            if len(view) < self._core.room:
                self._core.write(view)  # only a copy into the current chunk: no thread hop
            else:
                await self._step(self._core.write, view)

    async def finalize(self) -> DataMap:
        """Finish the last chunks and return the DataMap."""
        async with self._lock:
            self._core.check_open()
            try:
                self._map = await self._step(self._core.finish)
            finally:
                self._feeder.shutdown(wait=False)
            self._kept.sort(key=lambda c: c.name)
            return self._map

    async def abort(self) -> None:
        """Cancel everything in flight; the encryptor cannot be used afterwards."""
        async with self._lock:
            if self._core.state == "open":
                await self._step(self._core.abort)
            self._feeder.shutdown(wait=False)

    async def __aenter__(self) -> StreamEncryptor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._map is None:
            await self.abort()

    async def _step(self, func: Callable[..., T], *args: object) -> T:
        future = self._feeder.submit(func, *args)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # The step runs on; abort after it so a half-done write can never be finalized.
            with contextlib.suppress(RuntimeError):
                self._feeder.submit(self._core.abort)
            raise


class StreamDecryptor:
    """Verified plaintext of a DataMap: ``async for`` pieces, ``read_range`` (bytes) or
    ``iter_range`` (pieces, for ranges too large to hold).

    ``cache`` (a ``CacheConfig``) wraps the store in a ``CachingChunkStore`` bounded by
    ``memory.max_chunk_cache`` bytes, with ``clock`` for its TTL. Nothing unverified is ever
    returned: every byte has passed the chunk's name, tag, size and source-hash checks.
    """

    def __init__(self, core: StreamDecryption) -> None:
        self._core = core

    @classmethod
    def from_data_map(
        cls,
        data_map: DataMap,
        chunk_store: ChunkStore | list[EncryptedChunk],
        config: EncryptionConfig | None = None,
        key_store: ConvergenceSecretSource | None = None,
        *,
        memory: MemoryConfig | None = None,
        cache: CacheConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        executor: Executor | None = None,
    ) -> StreamDecryptor:
        """A decryptor of ``data_map`` from ``chunk_store`` (a store or the chunk list)."""
        if not isinstance(data_map, DataMap):
            raise TypeError("data_map must be a DataMap")
        memory = memory if memory is not None else MemoryConfig()
        store = as_store(chunk_store)
        if cache is not None:
            store = CachingChunkStore(store, cache, max_bytes=memory.max_chunk_cache, clock=clock)
        config = resolve_config(config, key_store)
        return cls(StreamDecryption(data_map, store, config, memory, executor))

    def __repr__(self) -> str:
        return f"StreamDecryptor(size={self.size}, store={self.store!r})"

    @property
    def size(self) -> int:
        """Plaintext size in bytes."""
        return self._core.size

    @property
    def store(self) -> ChunkStore:
        """The store chunks are fetched from (the caching wrapper when ``cache`` was given)."""
        return self._core.store

    def read_range(self, offset: int, length: int) -> bytes:
        """Verified bytes ``[offset, offset + length)``, clipped to the end; fetches only the
        chunks holding them (after the map levels, on first use)."""
        return self._core.read_range(offset, length)

    def iter_range(self, offset: int, length: int) -> Iterator[bytes]:
        """Verified bytes ``[offset, offset + length)`` (clipped to the end) as pieces of at
        most one chunk, synchronously: a range of any size in the memory of ``__iter__``."""
        return self._core.iter_range(offset, length)

    def __iter__(self) -> Iterator[bytes]:
        """The plaintext pieces, synchronously (for callers without an event loop)."""
        return self._core.pieces()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._pieces()

    async def _pieces(self) -> AsyncIterator[bytes]:
        feeder, pieces = _feeder(), self._core.pieces()
        try:
            while True:
                piece = await asyncio.wrap_future(feeder.submit(next, pieces, _END))
                if piece is _END:
                    return
                assert isinstance(piece, bytes)
                yield piece
        finally:
            closing = feeder.submit(pieces.close)  # after any step still running
            feeder.shutdown(wait=False)
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(closing)
