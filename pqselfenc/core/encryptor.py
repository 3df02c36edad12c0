"""``SelfEncryptor``: self-encrypt bytes in memory, and decrypt them back from a DataMap."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from concurrent.futures import Executor
from contextlib import nullcontext
from typing import Protocol, Self, runtime_checkable

from pqselfenc.core import _engine as E
from pqselfenc.core._cache import Clock, cached
from pqselfenc.core._checks import Data, as_view
from pqselfenc.core._cipher import ChunkKeys
from pqselfenc.core._keyconfig import KeyConfig
from pqselfenc.core._store import ChunkStore, EncryptedChunk, StoredChunks, as_store
from pqselfenc.core.config import EncryptionConfig
from pqselfenc.core.datamap import DataMap

__all__ = ["ConvergenceSecretSource", "SelfEncryptor", "resolve_config"]


Chunks = ChunkStore | list[EncryptedChunk] | StoredChunks
"""Where a reader finds chunks: a store, the list ``encrypt()`` returned, or a stream's
``StoredChunks``."""


@runtime_checkable
class ConvergenceSecretSource(Protocol):
    """Anything that supplies the convergence secret of a domain (e.g. a ``KeyStore``).

    A source with a ``config`` attribute holding a ``KeyConfig`` (a ``KeyStore`` has one) also
    supplies the key policy: see ``resolve_config``.
    """

    def convergence_secret(self) -> bytes:
        """The 32-byte convergence secret of this source's deduplication domain."""
        ...


def resolve_config(
    config: EncryptionConfig | None, key_store: ConvergenceSecretSource | None
) -> EncryptionConfig:
    """The config to use: ``config`` (or the default), with the key store's secret if given.

    With a key store, ``config.keys`` becomes the store's policy (``KeyConfig``) when it is
    ``None``; a config that names another policy, or another convergence secret, than the
    store's is refused with ``ValueError`` (two answers to one question: which keys).
    """
    if config is None:
        config = EncryptionConfig()
    if not isinstance(config, EncryptionConfig):
        raise TypeError("config must be an EncryptionConfig")
    if key_store is None:
        return config
    if not isinstance(key_store, ConvergenceSecretSource):
        raise TypeError("key_store must provide convergence_secret()")
    config = _with_policy(config, getattr(key_store, "config", None))
    secret = key_store.convergence_secret()
    if config.convergence_secret not in (None, secret):
        raise ValueError("config and key_store name two different convergence secrets")
    return config.with_convergence_secret(secret)


def _with_policy(config: EncryptionConfig, policy: object) -> EncryptionConfig:
    """``config`` with the key store's ``policy`` as its ``keys``; refuses a different one."""
    if not isinstance(policy, KeyConfig):
        return config  # a secret source without a policy (not a KeyStore)
    if config.keys is None:
        return config.with_keys(policy)
    if config.keys != policy:
        names = [f.name for f in dataclasses.fields(KeyConfig)]
        differ = [n for n in names if getattr(config.keys, n) != getattr(policy, n)]
        raise ValueError(
            f"config.keys and the key store's policy differ ({', '.join(differ)}): open the "
            "store with this config (KeyStore(config)) or leave config.keys unset"
        )
    return config


