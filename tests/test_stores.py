"""Every chunk store runs the conformance suite; then the directory store's own promises."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from _s3server import S3Server, s3_server  # noqa: F401  (s3_server is a fixture)
from store_conformance import StoreConformance, chunk_of

from pqselfenc import ChunkInfo, ChunkStore, DirectoryChunkStore, MemoryChunkStore
from pqselfenc.core.stores import S3ChunkStore
from pqselfenc.error import ChunkNotFound, ChunkStoreError


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    def store(self) -> MemoryChunkStore:
        return MemoryChunkStore()

    def plant(self, store: ChunkStore, info: ChunkInfo, content: bytes) -> None:
        assert isinstance(store, MemoryChunkStore)
        store._chunks[info.name] = content


class TestDirectoryStore(StoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> DirectoryChunkStore:
        return DirectoryChunkStore(tmp_path / "chunks", fsync=False)

    def plant(self, store: ChunkStore, info: ChunkInfo, content: bytes) -> None:
        assert isinstance(store, DirectoryChunkStore)
        path = store.path_of(info)
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content)


class TestDirectoryStoreWithFsync(TestDirectoryStore):
    """The default, durable configuration runs the same suite."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> DirectoryChunkStore:
        return DirectoryChunkStore(tmp_path / "chunks")


@pytest.mark.s3
class TestS3Store(StoreConformance):
    @pytest.fixture
    def store(self, s3_server: S3Server) -> Iterator[S3ChunkStore]:  # noqa: F811
        prefix = f"conformance/{uuid.uuid4().hex}"
        with S3ChunkStore(s3_server.bucket, prefix, **s3_server.credentials()) as store:
            yield store

    @pytest.fixture(autouse=True)
    def _server(self, s3_server: S3Server) -> None:  # noqa: F811
        self.server = s3_server

    def plant(self, store: ChunkStore, info: ChunkInfo, content: bytes) -> None:
        """Overwrite the object with a plain client, as a faulty disk or a bad actor would."""
        assert isinstance(store, S3ChunkStore)
        raw = self.server.client()
        try:
            raw.put_object(Bucket=store.bucket, Key=store.key_of(info), Body=content)
        finally:
            raw.close()


