"""``StreamEncryptor`` and ``StreamDecryptor``: the asyncio front ends of ``_stream``.

The synchronous ``StreamEncryption``/``StreamDecryption`` run on one feeder thread per stream,
so CPU work never runs on the event loop. Public as ``pqselfenc.streaming`` (usage there).
Without a ``chunk_store`` both use the embedded default store (``core.stores.default``): a
stream's chunks cannot be kept in memory, since memory must stay bounded whatever the input.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, TypeVar

from pqselfenc.core import _engine as E
from pqselfenc.core._checks import Data, as_view
from pqselfenc.core._memory import CacheConfig, MemoryConfig
from pqselfenc.core._store import ChunkStore, EncryptedChunk, StoredChunks, as_store
from pqselfenc.core._stream import StreamDecryption, StreamEncryption
from pqselfenc.core.config import EncryptionConfig
from pqselfenc.core.datamap import DataMap
from pqselfenc.core.encryptor import Chunks, ConvergenceSecretSource, resolve_config
from pqselfenc.core.stores.default import default_chunk_store

__all__ = ["FinalizedMap", "StreamDecryptor", "StreamEncryptor"]

T = TypeVar("T")
_END = object()


def _feeder() -> ThreadPoolExecutor:
    """One thread per stream: runs its steps in order, off the event loop."""
    return ThreadPoolExecutor(1, thread_name_prefix="pqselfenc-feed")


class FinalizedMap(DataMap):
    """What ``StreamEncryptor.finalize`` returns: a ``DataMap`` in every way (pass it wherever
    one goes: ``to_bytes``, ``seal``, ``from_data_map``, ``==``), which also unpacks as the pair
    ``SelfEncryptor.encrypt`` returns::

        data_map, chunks = await encryptor.finalize()   # a plain DataMap, and the chunks
        data_map = await encryptor.finalize()           # the DataMap (this object)

    ``chunks`` is ``encrypted_chunks``: the ``StoredChunks`` of the default store when the stream
    named no store (read on demand, never held), or ``[]`` when its chunks went into the store
    it named, as ``SelfEncryptor.encrypt`` returns them. Unpacking is what iterating this
    object does; iterate ``.chunks`` for the map's entries.
    """

    _made: Sequence[EncryptedChunk] = ()

    @classmethod
    def of(cls, data_map: DataMap, made: Sequence[EncryptedChunk]) -> FinalizedMap:
        """``data_map`` as a ``FinalizedMap`` whose pair carries ``made``."""
        fields = {f.name: getattr(data_map, f.name) for f in dataclasses.fields(DataMap)}
        result = cls(**fields)
        object.__setattr__(result, "_made", made)
        return result

    @property
    def data_map(self) -> DataMap:
        """This map as a plain ``DataMap`` (the first of the pair)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(DataMap)}
        return DataMap(**fields)

    @property
    def encrypted_chunks(self) -> Sequence[EncryptedChunk]:
        """The second of the pair (see the class docstring)."""
        return self._made

    def __iter__(self) -> Iterator[Any]:
        return iter((self.data_map, self._made))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FinalizedMap):
            other = other.data_map
        return self.data_map == other

    __hash__ = DataMap.__hash__

    def __reduce__(self) -> tuple[type[DataMap], tuple[Any, ...]]:
        """Pickled (and copied) as the plain ``DataMap``: the chunks view is not data."""
        return DataMap, tuple(getattr(self, f.name) for f in dataclasses.fields(DataMap))


