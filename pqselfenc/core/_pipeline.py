"""The chunk pipeline every entry point shares: in-memory, streaming, parallel, file.

Encryption takes chunk plaintexts in index order. Chunk ``i >= 2`` is hashed and encrypted in one
task (its key needs only ``h_{i-1}`` and ``h_{i-2}``, published by earlier tasks); chunks 0 and 1
need the last two hashes (the ring), so they are hashed early, kept, and encrypted in
``finish``. Decryption is one independent task per chunk: every hash is in the map.

Work runs on a thread pool. Measured here: SHA3-256 and SHA-256 release the GIL, AES-GCM in
``cryptography`` holds it, so a fused hash+encrypt task on each of two threads overlaps one
thread's AES with the other's hashing; see benchmarks/ for the figures. At most ``window`` tasks
are in flight, which bounds memory; results come back in index order whatever the worker count,
so output never depends on it.
"""

from __future__ import annotations

import contextlib
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, InvalidStateError
from functools import partial
from typing import TypeVar

from pqselfenc.core import _primitives as P
from pqselfenc.core._cipher import ChunkKeys, chunk_label, decrypt_chunk, encrypt_chunk
from pqselfenc.core._store import ChunkInfo, ChunkStore, EncryptedChunk
from pqselfenc.error import EncryptionError, Error, IntegrityError

T = TypeVar("T")
_MAX_CONTEXT = 16  # exceptions followed back through __context__ (cleanup nests a few)

Sink = Callable[[EncryptedChunk], None]


def interrupting() -> bool:
    """Whether the exception being handled is, or was raised while handling, an interrupt
    (``KeyboardInterrupt``, which the CLI also raises for SIGTERM, or ``SystemExit``).

    Cleanup then does not wait for tasks still running: a worker blocked in I/O (a FIFO, a
    stalled server) must not keep Ctrl-C from ending the command. A task left running only
    reads, or writes a whole chunk under its content name: nothing it does is half-visible.
    """
    exc = sys.exc_info()[1]
    for _ in range(_MAX_CONTEXT):
        if exc is None:
            return False
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            return True
        exc = exc.__context__
    return False


def _translate(exc: BaseException) -> BaseException:
    if isinstance(exc, Error | KeyboardInterrupt | SystemExit):
        return exc
    return EncryptionError(f"worker failed: {type(exc).__name__}")


class Ordered:
    """Run callables on ``executor`` (or inline), at most ``window`` in flight, in order."""

    def __init__(
        self, executor: Executor | None, window: int, on_cancel: Callable[[], None] | None = None
    ) -> None:
        self.executor = executor
        self.window = max(1, window)
        self.on_cancel = on_cancel
        self.pending: deque[Future[object]] = deque()

    def submit(self, task: Callable[[], T]) -> list[T]:
        """Queue ``task``; returns the results that had to be collected to make room."""
        fut: Future[object] = Future()
        if self.executor is None:
            _run_into(fut, task)
        else:
            fut = self.executor.submit(task)
        self.pending.append(fut)
        out: list[T] = []
        while len(self.pending) > self.window:
            out.append(self._pop())  # type: ignore[arg-type]
        return out

    def drain(self) -> list[T]:
        out: list[T] = []
        while self.pending:
            out.append(self._pop())  # type: ignore[arg-type]
        return out

    def cancel(self) -> None:
        """Cancel what has not started; wait for what runs, unless an interrupt is being
        handled (``interrupting``): then return at once and let those tasks end alone."""
        for fut in self.pending:
            fut.cancel()
        if self.on_cancel is not None:
            self.on_cancel()  # release tasks that wait on work that will now never run
        if not interrupting():
            for fut in self.pending:
                if not fut.cancelled():
                    fut.exception()  # wait, so nothing runs on after the caller returns
        self.pending.clear()

    def _pop(self) -> object:
        fut = self.pending.popleft()
        try:
            return fut.result()
        except BaseException as exc:
            self.cancel()
            translated = _translate(exc)
            if translated is exc:
                raise  # ours already: re-raise as is (never make an error its own cause)
            raise translated from exc


def _run_into(fut: Future[object], task: Callable[[], object]) -> None:
    try:
        fut.set_result(task())
    except BaseException as exc:
        fut.set_exception(exc)


def ordered_map(
    executor: Executor | None, window: int, tasks: Iterable[Callable[[], T]]
) -> Iterator[T]:
    """Results of ``tasks`` in order, with bounded work in flight."""
    runner = Ordered(executor, window)
    try:
        for task in tasks:
            yield from runner.submit(task)
        yield from runner.drain()
    finally:
        runner.cancel()