class DictStore(ChunkStore):
    """What a user might write: a dict, ``store`` and ``retrieve`` only, no verification."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def store(self, chunk: bytes) -> ChunkInfo:
        info = ChunkInfo.for_chunk(chunk)
        self.data.setdefault(info.name, bytes(chunk))
        return info

    def retrieve(self, info: ChunkInfo) -> bytes:
        try:
            return self.data[info.name]
        except KeyError:
            raise ChunkNotFound(f"no chunk {info.name[:4].hex()}") from None


class TestUserSubclass(StoreConformance):
    """The ``ChunkStore`` defaults: ``has`` via ``retrieve``; ``delete`` and listing refuse;
    the decryptor checks the names itself because ``verifies_on_retrieve`` is False."""

    lists = False
    deletes = False
    rehashes_named = True

    @pytest.fixture
    def store(self) -> DictStore:
        return DictStore()

    def plant(self, store: ChunkStore, info: ChunkInfo, content: bytes) -> None:
        assert isinstance(store, DictStore)
        store.data[info.name] = content


# -- DirectoryChunkStore specifics -------------------------------------------------------------


def test_directory_layout_is_sharded_by_two_hex_digits(tmp_path: Path) -> None:
    store = DirectoryChunkStore(tmp_path, fsync=False)
    infos = [store.store(chunk_of(100, seed=i)) for i in range(20)]
    for info in infos:
        path = tmp_path / info.hex_name[:2] / info.hex_name
        assert path.read_bytes() == store.retrieve(info)
    folders = {p.name for p in tmp_path.iterdir()}
    assert folders == {info.hex_name[:2] for info in infos}
    assert all(len(f) == 2 and int(f, 16) >= 0 for f in folders)


def test_directory_listing_ignores_temp_and_stray_files(tmp_path: Path) -> None:
    store = DirectoryChunkStore(tmp_path, fsync=False)
    info = store.store(b"real chunk")
    shard = tmp_path / info.hex_name[:2]
    (shard / ".tmp-abandoned").write_bytes(b"half a chunk")
    (shard / (info.hex_name[:-1] + "0.partial")).write_bytes(b"x")
    other = ChunkInfo.for_chunk(b"misplaced")
    (shard / other.hex_name).write_bytes(b"misplaced")  # 64 hex digits, wrong folder
    (tmp_path / "README").write_text("not a chunk")
    (tmp_path / "zz").mkdir()
    (tmp_path / "zz" / ("z" * 64)).write_bytes(b"not hex")
    assert list(store) == [info]
    assert store.clean_temp() == 1
    assert not (shard / ".tmp-abandoned").exists()
    assert list(store) == [info]


def test_directory_store_refuses_a_file_as_root(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ChunkStoreError, match="file"):
        DirectoryChunkStore(tmp_path / "file")


WRITER = textwrap.dedent(
    """
    import os, sys
    from pqselfenc.core.stores import DirectoryChunkStore

    root, mode = sys.argv[1], sys.argv[2]
    store = DirectoryChunkStore(root, fsync=mode == "fsync")
    real_replace = os.replace

    def replace(src, dst, **dir_fds):
        if mode == "hang-before-rename" and n == 3:
            print("renaming", flush=True)
            sys.stdin.readline()  # the parent kills us here
        real_replace(src, dst, **dir_fds)

    os.replace = replace
    base = os.urandom(4 << 20)
    n = 0
    while True:
        store.store(n.to_bytes(4, "big") + base)
        print("stored", n, flush=True)
        n += 1
    """
)


def _kill_writer(root: Path, mode: str, after: str) -> None:
    """Start a child that writes 4 MiB chunks into ``root``; SIGKILL it at line ``after``."""
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    try:
        for line in child.stdout:
            if line.strip() == after:
                break
        else:
            raise AssertionError(f"the writer ended before {after!r}")
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
        child.stdin.close()


def _assert_only_whole_chunks(store: DirectoryChunkStore) -> list[ChunkInfo]:
    infos = list(store)
    for info in infos:
        content = store.retrieve(info)  # verified: raises IntegrityError on a partial chunk
        assert len(content) == 4 + (4 << 20)
    return infos


def test_directory_crash_just_before_rename_leaves_only_a_temp_file(tmp_path: Path) -> None:
    store = DirectoryChunkStore(tmp_path, fsync=False)
    _kill_writer(tmp_path, "hang-before-rename", after="renaming")
    assert len(_assert_only_whole_chunks(store)) == 3  # chunks 0..2; chunk 3 never named
    temps = list(tmp_path.glob("??/.tmp-*"))
    assert len(temps) == 1 and temps[0].stat().st_size == 4 + (4 << 20)
    assert store.clean_temp() == 1
    assert len(list(store)) == 3


@pytest.mark.parametrize("mode", ["fsync", "nofsync"])
def test_directory_crash_mid_stream_leaves_no_partial_chunk(tmp_path: Path, mode: str) -> None:
    store = DirectoryChunkStore(tmp_path, fsync=False)
    _kill_writer(tmp_path, mode, after="stored 2")  # killed somewhere inside chunk 3 or 4
    assert len(_assert_only_whole_chunks(store)) >= 3
    store.clean_temp()
    assert list(tmp_path.glob("??/.tmp-*")) == []


def test_directory_store_error_names_no_full_hash(tmp_path: Path) -> None:
    store = DirectoryChunkStore(tmp_path, fsync=False)
    info = ChunkInfo.for_chunk(b"gone")
    with pytest.raises(ChunkNotFound) as caught:
        store.retrieve(info)
    assert info.hex_name not in str(caught.value)
    assert os.fspath(tmp_path) in str(caught.value)
