"""The public store contract through every wrapper and user subclass: each runs the whole
conformance suite, a batch through any wrapper over a directory store really batches its
fsyncs, a failure mid-batch leaves only whole chunks, and a user's ``store`` hook sees every
write the engine makes, whichever way in."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from store_conformance import StoreConformance

from pqselfenc import (
    ChunkInfo,
    ChunkStore,
    DirectoryChunkStore,
    EncryptionConfig,
    MemoryChunkStore,
    ParallelConfig,
    SelfEncryptor,
)
from pqselfenc.cli._stores import CountingStore
from pqselfenc.core import _primitives as P
from pqselfenc.core.stores import WrappingStore
from pqselfenc.error import ChunkStoreError
from pqselfenc.memory import CachingChunkStore
from pqselfenc.streaming import StreamEncryptor, encrypt_file

CFG = EncryptionConfig(chunk_size=4096, parallel=ParallelConfig(max_threads=2))


class Bar:
    """A progress bar that only adds up what it is told."""

    def __init__(self) -> None:
        self.total, self._lock = 0, threading.Lock()

    def update(self, n: int) -> None:
        with self._lock:
            self.total += n


def counting(inner: ChunkStore) -> CountingStore:
    return CountingStore(inner, Bar(), 1 << 62)


class HookedDirectory(DirectoryChunkStore):
    """What a user might write: a directory store that audits every write in ``store``."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.seen: list[bytes] = []

    def store(self, chunk: bytes) -> ChunkInfo:
        info = super().store(chunk)
        self.seen.append(info.name)
        return info


def plant_file(store: ChunkStore, info: ChunkInfo, content: bytes) -> None:
    """Overwrite the chunk file under the wrappers, and drop any cached copy."""
    inner = store
    while isinstance(inner, WrappingStore):
        if isinstance(inner, CachingChunkStore):
            inner.clear()
        inner = inner.inner
    assert isinstance(inner, DirectoryChunkStore)
    path = inner.path_of(info)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)


# -- every wrapper and user subclass runs the whole suite ----------------------------------------


class TestWrappingStoreOverMemory(StoreConformance):
    @pytest.fixture
    def store(self) -> ChunkStore:
        return WrappingStore(MemoryChunkStore())

    def plant(self, store: ChunkStore, info: ChunkInfo, content: bytes) -> None:
        assert isinstance(store, WrappingStore) and isinstance(store.inner, MemoryChunkStore)
        store.inner._chunks[info.name] = content


class TestCachingOverMemory(StoreConformance):
    @pytest.fixture
    def store(self) -> ChunkStore:
        return CachingChunkStore(MemoryChunkStore())

    def plant(self, store: ChunkStore, info: ChunkInfo, content: bytes) -> None:
        assert isinstance(store, CachingChunkStore) and isinstance(store.inner, MemoryChunkStore)
        store.inner._chunks[info.name] = content
        store.clear()  # the damage is seen once the cached copy is gone (expired)


