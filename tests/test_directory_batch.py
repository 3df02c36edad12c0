"""The directory store's batched writes (``encrypt_file`` goes through ``batch``): fsyncs run
on I/O threads, folders are fsynced once at the end, and still no name ever appears before its
content is durable, no map is returned before every chunk is, duplicates are written once, and
a failure or a SIGKILL at any step leaves only whole chunks under final names."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from pqselfenc import DirectoryChunkStore, EncryptionConfig, ParallelConfig, SelfEncryptor
from pqselfenc.core import _durable, _syncfs
from pqselfenc.core import _primitives as P
from pqselfenc.core.stores import directory
from pqselfenc.error import ChunkStoreError
from pqselfenc.streaming import decrypt_file, encrypt_file

CHUNK = 128
CFG = EncryptionConfig(chunk_size=CHUNK, min_chunks=3, parallel=ParallelConfig(max_threads=2))


class Recorder:
    """Logs fsync (by path), syncfs, temp files written and replace calls, from every thread,
    in the order they happen."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, ...]] = []
        self.lock = threading.Lock()
        real_fsync, real_replace = os.fsync, os.replace
        real_syncfs, real_closed = _syncfs._syncfs, _durable.write_closed

        def syncfs(fd: int) -> None:
            self.add("syncfs-start", str(threading.get_ident()))
            real_syncfs(fd)
            self.add("syncfs", str(threading.get_ident()))

        def write_closed(dir_fd: int, data: bytes, **kwargs: object) -> str:
            name = real_closed(dir_fd, data, **kwargs)  # type: ignore[arg-type]
            self.add("written", at(name, dir_fd))
            return name

        def fsync(fd: int) -> None:
            real_fsync(fd)
            self.add("fsync", os.readlink(f"/proc/self/fd/{fd}"))

        def replace(src: str, dst: str, **dir_fds: int) -> None:
            real_replace(src, dst, **dir_fds)
            self.add(
                "replace", at(src, dir_fds.get("src_dir_fd")), at(dst, dir_fds.get("dst_dir_fd"))
            )

        monkeypatch.setattr(directory.os, "fsync", fsync)
        monkeypatch.setattr(directory.os, "replace", replace)
        monkeypatch.setattr(_syncfs, "_syncfs", syncfs)
        monkeypatch.setattr(_durable, "write_closed", write_closed)

    def add(self, *event: str) -> None:
        with self.lock:
            self.events.append(event)

    def replaced(self) -> list[tuple[int, str, str]]:
        return [(i, e[1], e[2]) for i, e in enumerate(self.events) if e[0] == "replace"]

    def fsynced_at(self, path: str) -> list[int]:
        return [i for i, e in enumerate(self.events) if e[0] == "fsync" and e[1] == path]

    def durable_between(self, path: str, after: int, before: int) -> bool:
        """Whether ``path`` was fsynced, or its filesystem synced by a ``syncfs`` that began
        after ``after``, before event ``before``."""
        return any(after < s < e < before for s, e in self.syncfs_calls()) or any(
            i < before for i in self.fsynced_at(path)
        )

    def syncfs_calls(self) -> list[tuple[int, int]]:
        """(start, end) event positions of every syncfs call (paired by thread)."""
        started: dict[str, int] = {}
        calls = []
        for i, event in enumerate(self.events):
            if event[0] == "syncfs-start":
                started[event[1]] = i
            elif event[0] == "syncfs":
                calls.append((started.pop(event[1]), i))
        return calls

    def written_at(self, path: str) -> int:
        return next((i for i, e in enumerate(self.events) if e == ("written", path)), -1)


