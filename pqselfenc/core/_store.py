"""The chunk store protocol and the two small values it trades in.

A store keeps encrypted chunks under their content address (SHA-256 of the stored bytes). It
never sees a key, so anything that can hold bytes can be a store: a dict, a folder, a bucket.
Retries, caching and limits are wrapper stores, not flags on this class.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from pqselfenc.core import _primitives as P
from pqselfenc.error import ChunkNotFound, ChunkStoreError, IntegrityError


def short_name(name: bytes) -> str:
    """The first 8 hex digits of a chunk name: enough to find it, safe to log."""
    return name[:4].hex()


@dataclass(frozen=True, repr=False, slots=True)
class ChunkInfo:
    """One chunk: its name, and, inside a DataMap, what it decrypts to.

    ``name`` is public (it is the content address). ``src_hash`` is a chunk-key input and
    therefore secret; it never appears in ``repr``. Stores only ever read ``name``.
    """

    name: bytes
    src_hash: bytes | None = None
    src_size: int | None = None
    index: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, bytes) or len(self.name) != P.NAME_SIZE:
            raise ValueError(f"a chunk name is {P.NAME_SIZE} bytes")
        if self.src_hash is not None and (
            not isinstance(self.src_hash, bytes) or len(self.src_hash) != P.SRC_HASH_SIZE
        ):
            raise ValueError(f"a source hash is {P.SRC_HASH_SIZE} bytes")

    @classmethod
    def for_chunk(cls, chunk: bytes | memoryview) -> ChunkInfo:
        """The info of a stored chunk, its name computed from the bytes."""
        return cls(name=P.chunk_name(chunk))

    @property
    def hex_name(self) -> str:
        """The full name in hex, as stores use it for keys and file names."""
        return self.name.hex()

    def __repr__(self) -> str:
        index = "" if self.index is None else f"index={self.index}, "
        size = "" if self.src_size is None else f", src_size={self.src_size}"
        return f"ChunkInfo({index}name={short_name(self.name)}…{size})"


@dataclass(frozen=True, repr=False)
class EncryptedChunk:
    """An encrypted chunk as returned when no store is given: its name and stored bytes."""

    name: bytes
    content: bytes

    @property
    def info(self) -> ChunkInfo:
        """The ``ChunkInfo`` that names this chunk in a store."""
        return ChunkInfo(name=self.name)

    def __repr__(self) -> str:
        return f"EncryptedChunk(name={short_name(self.name)}…, size={len(self.content)})"


def verify_chunk(info: ChunkInfo, content: bytes) -> bytes:
    """Return ``content`` if it hashes to ``info.name``, else raise ``IntegrityError``."""
    if P.chunk_name(content) != info.name:
        raise IntegrityError(f"chunk {short_name(info.name)} does not match its name")
    return content


class ChunkStore(abc.ABC):
    """Where encrypted chunks live, by content address.

    Subclass it with ``store`` and ``retrieve``; ``has``, ``delete`` and ``__iter__`` have
    defaults. ``store`` must be idempotent (storing the same bytes twice adds nothing: that is
    deduplication) and must never leave a partial chunk visible under a name. ``retrieve``
    raises ``ChunkNotFound`` for a missing chunk.

    Workers call ``store`` and ``retrieve`` from several threads at once: a store must be
    thread-safe (the built-in ones are).

    A store that checks ``SHA-256(content) == name`` on every retrieve sets
    ``verifies_on_retrieve = True`` so the decryptor does not hash twice; the built-in stores do.
    """

    verifies_on_retrieve: bool = False

    # Whether the engine may write through ``_put_named``; derived per class, see there.
    _puts_named: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_put_named" in vars(cls):
            cls._puts_named = True
        elif "store" in vars(cls) or "store_chunk" in vars(cls):
            cls._puts_named = False  # a subclass hooks writes: the engine must go through them

    @abc.abstractmethod
    def store(self, chunk: bytes) -> ChunkInfo:
        """Keep ``chunk`` under its name and return ``ChunkInfo.for_chunk(chunk)``."""

    @abc.abstractmethod
    def retrieve(self, info: ChunkInfo) -> bytes:
        """Return the bytes stored under ``info.name``; ``ChunkNotFound`` if there are none."""

    def has(self, info: ChunkInfo) -> bool:
        """Whether a chunk is stored under ``info.name`` (default: try to retrieve it)."""
        try:
            self.retrieve(info)
        except ChunkNotFound:
            return False
        return True

    def delete(self, info: ChunkInfo) -> None:
        """Remove a chunk; deleting a missing chunk is not an error."""
        raise ChunkStoreError(f"{type(self).__name__} does not support delete")

    def __iter__(self) -> Iterator[ChunkInfo]:
        """Every stored chunk's info, in no particular order."""
        raise ChunkStoreError(f"{type(self).__name__} does not support listing")

    def _store_named(self, chunk: EncryptedChunk) -> None:
        """The engine's way in: ``chunk.name`` was computed from these exact bytes by the
        encryptor. Through ``_put_named`` where the class allows it, else ``store_chunk``."""
        if self._puts_named:
            self._put_named(chunk)
        else:
            self.store_chunk(chunk)

    def _put_named(self, chunk: EncryptedChunk) -> None:
        """Store a chunk the engine named, without hashing it again. Built-in stores define
        this (their reads verify every name anyway); a class that defines it may take this
        path, and a subclass that then overrides ``store`` or ``store_chunk`` turns it off, so
        a user's hook sees every write. The default checks like ``store_chunk``."""
        self.store_chunk(chunk)

    @contextlib.contextmanager
    def _batch(self) -> Iterator[Callable[[EncryptedChunk], None]]:
        """The engine's way to store many chunks: yields a ``_store_named`` that any thread may
        call; once the block exits without error every chunk is as durable as ``store`` makes
        one, and only then may a DataMap point at them. A store that can group that work (one
        wave of fsyncs instead of one per chunk) overrides this; the default stores each chunk
        as it comes."""
        yield self._store_named

    def store_chunk(self, chunk: EncryptedChunk) -> None:
        """Store an already-named chunk; checks the store agrees on the name."""
        info = self.store(chunk.content)
        if info.name != chunk.name:
            raise ChunkStoreError(
                f"{type(self).__name__}.store returned another name than "
                f"{short_name(chunk.name)} for the chunk"
            )


class _ListStore(ChunkStore):
    """Read-only view of the chunk list ``encrypt()`` returned, keyed by name."""

    def __init__(self, chunks: list[EncryptedChunk]) -> None:
        self._chunks = {c.name: c.content for c in chunks}

    def store(self, chunk: bytes) -> ChunkInfo:
        raise ChunkStoreError("a chunk list is read-only")

    def retrieve(self, info: ChunkInfo) -> bytes:
        try:
            return self._chunks[info.name]
        except KeyError:
            raise ChunkNotFound(f"chunk {short_name(info.name)} is not in the list") from None

    def __iter__(self) -> Iterator[ChunkInfo]:
        return (ChunkInfo(name=n) for n in self._chunks)


def as_store(chunks: ChunkStore | list[EncryptedChunk]) -> ChunkStore:
    """Accept either a store or the chunk list ``encrypt()`` returned."""
    if isinstance(chunks, ChunkStore):
        return chunks
    if isinstance(chunks, list | tuple) and all(isinstance(c, EncryptedChunk) for c in chunks):
        return _ListStore(list(chunks))
    raise TypeError("chunks must be a ChunkStore or the list of EncryptedChunk from encrypt()")
