"""The chunk store contract, the two small values it trades in, and the wrapper base.

A store keeps encrypted chunks under their content address (SHA-256 of the stored bytes). It
never sees a key, so anything that can hold bytes can be a store: a dict, a folder, a bucket.
The engine writes through ``ChunkStore.batch`` and ``put_named`` and reads through
``retrieve``; ``ChunkStore``'s docstring is the contract. Retries, caching and limits are
wrapper stores (``WrappingStore``), not flags on this class.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

from pqselfenc.core import _primitives as P
from pqselfenc.error import ChunkNotFound, ChunkStoreError, IntegrityError

if TYPE_CHECKING:
    from pqselfenc.core._locks import StoreLocks


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
    """Where encrypted chunks live, by content address: the store contract.

    A store must implement ``store`` and ``retrieve``. ``store`` is idempotent (storing the same
    bytes twice adds nothing: that is deduplication), never leaves a partial chunk visible under
    a name, and returns ``ChunkInfo.for_chunk(chunk)``; ``retrieve`` raises ``ChunkNotFound``
    for a missing chunk. ``has``, ``delete`` and ``__iter__`` have defaults (``delete`` and
    listing refuse). Workers call every method from several threads at once: a store must be
    thread-safe (the built-in ones are).

    A store may also set ``verifies_on_retrieve = True`` when ``retrieve`` checks
    ``SHA-256(content) == name`` itself (the decryptor then does not hash twice), and override
    the two members the engine writes through:

    - ``put_named(chunk)``: store a chunk whose name the engine computed from these bytes. The
      default hashes again through ``store`` and checks the name; a store whose reads verify
      every name may skip that hash.
    - ``batch()``: a context manager yielding a ``put`` with ``put_named``'s meaning, for the
      many chunks of one run; a store may group their durability (one wave of fsyncs). When
      the block exits without error every chunk given to ``put`` is durable; see ``batch``.

    A store that several processes may share with a garbage collector returns a ``StoreLocks``
    from ``locks()`` (the built-in stores do; the default is None: no coordination, and gc
    refuses such a store). ``batch()`` then holds a shared lock while it writes, and
    ``writing()`` extends it over several runs and the writing of their maps.

    Both default to going through ``store``, and return to that default below a write hook:
    a subclass that overrides ``store`` or ``store_chunk`` but not ``put_named`` gets the
    default ``put_named`` back, and one that overrides any of those three but not ``batch``
    gets the default ``batch``, so a user's ``store`` hook sees every write the engine makes.
    Wrapper stores (a cache, a counter) subclass ``WrappingStore``, which forwards all of it.
    """

    verifies_on_retrieve: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        for member, after in _DERIVED:
            if member not in own and any(name in own for name in after):
                setattr(cls, member, vars(ChunkStore)[member])  # the default, derived from store

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

    def store_chunk(self, chunk: EncryptedChunk) -> None:
        """Store an already-named chunk through ``store``; checks the store agrees on the name."""
        info = self.store(chunk.content)
        if info.name != chunk.name:
            raise ChunkStoreError(
                f"{type(self).__name__}.store returned another name than "
                f"{short_name(chunk.name)} for the chunk"
            )

    def put_named(self, chunk: EncryptedChunk) -> None:
        """Store a chunk the engine named: ``chunk.name`` was computed from these exact bytes.

        Same promises as ``store`` (idempotent, thread-safe, never a partial chunk under a
        name). The default is ``store_chunk``, which hashes again through ``store``; a store
        whose reads verify every name may override it to keep the bytes without hashing
        (the built-in stores do). See the class docstring for when the default comes back.
        """
        self.store_chunk(chunk)

    def batch(self) -> contextlib.AbstractContextManager[Callable[[EncryptedChunk], None]]:
        """``with store.batch() as put:``: store the many chunks of one run.

        ``put`` means ``put_named`` and any thread may call it, any number of times; several
        batches may run at once. ``put`` may return before its chunk is durable, or readable,
        and a failure may surface at a later ``put`` or when the block exits. When the block
        exits without error, every chunk given to ``put`` (written now or found already
        stored) is as durable as ``store`` makes one: only then may a DataMap naming them be
        written, and the engine returns a map only after its batch exited. When the block
        raises, the batch waits for its writes and promises nothing more, except that no
        name points at partial content. The default puts each chunk through ``put_named``
        at once, under ``writing()``; a store that can group durability (the directory
        store) overrides it, and holds ``writing()`` around it too.
        """
        return self._default_batch()

    @contextlib.contextmanager
    def _default_batch(self) -> Iterator[Callable[[EncryptedChunk], None]]:
        with self.writing():
            yield self.put_named

    def locks(self) -> StoreLocks | None:
        """This store object's locks, if the store can be shared with a garbage collector
        (``pqselfenc.core.gc``); None (the default) if it cannot."""
        return None

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """``with store.writing():`` holds the store's shared writer lock for the block:
        gc cannot run meanwhile. Every ``batch()`` holds it already; wrap several runs *and
        the writing of their maps* in one block, so a map is durable before gc may run (one
        lock for many files). Re-entrant per store object; a no-op without ``locks()``.
        ``StoreLockedError`` if a gc holds the store past the lock policy's wait, or, on
        exit, if the lock was lost (then no map may name what was written under it)."""
        locks = self.locks()
        if locks is None:
            yield
            return
        with locks.shared():
            yield


# (member, the members whose override in a class brings back ChunkStore's default member)
_DERIVED = (
    ("put_named", ("store", "store_chunk")),
    ("batch", ("store", "store_chunk", "put_named")),
)


class WrappingStore(ChunkStore):
    """A store in front of ``inner`` that passes every member of the contract on to it.

    Subclass it for a wrapper (a cache, a counter, a rate limit) and override only what the
    wrapper changes: the rest, including the engine's ``put_named`` and ``batch`` (so the
    inner store's fast path and its batched durability), reaches ``inner`` unchanged.
    ``verifies_on_retrieve`` is the inner store's unless a subclass declares its own. A
    subclass that overrides ``store`` or ``put_named`` falls back to the ``ChunkStore``
    defaults for the members after it (class docstring there), so it sees every write but
    loses ``inner``'s batching unless it overrides ``batch`` too.
    """

    def __init__(self, inner: ChunkStore) -> None:
        if not isinstance(inner, ChunkStore):
            raise TypeError("inner must be a ChunkStore")
        self.inner = inner
        if not _declares(type(self), "verifies_on_retrieve"):
            self.verifies_on_retrieve = inner.verifies_on_retrieve

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    def store(self, chunk: bytes) -> ChunkInfo:
        """``inner.store``."""
        return self.inner.store(chunk)

    def retrieve(self, info: ChunkInfo) -> bytes:
        """``inner.retrieve``."""
        return self.inner.retrieve(info)

    def has(self, info: ChunkInfo) -> bool:
        """``inner.has``."""
        return self.inner.has(info)

    def delete(self, info: ChunkInfo) -> None:
        """``inner.delete``."""
        self.inner.delete(info)

    def __iter__(self) -> Iterator[ChunkInfo]:
        """``iter(inner)``."""
        return iter(self.inner)

    def put_named(self, chunk: EncryptedChunk) -> None:
        """``inner.put_named``: the inner store decides whether to hash again."""
        self.inner.put_named(chunk)

    def batch(self) -> contextlib.AbstractContextManager[Callable[[EncryptedChunk], None]]:
        """``inner.batch()``: the inner store's batching and durability."""
        return self.inner.batch()

    def locks(self) -> StoreLocks | None:
        """``inner.locks()``: a wrapper shares its inner store's locks."""
        return self.inner.locks()


