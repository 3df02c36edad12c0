"""The ``ChunkStore`` conformance suite every store runs (as restic's backend/test/suite.go).

Subclass ``StoreConformance`` in a test module (the class name must start with ``Test``) and
provide two things:

- a ``store`` fixture yielding a fresh, empty store;
- ``plant(store, info, content)``: put raw ``content`` under ``info.name`` behind the store's
  back (how a disk or a server corrupts or truncates an object).

Set ``lists = False`` / ``deletes = False`` for a store that keeps the ``ChunkStore`` defaults
for ``__iter__`` / ``delete``: the suite then checks that those defaults refuse clearly. Set
``rehashes_named = True`` for a store whose engine writes must go through its own ``store``
(a user's subclass that defines or hooks ``store``): the suite checks that ``put_named`` and
``batch`` then hash every chunk again, and that every other store skips that hash.

Wrapper stores run the same suite as the stores they wrap (``tests/test_stores.py``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pqselfenc import ChunkInfo, ChunkStore, EncryptedChunk, EncryptionConfig, SelfEncryptor
from pqselfenc.core import _primitives as P
from pqselfenc.error import ChunkNotFound, ChunkStoreError, IntegrityError
from pqselfenc.streaming import decrypt_file, encrypt_file

SMALL = EncryptionConfig(chunk_size=64 * 1024)


def chunk_of(size: int, seed: int = 0) -> bytes:
    """Deterministic bytes of ``size`` (different seeds give different chunks)."""
    block = seed.to_bytes(4, "big") * 16384  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


def names(store: ChunkStore) -> set[bytes]:
    return {info.name for info in store}


def named(size: int, seed: int = 0) -> EncryptedChunk:
    """A chunk as the engine hands it over: content and the name computed from it."""
    content = chunk_of(size, seed)
    return EncryptedChunk(ChunkInfo.for_chunk(content).name, content)


class HashCount:
    """Counts chunk-name computations (SHA-256 of a chunk) while it is installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count, self._lock, real = 0, threading.Lock(), P.chunk_name

        def chunk_name(chunk: bytes | memoryview) -> bytes:
            with self._lock:
                self.count += 1
            return real(chunk)

        monkeypatch.setattr(P, "chunk_name", chunk_name)


