"""Streaming front ends of the engine: bytes in pieces of any size, bounded memory.

``StreamEncryption`` cuts what it is fed into ``chunk_size`` pieces and hands them to the same
``ChunkEncryption`` and ``shrink`` that ``SelfEncryptor`` uses, so the chunks and the DataMap are
byte-identical whatever the write sizes. The layout is only known once ``min_chunks *
chunk_size`` bytes were seen (below that the policy cuts ``min_chunks`` near-equal pieces), so
up to that much is buffered first; a smaller input goes through ``encrypt_bytes`` at
``finish``. Writes block when the task window (sized by ``MemoryConfig``) is full.

``StreamDecryption`` yields verified plaintext chunk by chunk, or any byte range, fetching only
the chunks that range needs. Both are synchronous; ``pqselfenc.streaming`` runs them off the
event loop and ``files`` drives them from files.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor

from pqselfenc.core import _engine as E
from pqselfenc.core import _primitives as P
from pqselfenc.core._cache import Clock, cached
from pqselfenc.core._checks import Data, as_view
from pqselfenc.core._cipher import ChunkKeys
from pqselfenc.core._memory import MemoryConfig
from pqselfenc.core._pipeline import ChunkEncryption, Sink, interrupting
from pqselfenc.core._store import ChunkStore
from pqselfenc.core.config import EncryptionConfig
from pqselfenc.core.datamap import DataMap
from pqselfenc.error import EncryptionError

Reader = Callable[[memoryview], int]
_FIRST_FILL = 64 << 10  # the first piece's buffer starts here and doubles up to chunk_size


class _Pool:
    """The executor of one stream: the caller's, or a thread pool it owns (made on first use,
    so an input small enough to run inline starts no thread) and shuts down."""

    def __init__(self, config: EncryptionConfig, given: Executor | None) -> None:
        self.given, self.threads = given, config.parallel.max_threads
        self.owned: ThreadPoolExecutor | None = None

    @property
    def executor(self) -> Executor | None:
        if self.given is None and self.owned is None and self.threads > 1:
            self.owned = ThreadPoolExecutor(self.threads, thread_name_prefix="pqselfenc-stream")
        return self.given if self.given is not None else self.owned

    def close(self) -> None:
        if self.owned is not None:  # on an interrupt, workers blocked in I/O are left behind
            self.owned.shutdown(wait=not interrupting(), cancel_futures=True)
            self.owned = None


class StreamEncryption:
    """Feed with ``write``/``write_from`` in order, then ``finish`` for the DataMap."""

    def __init__(
        self,
        config: EncryptionConfig,
        sink: Sink,
        memory: MemoryConfig | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.config, self.sink = config, sink
        self.memory = memory if memory is not None else config.memory
        self.window = self.memory.encrypt_window(config, E.window_of(config))
        self._pool = _Pool(config, executor)
        self._job_made: ChunkEncryption | None = None
        self._size = config.chunk_size
        self._limit = P.MAX_PARSE_ENTRIES * self._size  # the most bytes a DataMap can hold
        self._pending: list[bytearray] = []  # full pieces held until the layout is known
        # the first piece grows as the input does (a 5 KB input with 1 GiB chunks takes 5 KB)
        self._fill, self._pos = bytearray(min(self._size, _FIRST_FILL)), 0
        self.total = 0
        self._fixed = False  # the layout is known to be fixed-size pieces
        self.state = "open"

    def write(self, data: Data) -> None:
        """Append ``data``; blocks while the task window is full."""
        view = as_view(data)
        self.check_open()
        with self._failing():
            while view:
                n = min(len(view), len(self._fill) - self._pos)
                self._fill[self._pos : self._pos + n] = view[:n]
                self._advance(n)
                view = view[n:]

    def write_from(self, readinto: Reader) -> int:
        """Read once via ``readinto`` straight into the chunk being filled; returns the count
        (0 at the end of the input)."""
        self.check_open()
        with self._failing():
            n = readinto(memoryview(self._fill)[self._pos :])
            if not isinstance(n, int) or not 0 <= n <= len(self._fill) - self._pos:
                raise EncryptionError("the reader returned no valid byte count")
            self._advance(n)
            return n

    def finish(self) -> DataMap:
        """Encrypt what is left, wait for every task and return the (shrunk) DataMap."""
        self.check_open()
        try:
            with self._failing():
                data_map = self._finish()
        finally:
            self._pool.close()
        self.state = "finished"
        return data_map

    def abort(self) -> None:
        """Cancel the tasks in flight and drop the buffers; the stream cannot be used again."""
        if self.state == "open":
            self.state = "failed"
        if self._job_made is not None:
            self._job_made.abort()
        self._pool.close()
        self._pending, self._fill = [], bytearray()

    @property
    def room(self) -> int:
        """Bytes that fit in the chunk being filled before it is handed on."""
        return self._size - self._pos

    @property
    def held(self) -> int:
        """Plaintext bytes held by buffers (not counting tasks in flight)."""
        return self._pos + sum(len(p) for p in self._pending)

    @property
    def _job(self) -> ChunkEncryption:
        """The chunk pipeline, made when the first fixed-size piece is handed on."""
        if self._job_made is None:
            keys = E.keys_for_config(self.config)
            self._job_made = ChunkEncryption(keys, self.sink, self._pool.executor, self.window)
        return self._job_made

    def _finish(self) -> DataMap:
        if not self._fixed:  # a small input: encrypt_bytes runs it inline if it is tiny
            data = self._small_input()
            executor = None if len(data) <= E.INLINE_MAX else self._pool.executor
            return E.encrypt_bytes(memoryview(data), self.config, self.sink, executor)
        if self._pos:
            self._job.add(memoryview(self._fill)[: self._pos])
        entries = self._job.finish()
        data_map = E.make_map(self.config, self.total, entries)
        return E.shrink(data_map, self.config, self.sink, self._pool.executor)

    def _small_input(self) -> bytearray:
        """The whole input (< ``min_chunks * chunk_size`` bytes), freeing pieces as it goes."""
        pieces, self._pending = self._pending, []
        data = pieces.pop(0) if pieces else bytearray()
        while pieces:
            data += pieces.pop(0)
        data += memoryview(self._fill)[: self._pos]
        self._fill, self._pos = bytearray(), 0
        return data

    def _advance(self, n: int) -> None:
        self._pos += n
        self.total += n
        if self.total > self._limit:  # one byte more needs a chunk no DataMap can name
            E.check_count(P.MAX_PARSE_ENTRIES + 1, self._size)
        if self._pos == len(self._fill) < self._size:
            self._fill.extend(bytes(min(len(self._fill), self._size - len(self._fill))))
        if self._pos < self._size:
            return
        piece, self._fill, self._pos = self._fill, bytearray(self._size), 0
        if self._fixed:
            self._job.add(memoryview(piece))
            return
        self._pending.append(piece)
        if self.total >= self.config.min_chunks * self._size:
            self._fixed = True
            while self._pending:
                self._job.add(memoryview(self._pending.pop(0)))

    def check_open(self) -> None:
        """``EncryptionError`` unless the stream still takes writes."""
        if self.state != "open":
            raise EncryptionError(f"this stream is {self.state}; start a new one")

    @contextlib.contextmanager
    def _failing(self) -> Iterator[None]:
        """Any failure aborts the stream, so nothing runs on and no map is ever returned."""
        try:
            yield
        except BaseException:
            self.abort()
            raise


class StreamDecryption:
    """Verified plaintext of a DataMap, whole or by range; the leaf map is expanded once.

    ``memory`` defaults to ``config.memory``; with ``config.cache`` chunks are fetched through
    a ``CachingChunkStore`` (``clock`` times its entries)."""

    def __init__(
        self,
        data_map: DataMap,
        store: ChunkStore,
        config: EncryptionConfig,
        memory: MemoryConfig | None = None,
        executor: Executor | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.data_map, self.config = data_map, config
        self.store = cached(store, config, clock)
        self.memory = memory if memory is not None else config.memory
        self.executor = executor
        self._leaf: tuple[DataMap, ChunkKeys] | None = None

    @property
    def size(self) -> int:
        return self.data_map.total_size

    def leaf(self) -> tuple[DataMap, ChunkKeys]:
        """The level-0 map and its keys (map levels are fetched and checked on first use)."""
        if self._leaf is None:
            E.keys_for_map(self.data_map, self.config)  # wrong secret: fail before any fetch
            leaf = E.expand(self.data_map, self.store, self.config, self.executor)
            self._leaf = leaf, E.keys_for_map(leaf, self.config)
        return self._leaf

    def window(self, leaf: DataMap) -> int:
        """Tasks in flight for ``leaf``'s chunks within the memory bound; a map whose chunks
        cannot fit it (its sizes come from outside) is an ``EncryptionError``, not misuse."""
        piece = leaf.chunks[0].src_size if leaf.chunks else 0
        try:
            return self.memory.decrypt_window(piece or 1, E.window_of(self.config))
        except ValueError as exc:
            raise EncryptionError(
                f"cannot stream this DataMap within the memory bound: {exc}"
            ) from exc

    def pieces(self) -> Generator[bytes, None, None]:
        """Every chunk's verified plaintext, in order; checks the total at the end."""
        leaf, keys = self.leaf()
        produced = 0
        with E.executor_for(self.config, self.executor) as executor:
            for piece in E.iter_plain(leaf, self.store, keys, executor, self.window(leaf)):
                produced += len(piece)
                yield piece
        E.check_total(leaf, produced)

    def read_range(self, offset: int, length: int) -> bytes:
        """Verified bytes ``[offset, offset + length)``, clipped to the content's end."""
        leaf, keys = self.leaf()
        return E.read_range(leaf, self.store, keys, offset, length, self.executor)

    def iter_range(self, offset: int, length: int) -> Generator[bytes, None, None]:
        """Verified bytes ``[offset, offset + length)`` (clipped to the end) as pieces of at
        most one chunk, within the same memory bound as ``pieces``."""
        leaf, keys = self.leaf()
        with E.executor_for(self.config, self.executor) as executor:
            window = self.window(leaf)
            yield from E.iter_range(leaf, self.store, keys, offset, length, executor, window)