def _declares(cls: type, name: str) -> bool:
    """Whether a class between ``cls`` and ``WrappingStore`` (exclusive) sets ``name``."""
    chain = cls.__mro__
    return any(name in vars(k) for k in chain[: chain.index(WrappingStore)])


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


class StoredChunks(Sequence[EncryptedChunk]):
    """The chunks of one job that went into ``store``, as a read-only sequence sorted by name.

    What a stream returns in place of a chunk list when its chunks went into the default store
    (the list would grow with the input). Nothing is held: the names are listed on first use
    (``names`` is called once) and each chunk is fetched from the store, and verified against
    its name, when it is read. Accepted wherever a chunk list is (``from_data_map``).
    """

    def __init__(self, store: ChunkStore, names: Callable[[], Iterable[bytes]]) -> None:
        self.store = store
        self._list_names = names
        self._names: list[bytes] | None = None

    def __repr__(self) -> str:
        return f"StoredChunks({self.store!r})"

    @property
    def names(self) -> list[bytes]:
        """Every chunk name, sorted (listed on first use)."""
        if self._names is None:
            self._names = sorted(set(self._list_names()))
        return self._names

    def __len__(self) -> int:
        return len(self.names)

    @overload
    def __getitem__(self, index: int) -> EncryptedChunk: ...

    @overload
    def __getitem__(self, index: slice) -> list[EncryptedChunk]: ...

    def __getitem__(self, index: int | slice) -> EncryptedChunk | list[EncryptedChunk]:
        if isinstance(index, slice):
            return [self._fetch(name) for name in self.names[index]]
        return self._fetch(self.names[index])

    def _fetch(self, name: bytes) -> EncryptedChunk:
        info = ChunkInfo(name=name)
        content = self.store.retrieve(info)
        if not self.store.verifies_on_retrieve:
            verify_chunk(info, content)
        return EncryptedChunk(name, content)


def as_store(chunks: ChunkStore | list[EncryptedChunk] | StoredChunks) -> ChunkStore:
    """Accept a store, the chunk list ``encrypt()`` returned, or a stream's ``StoredChunks``."""
    if isinstance(chunks, ChunkStore):
        return chunks
    if isinstance(chunks, StoredChunks):
        return chunks.store
    if isinstance(chunks, list | tuple) and all(isinstance(c, EncryptedChunk) for c in chunks):
        return _ListStore(list(chunks))
    raise TypeError("chunks must be a ChunkStore or the list of EncryptedChunk from encrypt()")