class TestCachingOverDirectory(StoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> ChunkStore:
        return CachingChunkStore(DirectoryChunkStore(tmp_path / "chunks"))

    def plant(self, store: ChunkStore, info: ChunkInfo, content: bytes) -> None:
        plant_file(store, info, content)


class TestCountingOverDirectory(StoreConformance):
    """The CLI's progress-counting wrapper."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> ChunkStore:
        return counting(DirectoryChunkStore(tmp_path / "chunks"))

    def plant(self, store: ChunkStore, info: ChunkInfo, content: bytes) -> None:
        plant_file(store, info, content)


class TestCachingOverCountingOverDirectory(StoreConformance):
    """Wrappers stack."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> ChunkStore:
        return CachingChunkStore(counting(DirectoryChunkStore(tmp_path / "chunks")))

    def plant(self, store: ChunkStore, info: ChunkInfo, content: bytes) -> None:
        plant_file(store, info, content)


class TestUserHookOnDirectory(StoreConformance):
    """A user's subclass that hooks ``store``: the engine's writes must go through it."""

    rehashes_named = True

    @pytest.fixture
    def store(self, tmp_path: Path) -> ChunkStore:
        return HookedDirectory(tmp_path / "chunks")

    def plant(self, store: ChunkStore, info: ChunkInfo, content: bytes) -> None:
        plant_file(store, info, content)


# -- batches through wrappers really batch ---------------------------------------------------------

DIRECTORY_WRAPPERS: dict[str, Callable[[DirectoryChunkStore], ChunkStore]] = {
    "directory": lambda d: d,
    "caching": CachingChunkStore,
    "counting": counting,
    "wrapping": WrappingStore,
    "caching-counting": lambda d: CachingChunkStore(counting(d)),
}


class FsyncCount:
    """Counts fsyncs of files and of folders, from every thread (the I/O threads too), except
    those of the store's lock area (``ROOT/locks``: a fixed cost per batch, tests/test_gc.py)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
        self.files = self.folders = 0
        self._lock, real = threading.Lock(), os.fsync
        with DirectoryChunkStore(root).writing():
            pass  # the lock area exists: making it fsyncs the root once, outside the count
        locks = str(root / "locks")

        def fsync(fd: int) -> None:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(locks):
                return real(fd)
            folder = stat.S_ISDIR(os.fstat(fd).st_mode)
            with self._lock:
                if folder:
                    self.folders += 1
                else:
                    self.files += 1
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)


def source(tmp_path: Path, chunks: int) -> Path:
    path = tmp_path / "in.bin"
    path.write_bytes(os.urandom(chunks * CFG.chunk_size))
    return path


def shard_folders(root: Path) -> int:
    return len({p.parent for p in root.glob("??/*")})


@pytest.mark.parametrize("wrap", sorted(DIRECTORY_WRAPPERS))
def test_a_batch_through_any_wrapper_fsyncs_each_folder_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wrap: str
) -> None:
    """encrypt_file writes through ``batch``: each chunk file is fsynced, then each folder once
    and the root once. Per chunk (what CachingChunkStore used to do) is a folder fsync per
    chunk plus the root per new folder: 40 chunks would be 70-80 folder fsyncs, not ~38."""
    path, root = source(tmp_path, 40), tmp_path / "store"
    store = DIRECTORY_WRAPPERS[wrap](DirectoryChunkStore(root))
    fsyncs = FsyncCount(monkeypatch, root)
    data_map = encrypt_file(path, store, CFG)
    assert len({c.name for c in data_map.chunks}) == fsyncs.files == 40
    assert fsyncs.folders == shard_folders(root) + 1


def test_the_fsync_count_tells_per_chunk_writes_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control for the test above: a user's ``store`` hook must see each write, so that
    store is written chunk by chunk, and the count shows it."""
    path, root = source(tmp_path, 40), tmp_path / "store"
    store = HookedDirectory(root)
    fsyncs = FsyncCount(monkeypatch, root)
    data_map = encrypt_file(path, store, CFG)
    assert sorted(store.seen) == sorted(c.name for c in data_map.chunks)
    assert fsyncs.files == 40
    assert fsyncs.folders >= 40 + shard_folders(root)  # a folder per chunk, the root per folder


@pytest.mark.parametrize("wrap", sorted(DIRECTORY_WRAPPERS))
def test_a_write_failure_mid_batch_through_any_wrapper_leaves_only_whole_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wrap: str
) -> None:
    real, calls, lock = os.write, [0], threading.Lock()

    def failing(fd: int, data: bytes) -> int:
        with lock:
            calls[0] += 1
            fail = calls[0] == 9
        if fail:
            raise OSError(28, "No space left on device")
        return real(fd, data)

    path, root = source(tmp_path, 40), tmp_path / "store"
    store = DIRECTORY_WRAPPERS[wrap](DirectoryChunkStore(root))
    monkeypatch.setattr(os, "write", failing)
    with pytest.raises(ChunkStoreError, match="No space left"):
        encrypt_file(path, store, CFG)
    monkeypatch.undo()
    listed = list(DirectoryChunkStore(root))
    assert 0 < len(listed) < 40
    for info in listed:  # every visible name holds its whole chunk
        assert P.chunk_name(DirectoryChunkStore(root).path_of(info).read_bytes()) == info.name
    assert list(root.glob("*/.tmp-*")) == []


