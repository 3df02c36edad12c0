"""``MemoryChunkStore``: chunks in a dict, for tests and small jobs."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from pqselfenc.core._store import (
    ChunkInfo,
    ChunkStore,
    EncryptedChunk,
    short_name,
    verify_chunk,
)
from pqselfenc.error import ChunkNotFound

__all__ = ["MemoryChunkStore"]


class MemoryChunkStore(ChunkStore):
    """Thread-safe in-memory store; verifies every chunk it hands out."""

    verifies_on_retrieve = True

    def __init__(self) -> None:
        self._chunks: dict[bytes, bytes] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryChunkStore(chunks={len(self)})"

    def __len__(self) -> int:
        with self._lock:
            return len(self._chunks)

    def store(self, chunk: bytes) -> ChunkInfo:
        info = ChunkInfo.for_chunk(chunk)
        with self._lock:
            self._chunks.setdefault(info.name, bytes(chunk))
        return info

    def put_named(self, chunk: EncryptedChunk) -> None:
        """Keep a chunk the engine named without hashing it again: every read verifies it."""
        with self._lock:
            self._chunks.setdefault(chunk.name, chunk.content)

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

    def __iter__(self) -> Iterator[ChunkInfo]:
        with self._lock:
            names = list(self._chunks)
        return (ChunkInfo(name=n) for n in names)

    def total_bytes(self) -> int:
        """Bytes held (after deduplication)."""
        with self._lock:
            return sum(len(c) for c in self._chunks.values())