def run_together(count: int, job: Callable[[int], object]) -> list[object]:
    """Run ``job(i)`` for ``i < count`` in ``count`` threads released at the same moment."""
    start = threading.Barrier(count)

    def run(i: int) -> object:
        start.wait(timeout=30)
        return job(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


class StoreConformance:
    lists = True
    deletes = True
    rehashes_named = False

    @pytest.fixture
    def store(self) -> ChunkStore:
        raise NotImplementedError("a conformance test class provides the store fixture")

    def plant(self, store: ChunkStore, info: ChunkInfo, content: bytes) -> None:
        raise NotImplementedError("a conformance test class provides plant()")

    # -- put / get / has -----------------------------------------------------------------------

    @pytest.mark.parametrize("size", [0, 1, 1000, 64 * 1024 + 1])
    def test_store_then_retrieve(self, store: ChunkStore, size: int) -> None:
        chunk = os.urandom(size)
        info = store.store(chunk)
        assert info == ChunkInfo.for_chunk(chunk)
        assert store.retrieve(info) == chunk
        assert store.retrieve(ChunkInfo(name=info.name, src_size=size, index=3)) == chunk

    def test_empty_chunk(self, store: ChunkStore) -> None:
        info = store.store(b"")
        assert store.has(info)
        assert store.retrieve(info) == b""

    def test_large_chunk(self, store: ChunkStore) -> None:
        chunk = os.urandom(8 * 1024 * 1024 + 3)
        info = store.store(chunk)
        assert store.retrieve(info) == chunk

    def test_has(self, store: ChunkStore) -> None:
        info = store.store(b"present")
        assert store.has(info)
        assert not store.has(ChunkInfo.for_chunk(b"absent"))

    def test_missing_chunk_is_chunk_not_found(self, store: ChunkStore) -> None:
        info = ChunkInfo.for_chunk(b"never stored")
        with pytest.raises(ChunkNotFound) as caught:
            store.retrieve(info)
        assert isinstance(caught.value, ChunkStoreError)
        assert info.hex_name not in str(caught.value)  # short names only in messages

    def test_re_put_is_idempotent(self, store: ChunkStore) -> None:
        chunk = chunk_of(5000, seed=7)
        first = store.store(chunk)
        assert store.store(bytes(chunk)) == first
        assert store.retrieve(first) == chunk
        if self.lists:
            assert names(store) == {first.name}

    def test_store_chunk_checks_the_name(self, store: ChunkStore) -> None:
        chunk = b"named elsewhere"
        store.store_chunk(EncryptedChunk(ChunkInfo.for_chunk(chunk).name, chunk))
        assert store.retrieve(ChunkInfo.for_chunk(chunk)) == chunk
        with pytest.raises(ChunkStoreError, match="another name"):
            store.store_chunk(EncryptedChunk(ChunkInfo.for_chunk(b"x").name, chunk))

    # -- delete / iter -------------------------------------------------------------------------

    def test_delete(self, store: ChunkStore) -> None:
        keep, drop = store.store(b"keep"), store.store(b"drop")
        if not self.deletes:
            with pytest.raises(ChunkStoreError, match="does not support delete"):
                store.delete(drop)
            return
        store.delete(drop)
        assert not store.has(drop)
        assert store.has(keep)
        with pytest.raises(ChunkNotFound):
            store.retrieve(drop)
        store.delete(drop)  # deleting a missing chunk is not an error
        assert store.store(b"drop") == drop  # and it can come back
        assert store.retrieve(drop) == b"drop"

    def test_iter_lists_exactly_the_stored_chunks(self, store: ChunkStore) -> None:
        stored = {store.store(chunk_of(100 + i, seed=i)).name for i in range(5)}
        if not self.lists:
            with pytest.raises(ChunkStoreError, match="does not support listing"):
                list(store)
            return
        assert names(store) == stored
        assert len(list(store)) == 5
        assert all(isinstance(info, ChunkInfo) for info in store)

    def test_empty_store_lists_nothing(self, store: ChunkStore) -> None:
        if self.lists:
            assert list(store) == []

    # -- integrity -----------------------------------------------------------------------------

    @pytest.mark.parametrize("damage", ["flip", "truncate", "extend", "swap"])
    def test_corrupted_object_is_detected(self, store: ChunkStore, damage: str) -> None:
        data = os.urandom(300_000)
        data_map, _ = SelfEncryptor(data, SMALL, chunk_store=store).encrypt()
        victim = data_map.chunks[1]
        good = store.retrieve(victim)
        other = store.retrieve(data_map.chunks[2])
        bad = {
            "flip": good[:100] + bytes([good[100] ^ 1]) + good[101:],
            "truncate": good[:-1],
            "extend": good + b"\0",
            "swap": other,
        }[damage]
        self.plant(store, victim, bad)
        if store.verifies_on_retrieve:
            with pytest.raises(IntegrityError):
                store.retrieve(victim)
        with pytest.raises(IntegrityError):
            SelfEncryptor.from_data_map(data_map, store, SMALL).decrypt()

    # -- concurrency ---------------------------------------------------------------------------

    def test_concurrent_writers_of_the_same_chunk(self, store: ChunkStore) -> None:
        chunk = chunk_of(256 * 1024, seed=99)
        infos = run_together(8, lambda _: store.store(chunk))
        assert len(set(infos)) == 1
        assert store.retrieve(ChunkInfo.for_chunk(chunk)) == chunk
        if self.lists:
            assert names(store) == {ChunkInfo.for_chunk(chunk).name}

    def test_concurrent_writers_and_readers(self, store: ChunkStore) -> None:
        chunks = [chunk_of(10_000 + i, seed=i) for i in range(24)]

        def job(i: int) -> bool:
            info = store.store(chunks[i])
            return store.retrieve(info) == chunks[i] and store.has(info)

        assert run_together(24, job) == [True] * 24
        if self.lists:
            assert names(store) == {ChunkInfo.for_chunk(c).name for c in chunks}

    # -- through the engine --------------------------------------------------------------------

    def test_encrypt_into_the_store_and_decrypt_back(self, store: ChunkStore) -> None:
        data = os.urandom(700_000)
        data_map, returned = SelfEncryptor(data, SMALL, chunk_store=store).encrypt()
        assert returned == []
        assert len(data_map.chunks) >= 10
        assert all(store.has(info) for info in data_map.chunks)
        assert SelfEncryptor.from_data_map(data_map, store, SMALL).decrypt() == data
        reader = SelfEncryptor.from_data_map(data_map, store, SMALL)
        assert reader.read_range(123_456, 200_000) == data[123_456:323_456]

    def test_same_content_adds_no_chunks(self, store: ChunkStore) -> None:
        data = os.urandom(400_000)
        first, _ = SelfEncryptor(data, SMALL, chunk_store=store).encrypt()
        if self.lists:
            before = names(store)
            assert before == {info.name for info in first.chunks}
        second, _ = SelfEncryptor(data, SMALL, chunk_store=store).encrypt()
        assert second == first
        if self.lists:
            assert names(store) == before

    def test_missing_chunk_fails_decryption_clearly(self, store: ChunkStore) -> None:
        data = os.urandom(200_000)
        data_map, chunks = SelfEncryptor(data, SMALL).encrypt()
        lost = data_map.chunks[1].name
        for chunk in chunks:
            if chunk.name != lost:
                store.store_chunk(chunk)
        with pytest.raises(ChunkNotFound):
            SelfEncryptor.from_data_map(data_map, store, SMALL).decrypt()

    # -- the engine's contract: put_named and batch ---------------------------------------------

    def test_put_named_hashes_again_only_where_allowed(
        self, store: ChunkStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Built-in stores and wrappers over them keep an engine-named chunk without hashing it
        again (their reads verify); a store whose ``store`` is the user's goes through it."""
        first, second = named(3000, seed=1), named(3000, seed=2)
        hashes = HashCount(monkeypatch)
        store.put_named(first)
        with store.batch() as put:
            put(second)
        assert hashes.count == (2 if self.rehashes_named else 0)
        monkeypatch.undo()
        assert store.retrieve(first.info) == first.content
        assert store.retrieve(second.info) == second.content

    def test_named_puts_are_idempotent(self, store: ChunkStore) -> None:
        chunk = named(5000, seed=8)
        store.put_named(chunk)
        store.put_named(EncryptedChunk(chunk.name, bytes(chunk.content)))
        with store.batch() as put:
            put(chunk)
            put(chunk)
        assert store.store(chunk.content) == chunk.info
        assert store.retrieve(chunk.info) == chunk.content
        if self.lists:
            assert names(store) == {chunk.name}

    def test_a_batch_from_many_threads_is_complete_when_it_exits(self, store: ChunkStore) -> None:
        chunks = [named(2000 + i % 12, seed=i % 12) for i in range(48)]  # 12 names, 4 puts each
        with store.batch() as put:
            run_together(8, lambda t: [put(c) for c in chunks[t::8]])
        for chunk in chunks:
            assert store.has(chunk.info)
            assert store.retrieve(chunk.info) == chunk.content
        if self.lists:
            assert names(store) == {c.name for c in chunks}

    def test_a_failure_inside_a_batch_leaves_no_name_on_partial_content(
        self, store: ChunkStore
    ) -> None:
        chunks = [named(70_000 + i, seed=100 + i) for i in range(12)]
        with pytest.raises(RuntimeError, match="the engine failed"), store.batch() as put:
            for chunk in chunks[:8]:
                put(chunk)
            raise RuntimeError("the engine failed")  # the batch sees it, and re-raises it
        for chunk in chunks:  # a name is either absent or holds the whole chunk
            if store.has(chunk.info):
                assert chunk in chunks[:8]
                assert store.retrieve(chunk.info) == chunk.content
        if self.lists:
            assert names(store) <= {c.name for c in chunks[:8]}
        with store.batch() as put:  # the store is usable again, and a rerun completes
            for chunk in chunks:
                put(chunk)
        assert all(store.retrieve(c.info) == c.content for c in chunks)

    def test_a_batch_holds_the_stores_writer_lock_and_records_its_session(
        self, store: ChunkStore
    ) -> None:
        """A store that can be shared with gc (``locks()``) is locked by every batch, also
        through a wrapper (docs/stores.md, "Sharing a store and garbage collection")."""
        locks = store.locks()
        with store.writing(), store.batch() as put:
            put(named(3000, seed=5))
            if locks is not None:
                assert [i.kind for i in locks.inspect()] == ["shared"]  # one, re-entered
        if locks is not None:
            assert locks.inspect() == [] and len(locks.space.ended()) == 1

    def test_encrypt_file_into_the_store_and_back(self, store: ChunkStore, tmp_path: Path) -> None:
        """The file path writes through ``batch``: the map comes back only when its chunks are
        stored, and decrypts from the store."""
        data = os.urandom(500_000)
        (tmp_path / "in").write_bytes(data)
        data_map = encrypt_file(tmp_path / "in", store, SMALL)
        assert data_map == SelfEncryptor(data, SMALL).encrypt()[0]
        assert all(store.has(info) for info in data_map.chunks)
        decrypt_file(data_map, store, tmp_path / "out", SMALL)
        assert (tmp_path / "out").read_bytes() == data
