"""``MemoryChunkStore``: chunks in a dict, for tests and small jobs.

It can be shared by the threads of one process and collected by ``pqselfenc.core.gc`` like
any store: its locks, session records and chunk stamps live in memory, on ``clock`` (default
``time.time``; tests pass their own).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from pqselfenc.core._locks import LockPolicy, StoreLocks
from pqselfenc.core._lockspace import EndedSession, LockEntry, LockSpace, StoredChunk, parse_ended
from pqselfenc.core._store import (
    ChunkInfo,
    ChunkStore,
    EncryptedChunk,
    short_name,
    verify_chunk,
)
from pqselfenc.error import ChunkNotFound, ChunkStoreError

__all__ = ["MemoryChunkStore"]


class MemoryChunkStore(ChunkStore):
    """Thread-safe in-memory store; verifies every chunk it hands out. ``clock`` stamps
    chunks and locks; ``locks`` sets the lock timing (``LockPolicy``)."""

    verifies_on_retrieve = True

    def __init__(
        self, *, clock: Callable[[], float] = time.time, locks: LockPolicy | None = None
    ) -> None:
        self._chunks: dict[bytes, bytes] = {}
        self._stamps: dict[bytes, float] = {}
        self._lock = threading.Lock()
        self.clock = clock
        self._locks = StoreLocks(_MemoryLockSpace(self), locks)

    def __repr__(self) -> str:
        return f"MemoryChunkStore(chunks={len(self)})"

    def __len__(self) -> int:
        with self._lock:
            return len(self._chunks)

    def store(self, chunk: bytes) -> ChunkInfo:
        info = ChunkInfo.for_chunk(chunk)
        self._keep(info.name, bytes(chunk))
        return info

    def put_named(self, chunk: EncryptedChunk) -> None:
        """Keep a chunk the engine named without hashing it again: every read verifies it."""
        self._keep(chunk.name, chunk.content)

    def _keep(self, name: bytes, content: bytes) -> None:
        """Store, or reuse what is there if it is exactly these bytes (anything else is
        replaced), stamping it now unless it was stamped within the current session."""
        since = self._locks.session_start
        with self._lock:
            same = self._chunks.get(name) == content
            if not same:
                self._chunks[name] = content
            if not same or since is None or self._stamps[name] < since:
                self._stamps[name] = self.clock()

    def retrieve(self, info: ChunkInfo) -> bytes:
        with self._lock:
            content = self._chunks.get(info.name)
        if content is None:
            raise ChunkNotFound(f"chunk {short_name(info.name)} is not in the store")
        return verify_chunk(info, content)

    def has(self, info: ChunkInfo) -> bool:
        with self._lock:
            return info.name in self._chunks

    def delete(self, info: ChunkInfo) -> None:
        with self._lock:
            self._chunks.pop(info.name, None)
            self._stamps.pop(info.name, None)

    def __iter__(self) -> Iterator[ChunkInfo]:
        with self._lock:
            names = list(self._chunks)
        return (ChunkInfo(name=n) for n in names)

    def total_bytes(self) -> int:
        """Bytes held (after deduplication)."""
        with self._lock:
            return sum(len(c) for c in self._chunks.values())

    def locks(self) -> StoreLocks:
        """The store's locks (in memory)."""
        return self._locks

    def stored_chunks(self) -> Iterator[StoredChunk]:
        """Every chunk with its size and stamp."""
        with self._lock:
            found = [
                StoredChunk(ChunkInfo(name=n), len(c), self._stamps[n])
                for n, c in self._chunks.items()
            ]
        return iter(found)

    def delete_if_older(self, info: ChunkInfo, cutoff: float) -> int | None:
        """Delete the chunk if its stamp is at or before ``cutoff``; bytes freed, or None."""
        with self._lock:
            stamp = self._stamps.get(info.name)
            if stamp is None or stamp > cutoff:
                return None
            self._stamps.pop(info.name)
            return len(self._chunks.pop(info.name))

    def stamp_of(self, info: ChunkInfo) -> float | None:
        """The chunk's stamp (when it was written or last reused), None if it is absent."""
        with self._lock:
            return self._stamps.get(info.name)


class _MemoryLockSpace(LockSpace):
    """Locks and session records of one ``MemoryChunkStore``, in dicts."""

    def __init__(self, store: MemoryChunkStore) -> None:
        self.store = store
        self._mutex = threading.Lock()
        self._locks: dict[str, tuple[bytes, float]] = {}
        self._ended: dict[str, float] = {}

    def create(self, name: str, body: Callable[[float | None], bytes]) -> float:
        start = self.store.clock()
        with self._mutex:
            if name in self._locks:
                raise ChunkStoreError(f"lock {name} exists")
            self._locks[name] = (body(start), start)
        return start

    def entries(self) -> list[LockEntry]:
        with self._mutex:
            return [LockEntry(n, stamp) for n, (_, stamp) in self._locks.items()]

    def read(self, name: str) -> bytes | None:
        with self._mutex:
            found = self._locks.get(name)
        return None if found is None else found[0]

    def refresh(self, name: str) -> bool:
        now = self.store.clock()
        with self._mutex:
            if name not in self._locks:
                return False
            self._locks[name] = (self._locks[name][0], now)
        return True

    def remove(self, name: str) -> None:
        with self._mutex:
            self._locks.pop(name, None)

    def end(self, name: str, record: str) -> None:
        now = self.store.clock()
        with self._mutex:
            self._ended[record] = now
            self._locks.pop(name, None)

    def ended(self) -> list[EndedSession]:
        with self._mutex:
            found = [parse_ended(n, end) for n, end in self._ended.items()]
        return [s for s in found if s is not None]

    def forget(self, record: str) -> None:
        with self._mutex:
            self._ended.pop(record, None)

    def now(self) -> float:
        return self.store.clock()

    def chunks(self) -> Iterator[StoredChunk]:
        return self.store.stored_chunks()

    def delete_if_older(self, info: ChunkInfo, cutoff: float) -> int | None:
        return self.store.delete_if_older(info, cutoff)