class StreamEncryptor:
    """Self-encrypts bytes written in pieces of any size, in memory bounded by
    ``config.memory`` (or ``memory``, which wins when both are given) whatever the input size.

    The chunks go into ``chunk_store`` as they are made. Without one they go into the embedded
    default store, the folder ``HOME/chunks`` (``$PQSELFENC_HOME``, else
    ``$XDG_DATA_HOME/pqselfenc``, else ``~/.local/share/pqselfenc``; the same one the
    ``pqselfenc`` command uses), which is created if missing and named in an INFO log line
    (logger ``pqselfenc``); ``StreamDecryptor.from_data_map(data_map)`` reads them back from
    there. ``finalize`` returns the DataMap, which also unpacks as ``(data_map, chunks)``.
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
        import asyncio  # in the async paths only: synchronous decryption never loads it

        if chunk_store is not None and not isinstance(chunk_store, ChunkStore):
            raise TypeError("chunk_store must be a ChunkStore")
        config = resolve_config(config, key_store)
        self._default = chunk_store is None
        store = default_chunk_store(create=True) if chunk_store is None else chunk_store
        self._store = store
        self._core = StreamEncryption(config, store.put_named, memory, executor)
        self._feeder = _feeder()
        self._lock = asyncio.Lock()
        self._map: FinalizedMap | None = None

    def __repr__(self) -> str:
        return f"StreamEncryptor(written={self._core.total}, config={self._core.config!r})"

    @property
    def written(self) -> int:
        """Bytes written so far."""
        return self._core.total

    @property
    def store(self) -> ChunkStore:
        """Where the chunks go: the store given, or the default store."""
        return self._store

    @property
    def chunks(self) -> Sequence[EncryptedChunk]:
        """The second of ``finalize``'s pair: the chunks made, read on demand from the default
        store when no store was named, else ``[]`` (empty until ``finalize``)."""
        return self._map.encrypted_chunks if self._map is not None else []

    async def write(self, data: Data) -> None:
        """Append ``data``; returns once it is buffered or handed to a worker."""
        view = as_view(data)
        async with self._lock:
            self._core.check_open()
            if len(view) < self._core.room:
                self._core.write(view)  # only a copy into the current chunk: no thread hop
            else:
                await self._step(self._core.write, view)

    async def finalize(self) -> FinalizedMap:
        """Finish the last chunks and return the DataMap, which unpacks as ``(data_map,
        chunks)`` too (see ``FinalizedMap``). Every chunk is stored before it returns."""
        async with self._lock:
            self._core.check_open()
            try:
                data_map = await self._step(self._core.finish)
            finally:
                self._feeder.shutdown(wait=False)
            self._map = FinalizedMap.of(data_map, self._made(data_map))
            return self._map

    def _made(self, data_map: DataMap) -> Sequence[EncryptedChunk]:
        if not self._default:
            return []
        store, config = self._store, self._core.config

        def names() -> Iterator[bytes]:
            for level in E.iter_levels(data_map, store, config):
                yield from (c.name for c in level.chunks)

        return StoredChunks(store, names)

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
        import asyncio

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

    Memory is bounded by ``config.memory``. With ``config.cache`` (or ``cache``) the store is
    wrapped in a ``CachingChunkStore`` bounded by ``memory.max_chunk_cache`` bytes, with
    ``clock`` for its TTL. Nothing unverified is ever returned: every byte has passed the
    chunk's name, tag, size and source-hash checks.
    """

    def __init__(self, core: StreamDecryption) -> None:
        self._core = core

    @classmethod
    def from_data_map(
        cls,
        data_map: DataMap,
        chunk_store: Chunks | None = None,
        config: EncryptionConfig | None = None,
        key_store: ConvergenceSecretSource | None = None,
        *,
        memory: MemoryConfig | None = None,
        cache: CacheConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        executor: Executor | None = None,
    ) -> StreamDecryptor:
        """A decryptor of ``data_map`` from ``chunk_store`` (a store or the chunk list).

        Without ``chunk_store`` the chunks are read from the embedded default store, where a
        ``StreamEncryptor`` without one put them (``ChunkStoreError`` if it does not exist).
        ``memory`` and ``cache``, when given, win over ``config.memory`` and ``config.cache``.
        """
        if not isinstance(data_map, DataMap):
            raise TypeError("data_map must be a DataMap")
        config = resolve_config(config, key_store)
        config = config.with_memory(memory) if memory is not None else config
        config = config.with_cache(cache) if cache is not None else config
        store = _reading_store(data_map, chunk_store)
        return cls(StreamDecryption(data_map, store, config, None, executor, clock))

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
        import asyncio

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


def _reading_store(data_map: DataMap, chunks: Chunks | None) -> ChunkStore:
    """The store to read from: the one given, else the default store (not needed, and not
    opened, for a map whose content is inline)."""
    if chunks is not None:
        return as_store(chunks)
    if not data_map.chunks:
        return as_store([])
    return default_chunk_store(create=False)