class SelfEncryptor:
    """Self-encrypts one input held in memory.

    >>> data_map, chunks = SelfEncryptor(data).encrypt()
    >>> SelfEncryptor.from_data_map(data_map, chunks).decrypt() == data

    With ``chunk_store`` the chunks go straight into the store and ``encrypt`` returns an empty
    chunk list. With ``key_store`` the store supplies its domain's convergence secret and its
    policy (``config.keys``; see ``resolve_config``). ``executor`` lets several encryptors share
    one pool (see ``pqselfenc.parallel``). ``config.memory`` bounds the chunks in flight (the
    input and the result are held whatever the bound); ``config.cache`` makes a reader fetch
    from a store through a ``CachingChunkStore``, ``clock`` timing its entries.
    """

    def __init__(
        self,
        data: Data,
        config: EncryptionConfig | None = None,
        chunk_store: ChunkStore | None = None,
        key_store: ConvergenceSecretSource | None = None,
        *,
        executor: Executor | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._data = as_view(data)
        self._config = resolve_config(config, key_store)
        if chunk_store is not None and not isinstance(chunk_store, ChunkStore):
            raise TypeError("chunk_store must be a ChunkStore")
        self._store = chunk_store
        self._executor = executor
        self._clock = clock
        self._map: DataMap | None = None
        self._chunks: Chunks | None = chunk_store
        self._reading: ChunkStore | None = None

    @property
    def config(self) -> EncryptionConfig:
        """The configuration in effect, with any key store's convergence secret applied."""
        return self._config

    def __repr__(self) -> str:
        return f"SelfEncryptor(size={len(self._data)}, config={self._config!r})"

    def encrypt(self) -> tuple[DataMap, list[EncryptedChunk]]:
        """Encrypt; returns the DataMap and the chunks (empty if they went into a store)."""
        chunks: list[EncryptedChunk] = []
        # The batch exits (every chunk durable) before the map is returned.
        writing = self._store.batch() if self._store is not None else nullcontext(chunks.append)
        window = self._window(self._config.chunk_size)
        with writing as sink, E.executor_for(self._config, self._executor) as executor:
            data_map = E.encrypt_bytes(self._data, self._config, sink, executor, window)
        chunks.sort(key=lambda c: c.name)  # encryption order depends on workers; this does not
        self._map = data_map
        self._chunks = self._store if self._store is not None else chunks
        self._reading = None
        return data_map, chunks

    @classmethod
    def from_data_map(
        cls,
        data_map: DataMap,
        chunks: Chunks,
        config: EncryptionConfig | None = None,
        key_store: ConvergenceSecretSource | None = None,
        *,
        executor: Executor | None = None,
        clock: Clock | None = None,
    ) -> Self:
        """An encryptor that can ``decrypt`` ``data_map`` from ``chunks`` (a list or a store)."""
        if not isinstance(data_map, DataMap):
            raise TypeError("data_map must be a DataMap")
        self = cls(b"", config, None, key_store, executor=executor, clock=clock)
        self._map = data_map
        self._chunks = as_store(chunks)
        return self

    def decrypt(self) -> bytes:
        """The verified plaintext; ``IntegrityError`` if any chunk or map level is wrong."""
        leaf, store, keys = self._reader()
        with E.executor_for(self._config, self._executor) as executor:
            piece = leaf.chunks[0].src_size if leaf.chunks else 0
            window = self._window(piece or 1)
            out = b"".join(E.iter_plain(leaf, store, keys, executor, window))
        E.check_total(leaf, len(out))
        return out

    def read_range(self, offset: int, length: int) -> bytes:
        """Verified bytes ``[offset, offset + length)``; fetches only the chunks it needs."""
        leaf, store, keys = self._reader()
        return E.read_range(leaf, store, keys, offset, length, self._executor)

    def iter_range(self, offset: int, length: int) -> Iterator[bytes]:
        """Verified bytes ``[offset, offset + length)`` (clipped to the end) as pieces of at
        most one chunk: a large range without holding all of it."""
        leaf, store, keys = self._reader()
        with E.executor_for(self._config, self._executor) as executor:
            window = E.window_of(self._config)
            yield from E.iter_range(leaf, store, keys, offset, length, executor, window)

    def levels(self) -> Iterator[DataMap]:
        """Every level of the map, top first, down to the level-0 map of the content.

        A small map has one level. A hierarchical one yields each parent, then the child it
        decrypts to (each checked against its parent), so ``{c.name for m in levels() for c in
        m.chunks}`` is every chunk the map needs: what ``store gc`` must keep. Fetching a
        parent's chunks may raise ``ChunkNotFound`` part-way; the levels yielded stay valid.
        """
        if self._map is None or self._chunks is None:
            raise ValueError("nothing to walk: call encrypt() or use from_data_map()")
        return E.iter_levels(self._map, self._reading_store(), self._config, self._executor)

    def _window(self, chunk_size: int) -> int:
        """Tasks in flight: the workers' window, as far as ``config.memory`` allows."""
        return self._config.memory.in_memory_window(chunk_size, E.window_of(self._config))

    def _reading_store(self) -> ChunkStore:
        """The store chunks are read from: behind the cache of ``config.cache`` (made once, so
        repeated ``read_range`` calls share it), never for a chunk list already in memory."""
        if self._reading is None:
            assert self._chunks is not None
            store = as_store(self._chunks)
            if isinstance(self._chunks, ChunkStore | StoredChunks):
                store = cached(store, self._config, self._clock)
            self._reading = store
        return self._reading

    def _reader(self) -> tuple[DataMap, ChunkStore, ChunkKeys]:
        if self._map is None or self._chunks is None:
            raise ValueError("nothing to decrypt: call encrypt() or use from_data_map()")
        store = self._reading_store()
        leaf = E.expand(self._map, store, self._config, self._executor)
        return leaf, store, E.keys_for_map(leaf, self._config)