@pytest.fixture(params=["syncfs", "fsync"])
def durability(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways a wave is made durable: syncfs (trusted here) and an fsync of each file."""
    if request.param == "fsync":
        monkeypatch.setattr(_syncfs, "trusted", lambda fd, dev=None: False)
    elif not _syncfs.trusted(os.open(".", os.O_RDONLY)):
        pytest.skip("syncfs is not trusted on this filesystem")
    return str(request.param)


def at(name: str, dir_fd: int | None) -> str:
    """The full path of ``name`` as resolved relative to ``dir_fd`` (or as given)."""
    return (
        os.fspath(name)
        if dir_fd is None
        else os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), name)
    )


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "in.bin"
    path.write_bytes(data)
    return path


def test_content_is_durable_before_its_name_and_names_before_the_map(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durability: str
) -> None:
    data = os.urandom(40 * CHUNK + 7)
    rec = Recorder(monkeypatch)
    store = DirectoryChunkStore(tmp_path / "store")
    data_map = encrypt_file(write(tmp_path, data), store, CFG)
    rec.add("returned")
    replaced = rec.replaced()
    assert len(replaced) == len(list(store)) == 41
    for at, src, _dst in replaced:  # the temp file was fsynced before it got its name
        assert rec.durable_between(src, rec.written_at(src), at), src
    end = len(rec.events)
    for folder in {os.path.dirname(dst) for _, _, dst in replaced}:
        last = max(at for at, _, dst in replaced if os.path.dirname(dst) == folder)
        assert rec.durable_between(folder, last, end), folder
        if durability == "fsync":
            assert any(i > last for i in rec.fsynced_at(folder)), folder  # the name is durable
    last_rename = replaced[-1][0]
    assert any(i > last_rename for i in rec.fsynced_at(str(store.root)))  # new folders too
    if durability == "syncfs":
        assert len(rec.syncfs_calls()) == 2  # one wave, then the folders
    assert rec.events[-1][0] == "returned"  # nothing ran on after the map was returned
    expected, chunks = SelfEncryptor(data, CFG).encrypt()
    assert data_map.to_bytes() == expected.to_bytes()
    assert {i.name for i in store} == {c.name for c in chunks}
    for chunk in chunks:
        assert store.path_of(chunk.info).read_bytes() == chunk.content


def test_duplicates_in_one_batch_are_written_once_and_present_names_never(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durability: str
) -> None:
    data = b"\x5a" * (30 * CHUNK)  # equal content and equal neighbours: 30 equal chunks
    rec = Recorder(monkeypatch)
    store = DirectoryChunkStore(tmp_path / "store")
    data_map = encrypt_file(write(tmp_path, data), store, CFG)
    assert len({c.name for c in data_map.chunks}) == 1
    assert len(rec.replaced()) == 1 and len(list(store)) == 1
    path = store.path_of(data_map.chunks[0])
    before = path.stat()
    rec.events.clear()
    assert encrypt_file(write(tmp_path, data), store, CFG) == data_map
    assert rec.replaced() == []  # already stored: not rewritten
    assert path.stat().st_ino == before.st_ino
    # but its folder is made durable for our map
    assert rec.durable_between(str(path.parent), -1, len(rec.events))
    assert list(tmp_path.glob("store/*/.tmp-*")) == []


@pytest.mark.parametrize(
    ("step", "nth", "wave"),
    [("fsync", 9, 0), ("write", 9, 0), ("_syncfs", 1, 0), ("fsync", 9, 4), ("write", 9, 4)],
)
def test_a_failure_mid_batch_is_a_store_error_and_leaves_only_whole_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, nth: int, wave: int
) -> None:
    """With the default waves all 60 small chunks are one wave: a failure names none of them.
    With waves of 4 (``wave``) the waves before the failure are named, the rest are not."""
    if wave:
        monkeypatch.setattr(directory, "_WAVE_FILES", wave)
    where = _syncfs if step == "_syncfs" else directory.os
    if step == "fsync":  # every file fsynced: the failure hits a chunk's own fsync
        monkeypatch.setattr(_syncfs, "trusted", lambda fd, dev=None: False)
    real = getattr(where, step)
    calls: list[int] = []
    lock = threading.Lock()

    def failing(*args: object) -> object:
        with lock:
            calls.append(1)
            fail = len(calls) == nth
        if fail:
            raise OSError(5, "Input/output error")
        return real(*args)

    monkeypatch.setattr(where, step, failing)
    store = DirectoryChunkStore(tmp_path / "store")
    with pytest.raises(ChunkStoreError, match="Input/output error"):
        encrypt_file(write(tmp_path, os.urandom(60 * CHUNK)), store, CFG)
    monkeypatch.undo()
    stored = list(store)
    assert 0 < len(stored) < 60 if wave else stored == []
    for info in stored:  # every visible chunk is whole: it hashes to its name
        assert P.chunk_name(store.path_of(info).read_bytes()) == info.name
    assert list(tmp_path.glob("store/*/.tmp-*")) == []


def test_an_unexpected_error_on_an_io_thread_is_raised_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only OSError: whatever stops a rename must stop the map from being returned."""
    real_replace, calls = os.replace, []

    def replace(src: str, dst: str, **dir_fds: int) -> None:
        calls.append(dst)
        if len(calls) == 3:
            raise RuntimeError("rename interrupted")
        real_replace(src, dst, **dir_fds)

    monkeypatch.setattr(directory.os, "replace", replace)
    store = DirectoryChunkStore(tmp_path / "store")
    with pytest.raises(RuntimeError, match="rename interrupted"):
        encrypt_file(write(tmp_path, os.urandom(40 * CHUNK)), store, CFG)


CHILD = """
import os, signal, stat, sys, threading
from pathlib import Path
from pqselfenc import EncryptionConfig, ParallelConfig
from pqselfenc.core.stores import DirectoryChunkStore, directory
from pqselfenc.streaming import encrypt_file

from pqselfenc.core import _syncfs
mode, point, n, source, root, map_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), *sys.argv[4:]
real_fsync, real_replace, count, lock = os.fsync, os.replace, [0], threading.Lock()

def hit(kind):
    with lock:
        if kind == point:
            count[0] += 1
            if count[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)

def fsync(fd):
    hit("dir-fsync" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file-fsync")
    real_fsync(fd)

def replace(src, dst, **dir_fds):
    hit("replace")
    real_replace(src, dst, **dir_fds)

real_syncfs = _syncfs._syncfs

def syncfs(fd):
    hit("syncfs")
    real_syncfs(fd)

directory.os.fsync, directory.os.replace, _syncfs._syncfs = fsync, replace, syncfs
if mode == "fsync":
    _syncfs.trusted = lambda fd, dev=None: False
cfg = EncryptionConfig(chunk_size=128, min_chunks=3, parallel=ParallelConfig(max_threads=2))
data_map = encrypt_file(source, DirectoryChunkStore(root), cfg)
Path(map_path).write_bytes(data_map.to_bytes())
"""


KILL_POINTS = [
    ("fsync", "file-fsync", 1),  # first temp file written, nothing named yet
    ("fsync", "file-fsync", 23),  # some chunks fsynced, none named (one wave)
    ("fsync", "replace", 1),
    ("fsync", "replace", 31),
    ("fsync", "dir-fsync", 1),  # every chunk named, folders not yet durable
    ("fsync", "dir-fsync", 5),
    ("syncfs", "syncfs", 1),  # every temp file written, none named
    ("syncfs", "replace", 17),  # the wave durable, half of it named
    ("syncfs", "syncfs", 2),  # every chunk named, folders not yet durable
    ("syncfs", "dir-fsync", 1),  # the store's root, after new shard folders
]


@pytest.mark.parametrize(("mode", "point", "n"), KILL_POINTS)
def test_sigkill_at_any_step_leaves_only_whole_chunks_and_no_map(
    tmp_path: Path, mode: str, point: str, n: int
) -> None:
    data = os.urandom(40 * CHUNK)
    source, root, map_path = write(tmp_path, data), tmp_path / "store", tmp_path / "map"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), mode, point, str(n), str(source),
         str(root), str(map_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert not map_path.exists()
    store = DirectoryChunkStore(root)
    for info in store:
        store.retrieve(info)  # verifies the name: no partial chunk is visible under a name
    for tmp in root.glob("*/.tmp-*"):
        assert stat.S_ISREG(tmp.stat().st_mode)  # leftovers are only temp files
    store.clean_temp()
    data_map = encrypt_file(source, store, CFG)  # a rerun completes and decrypts
    decrypt_file(data_map, store, tmp_path / "out.bin", CFG)
    assert (tmp_path / "out.bin").read_bytes() == data


def test_full_waves_settle_while_the_batch_runs_and_each_keeps_the_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durability: str
) -> None:
    monkeypatch.setattr(directory, "_WAVE_FILES", 8)
    data = os.urandom(40 * CHUNK + 7)
    rec = Recorder(monkeypatch)
    store = DirectoryChunkStore(tmp_path / "store")
    data_map = encrypt_file(write(tmp_path, data), store, CFG)
    replaced = rec.replaced()
    assert len(replaced) == len(list(store)) == 41
    for at, src, _dst in replaced:
        assert rec.durable_between(src, rec.written_at(src), at), src
    if durability == "syncfs":  # 6 waves (5 full, 1 at the end), then the folders
        assert len(rec.syncfs_calls()) == 7
    assert SelfEncryptor(data, CFG).encrypt()[0] == data_map
    assert list(tmp_path.glob("store/*/.tmp-*")) == []