def test_counting_wrapper_counts_every_write_in_a_batch(tmp_path: Path) -> None:
    bar = Bar()
    store = CountingStore(DirectoryChunkStore(tmp_path / "store"), bar, 1 << 62)
    data_map = encrypt_file(source(tmp_path, 10), store, CFG)
    stored = sum(len(store.retrieve(c)) for c in data_map.chunks)
    assert bar.total == 2 * stored  # every chunk once when written, once when read back


# -- a user's hook sees every write ----------------------------------------------------------------


def _hooked(base: type[ChunkStore], seen: list[bytes]) -> type[ChunkStore]:
    class Hooked(base):  # type: ignore[valid-type,misc]
        def store(self, chunk: bytes) -> ChunkInfo:
            info: ChunkInfo = super().store(chunk)
            seen.append(info.name)
            return info

    return Hooked


def _encrypt_file(store: ChunkStore, data: bytes, tmp_path: Path) -> list[ChunkInfo]:
    (tmp_path / "in").write_bytes(data)
    return list(encrypt_file(tmp_path / "in", store, CFG).chunks)


def _encrypt_stream(store: ChunkStore, data: bytes, _: Path) -> list[ChunkInfo]:
    async def run() -> list[ChunkInfo]:
        enc = StreamEncryptor(CFG, chunk_store=store)
        await enc.write(data)
        return list((await enc.finalize()).chunks)

    return asyncio.run(run())


def _encrypt_bytes(store: ChunkStore, data: bytes, _: Path) -> list[ChunkInfo]:
    return list(SelfEncryptor(data, CFG, chunk_store=store).encrypt()[0].chunks)


BASES: dict[str, tuple[type[ChunkStore], Callable[[Path], tuple[object, ...]]]] = {
    "memory": (MemoryChunkStore, lambda _: ()),
    "directory": (DirectoryChunkStore, lambda root: (root,)),
    "caching": (CachingChunkStore, lambda _: (MemoryChunkStore(),)),
    "wrapping-directory": (WrappingStore, lambda root: (DirectoryChunkStore(root),)),
}


@pytest.mark.parametrize("way", [_encrypt_bytes, _encrypt_file, _encrypt_stream])
@pytest.mark.parametrize("base", sorted(BASES))
def test_a_subclass_hook_on_store_sees_every_engine_write(
    base: str, way: Callable[[ChunkStore, bytes, Path], list[ChunkInfo]], tmp_path: Path
) -> None:
    """Built-in stores and wrappers skip re-hashing chunks the engine named and batch their
    writes, but never around a user's override of ``store``: a subclass that audits or
    throttles writes still sees each one, whether the engine writes bytes, a file or a
    stream."""
    seen: list[bytes] = []
    cls, args = BASES[base]
    store = _hooked(cls, seen)(*args(tmp_path / "store"))
    data = os.urandom(5 * 4096 + 1)
    chunks = way(store, data, tmp_path)
    assert sorted(seen) == sorted(c.name for c in chunks)
    assert (
        SelfEncryptor.from_data_map(SelfEncryptor(data, CFG).encrypt()[0], store, CFG).decrypt()
        == data
    )


def test_defaults_come_back_only_below_an_override_of_a_write() -> None:
    """Which members a class keeps: its own ``put_named``/``batch`` where it defines them, the
    defaults (derived from ``store``) where a subclass hooks a write below them."""

    class Reader(DirectoryChunkStore):
        def retrieve(self, info: ChunkInfo) -> bytes:
            return super().retrieve(info)

    class Named(DirectoryChunkStore):
        def put_named(self, chunk: object) -> None:
            raise AssertionError("not called here")

    hooked = _hooked(DirectoryChunkStore, [])
    assert Reader.put_named is DirectoryChunkStore.put_named  # reads only: the fast path stays
    assert Reader.batch is DirectoryChunkStore.batch
    assert hooked.put_named is ChunkStore.put_named  # a write hook: through store()
    assert hooked.batch is ChunkStore.batch
    assert Named.batch is ChunkStore.batch  # its own put_named: a batch must call it
    assert CachingChunkStore.put_named is WrappingStore.put_named
    assert CachingChunkStore.batch is WrappingStore.batch