class ChunkEncryption:
    """Encrypts chunk plaintexts handed in index order; ``finish`` returns the map entries."""

    def __init__(self, keys: ChunkKeys, sink: Sink, executor: Executor | None, window: int):
        self.keys, self.sink = keys, sink
        self.runner = Ordered(executor, window, on_cancel=self._poison)
        self.hashes: list[Future[bytes]] = []
        self.entries: list[ChunkInfo] = []
        self.head: list[bytes | memoryview] = []  # plaintexts of chunks 0 and 1 (the ring)

    def add(self, plain: bytes | memoryview) -> None:
        index = len(self.hashes)
        published: Future[bytes] = Future()
        self.hashes.append(published)
        task: Callable[[], ChunkInfo | None]
        if index < 2:
            self.head.append(plain)
            task = partial(self._hash_only, plain, published)
        else:
            prev, prev2 = self.hashes[index - 1], self.hashes[index - 2]
            task = partial(self._encrypt, index, plain, published, prev, prev2)
        self._collect(self.runner.submit(task))

    def finish(self) -> list[ChunkInfo]:
        """Encrypt chunks 0 and 1 (now that the ring is closed) and wait for everything."""
        n = len(self.hashes)
        for index, plain in enumerate(self.head):
            published = self.hashes[index]
            prev, prev2 = self.hashes[(index - 1) % n], self.hashes[(index - 2) % n]
            task = partial(self._encrypt, index, plain, published, prev, prev2, own_hash_known=True)
            self._collect(self.runner.submit(task))
        self.head = []
        self._collect(self.runner.drain())
        self.entries.sort(key=lambda e: e.index or 0)
        return self.entries

    def abort(self) -> None:
        self.runner.cancel()

    def _poison(self) -> None:
        for published in self.hashes:
            with contextlib.suppress(InvalidStateError):  # already published
                published.set_exception(EncryptionError("encryption was cancelled"))

    def _collect(self, results: list[ChunkInfo | None]) -> None:
        self.entries.extend(r for r in results if r is not None)

    @staticmethod
    def _hash_only(plain: bytes | memoryview, published: Future[bytes]) -> None:
        _publish(plain, published)
        return None

    def _encrypt(
        self,
        index: int,
        plain: bytes | memoryview,
        published: Future[bytes],
        prev: Future[bytes],
        prev2: Future[bytes],
        *,
        own_hash_known: bool = False,
    ) -> ChunkInfo:
        h = published.result() if own_hash_known else _publish(plain, published)
        chunk = encrypt_chunk(plain, (h, prev.result(), prev2.result()), self.keys)
        self.sink(chunk)
        return ChunkInfo(name=chunk.name, src_hash=h, src_size=len(plain), index=index)


def _publish(plain: bytes | memoryview, published: Future[bytes]) -> bytes:
    """Hash ``plain`` and publish it to the tasks that wait for it (errors too, so none hang)."""
    try:
        h = P.src_hash(plain)
    except BaseException as exc:
        published.set_exception(exc)
        raise
    published.set_result(h)
    return h


def ring(entries: Sequence[ChunkInfo], index: int) -> tuple[bytes, bytes, bytes]:
    """``(h_i, h_{i-1}, h_{i-2})`` on the ring of a map's entries."""
    n = len(entries)
    hashes = [entries[index].src_hash, entries[(index - 1) % n].src_hash,
              entries[(index - 2) % n].src_hash]  # fmt: skip
    assert all(h is not None for h in hashes)
    return hashes[0], hashes[1], hashes[2]  # type: ignore[return-value]


def decrypt_task(
    entries: Sequence[ChunkInfo],
    index: int,
    store: ChunkStore,
    keys: ChunkKeys,
    part: tuple[int, int] | None = None,
) -> Callable[[], bytes]:
    """A task that fetches, verifies and decrypts chunk ``index`` (only ``part`` of its
    plaintext is kept, when given)."""
    info = entries[index]

    def run() -> bytes:
        assert info.src_size is not None
        return decrypt_chunk(
            _retrieve(store, info, index),
            info.name,
            ring(entries, index),
            info.src_size,
            keys,
            index=index,
            name_checked=store.verifies_on_retrieve,
            part=part,
        )

    return run


def _retrieve(store: ChunkStore, info: ChunkInfo, index: int) -> bytes:
    """``store.retrieve``; a store's own integrity failure (it checks names on retrieve) is
    re-raised naming the chunk's index too, as every decryption error does."""
    try:
        return store.retrieve(info)
    except IntegrityError as exc:
        label = chunk_label(index, info.name)
        raise IntegrityError(f"{label} failed the store's check: {exc}") from exc