# -- outside review 3: what another writer left is made durable before our map names it ------


def test_a_chunk_another_writer_left_in_our_session_is_made_durable_with_its_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durability: str
) -> None:
    """Another writer (here with ``fsync=False``: nothing of it durable) stores our chunks
    after our session began, so they carry a stamp within it. Before, such a chunk counted as
    durable and got no fsync, nor did the root for shards another writer made: on a
    filesystem without a trusted syncfs the map could outlive the chunks it names."""
    data = os.urandom(12 * CHUNK)
    store = DirectoryChunkStore(tmp_path / "store")
    with store.writing():
        expected = encrypt_file(write(tmp_path, data), DirectoryChunkStore(store.root, fsync=False),
                                CFG)  # fmt: skip
        rec = Recorder(monkeypatch)
        assert encrypt_file(write(tmp_path, data), store, CFG) == expected
        end = len(rec.events)
    assert rec.replaced() == []  # every chunk was found, none written again
    for info in expected.chunks:
        path = store.path_of(info)
        assert rec.fsynced_at(str(path)), path  # its bytes (and stamp) made durable by us
        assert rec.durable_between(str(path.parent), -1, end), path.parent
    assert rec.fsynced_at(str(store.root))  # the shards' entries, whoever made them


def test_the_one_chunk_path_makes_a_found_chunk_and_its_folders_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``store()`` outside a batch (the streaming API's path): a chunk already there, left by
    a writer that made nothing durable, is fsynced, and so are its shard and the root."""
    chunk = os.urandom(300)
    other = DirectoryChunkStore(tmp_path / "store", fsync=False)
    info = other.store(chunk)
    rec = Recorder(monkeypatch)
    assert DirectoryChunkStore(tmp_path / "store").store(chunk) == info
    path = other.path_of(info)
    assert rec.replaced() == []
    for target in (path, path.parent, other.root):
        assert rec.fsynced_at(str(target)), target


def test_a_new_store_root_is_durable_in_every_folder_it_was_made_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Recorder(monkeypatch)
    store = DirectoryChunkStore(tmp_path / "fresh" / "a" / "store")
    for folder in (tmp_path, tmp_path / "fresh", tmp_path / "fresh" / "a"):
        assert rec.fsynced_at(str(folder)), folder  # the new entry in it
    assert store.root.is_dir()


def test_the_syncfs_verdict_is_asked_of_the_filesystem_every_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device number is reused after an unmount: a verdict cached by it could call a FUSE
    mount that took the number trusted."""
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        kinds = iter([0xEF53, 0x65735546])  # ext4, then FUSE under the same st_dev
        monkeypatch.setattr(_syncfs, "_kernel_reports_errors", lambda: True)
        monkeypatch.setattr(_syncfs, "_filesystem_type", lambda fd: next(kinds))
        assert _syncfs.trusted(fd) and not _syncfs.trusted(fd)
    finally:
        os.close(fd)


def test_without_a_trusted_syncfs_a_small_chunk_is_fsynced_before_its_descriptor_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wave's own fsync reopens each file by name: a write error recorded on an inode
    evicted in between would be lost. So the bytes are fsynced on the descriptor that wrote
    them, before it is closed."""
    monkeypatch.setattr(_syncfs, "trusted", lambda fd: False)
    rec = Recorder(monkeypatch)
    encrypt_file(write(tmp_path, os.urandom(10 * CHUNK)), DirectoryChunkStore(tmp_path / "s"), CFG)
    written = [(i, e[1]) for i, e in enumerate(rec.events) if e[0] == "written"]
    assert written
    for at_, temp in written:
        assert any(i < at_ for i in rec.fsynced_at(temp)), temp
