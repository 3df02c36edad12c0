"""The directory store shared with gc: checked deduplication, refreshed stamps, lock files on
disk (format, links, a writer killed holding one), sweeping, and the command line's gc, stats
and unlock (docs/stores.md, "Sharing a store and garbage collection")."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _cli_helpers import run
from _gc_support import CFG, decrypts, encrypt, names, plant_lock, stored

from pqselfenc import DirectoryChunkStore, SelfEncryptor
from pqselfenc.core.gc import collect_garbage
from pqselfenc.error import ChunkStoreError, StoreLockedError

HOUR = 3600.0


def one_chunk(store: DirectoryChunkStore, data: bytes) -> tuple[Path, bytes]:
    """The path and bytes of the first chunk ``data`` encrypts to (not yet stored)."""
    chunk = SelfEncryptor(data, CFG).encrypt()[1][0]
    return store.path_of(chunk.info), chunk.content


def put(store: DirectoryChunkStore, data: bytes) -> None:
    with store.batch() as sink:
        for chunk in SelfEncryptor(data, CFG).encrypt()[1]:
            sink(chunk)


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


# -- checked deduplication ---------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["same size", "shorter", "longer", "symlink", "fifo"])
def test_dedup_reuses_only_an_exact_copy(tmp_path: Path, damage: str) -> None:
    store, data = DirectoryChunkStore(tmp_path / "s"), os.urandom(3000)
    path, chunk = one_chunk(store, data)
    path.parent.mkdir(parents=True)
    target = tmp_path / "elsewhere"
    target.write_bytes(b"not yours")
    if damage == "symlink":
        path.symlink_to(target)
    elif damage == "fifo":
        os.mkfifo(path)
    else:
        size = {"same size": len(chunk), "shorter": len(chunk) - 1, "longer": len(chunk) + 1}
        path.write_bytes(os.urandom(size[damage]))
    put(store, data)
    entry = os.lstat(path)
    assert stat.S_ISREG(entry.st_mode) and path.read_bytes() == chunk
    assert target.read_bytes() == b"not yours"  # a link is replaced, never written through


def test_dedup_refreshes_an_old_chunk_in_place_and_a_fresh_one_not_at_all(tmp_path: Path) -> None:
    store, data = DirectoryChunkStore(tmp_path), os.urandom(3000)
    put(store, data)
    path, _ = one_chunk(store, data)
    age(path, HOUR)
    inode = os.stat(path).st_ino
    with store.writing():
        start = store.locks().session_start
        assert start is not None
        put(store, data)
        after = os.stat(path)
        assert after.st_ino == inode and after.st_mtime_ns / 1e9 >= start  # touched, not copied
        put(store, data)
        assert os.stat(path).st_mtime_ns == after.st_mtime_ns  # stamped this session already


def test_dedup_writes_again_a_chunk_it_may_not_touch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, data = DirectoryChunkStore(tmp_path), os.urandom(3000)
    put(store, data)
    path, chunk = one_chunk(store, data)
    age(path, HOUR)
    inode, real = os.stat(path).st_ino, os.utime

    def not_owner(target: object, *args: object, **kwargs: object) -> None:
        if isinstance(target, int):  # futimens on a chunk someone else owns
            raise PermissionError(1, "Operation not permitted")
        real(target, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "utime", not_owner)
    put(store, data)
    assert os.stat(path).st_ino != inode and path.read_bytes() == chunk
    assert time.time() - os.stat(path).st_mtime < 60


def test_a_refreshed_stamp_is_fsynced_before_the_batch_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, data = DirectoryChunkStore(tmp_path), os.urandom(3000)
    put(store, data)
    path, _ = one_chunk(store, data)
    age(path, HOUR)
    synced, real = [], os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    put(store, data)
    assert str(path) in synced


# -- lock files ---------------------------------------------------------------------------------


def test_a_lock_file_names_its_holder_and_the_session_start(tmp_path: Path) -> None:
    store = DirectoryChunkStore(tmp_path)
    with store.writing():
        [lock] = (tmp_path / "locks").glob("shared-*")
        body = json.loads(lock.read_text())
        start = store.locks().session_start
        assert body["format"] == "pqselfenc-lock/1" and body["kind"] == "shared"
        assert body["pid"] == os.getpid() and body["start"] == start
        assert {"host", "boot", "pidns", "pid_start", "user", "created"} <= set(body)
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    [record] = (tmp_path / "locks" / "ended").iterdir()
    assert record.name == f"{int(start * 1000)}-{lock.name.removeprefix('shared-')}"
    assert list((tmp_path / "locks").glob("shared-*")) == []


def test_the_lock_folder_is_never_followed_through_a_link(tmp_path: Path) -> None:
    store, elsewhere = DirectoryChunkStore(tmp_path / "s"), tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "s" / "locks").symlink_to(elsewhere)
    with pytest.raises(ChunkStoreError, match="cannot open a lock"):
        encrypt(store, os.urandom(3000))
    assert list(elsewhere.iterdir()) == []
    with pytest.raises(ChunkStoreError):
        collect_garbage(store, [encrypt(DirectoryChunkStore(tmp_path / "t"), b"x" * 3000)])


WRITER = """
import sys, time
from pqselfenc import DirectoryChunkStore, SelfEncryptor, EncryptionConfig
store = DirectoryChunkStore(sys.argv[1])
with store.writing():
    SelfEncryptor(bytes.fromhex(sys.argv[2]), EncryptionConfig(chunk_size=1024),
                  chunk_store=store).encrypt()
    print("ready", flush=True)
    time.sleep(60)
"""


def test_a_writer_killed_holding_its_lock_leaves_a_stale_lock_gc_reports(tmp_path: Path) -> None:
    root, data = tmp_path / "s", os.urandom(3000)
    keep = encrypt(DirectoryChunkStore(root), os.urandom(2000))
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), data.hex()], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    writer.stdout.close()
    store = DirectoryChunkStore(root)
    [info] = store.locks().inspect()
    assert info.dead and info.stale and info.holder and info.holder["pid"] == writer.pid
    with pytest.raises(StoreLockedError, match=rf"stale shared lock {info.lock_id} .*process gone"):
        collect_garbage(store, [keep], delete=True, grace=0)
    plan = collect_garbage(
        store, [keep], delete=True, grace=HOUR, remove_stale_locks=[info.lock_id]
    )
    # what the dead writer wrote stays for the grace period: it may have written a map of it
    assert plan.removed_locks[0].lock_id == info.lock_id and plan.deleted == 0
    assert names(SelfEncryptor(data, CFG).encrypt()[0]) <= stored(store)


def test_gc_sweeps_only_old_temp_files(tmp_path: Path) -> None:
    store = DirectoryChunkStore(tmp_path)
    keep = encrypt(store, os.urandom(3000))
    shard = next(p for p in tmp_path.iterdir() if len(p.name) == 2)
    old, new = shard / ".tmp-00000000000000aa", shard / ".tmp-00000000000000bb"
    old.write_bytes(b"half a chunk")
    new.write_bytes(b"a chunk being written")
    (tmp_path / "locks" / ".tmp-00000000000000cc").write_bytes(b"half a lock")
    age(old, 2 * HOUR)
    age(tmp_path / "locks" / ".tmp-00000000000000cc", 2 * HOUR)
    plan = collect_garbage(store, [keep], delete=True, grace=HOUR)
    assert plan.swept == 2 and not old.exists() and new.exists()


# -- the command line ---------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PQSELFENC_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    for name, size in (("keep.bin", 5000), ("drop.bin", 3000)):
        (tmp_path / name).write_bytes(os.urandom(size))
    return tmp_path


def test_cli_gc_says_what_it_would_delete_and_how_many_maps_it_was_given(
    capsys: pytest.CaptureFixture[str], cli: Path
) -> None:
    assert run(capsys, "encrypt", "keep.bin", "drop.bin", "--store", "c", "--out", ".").code == 0
    dry = run(capsys, "store", "gc", "keep.bin.map", "--store", "c")
    assert dry.code == 0
    assert "1 maps given: they reference 3 of 6 chunks; 3 unreferenced" in dry.out
    assert "3 unreferenced chunks are kept: younger than the grace period (1 d)" in dry.out
    assert "would delete 0 of 6 chunks (0 bytes)" in dry.out
    for chunk in DirectoryChunkStore(cli / "c").stored_chunks():
        age(DirectoryChunkStore(cli / "c").path_of(chunk.info), 2 * 86400)
    for record in (cli / "c" / "locks" / "ended").iterdir():
        age(record, 2 * 86400)  # the writer's session ended long ago too
    dry = run(capsys, "store", "gc", "keep.bin.map", "--store", "c")
    assert "would delete 3 of 6 chunks" in dry.out and "run again with --delete" in dry.out
    done = run(capsys, "store", "gc", "keep.bin.map", "--store", "c", "--delete", "--json")
    doc = json.loads(done.out)
    assert (doc["maps"], doc["deleted"], doc["delete"], doc["store"]) == (1, 3, True, "c")
    assert doc["freed_bytes"] > 3000 and doc["grace"] == 86400
    assert run(capsys, "decrypt", "keep.bin.map", "--store", "c", "--out", "k").code == 0


def test_cli_gc_refuses_while_a_writer_holds_the_store(
    capsys: pytest.CaptureFixture[str], cli: Path
) -> None:
    run(capsys, "encrypt", "keep.bin", "--store", "c")
    with DirectoryChunkStore(cli / "c").writing():
        result = run(capsys, "store", "gc", "keep.bin.map", "--store", "c", "--delete")
    assert result.code == 1
    assert "gc cannot start: the store is held by shared lock" in result.error_line()
    assert "pqselfenc store unlock ID" in result.err  # the hint


def test_cli_stats_lists_locks_and_unlock_removes_only_stale_ones(
    capsys: pytest.CaptureFixture[str], cli: Path
) -> None:
    run(capsys, "encrypt", "keep.bin", "--store", "c")
    store = DirectoryChunkStore(cli / "c")
    with store.writing():
        stats = json.loads(run(capsys, "store", "stats", "--store", "c", "--json").out)
        [lock] = stats["locks"]
        assert (lock["kind"], lock["pid"], lock["stale"]) == ("shared", os.getpid(), False)
        refused = run(capsys, "store", "unlock", lock["id"], "--store", "c")
        assert "is not stale: it was not removed" in refused.error_line()
    lock_file = cli / "c" / "locks" / f"exclusive-{'ab' * 8}"
    lock_file.write_text(json.dumps({"format": "pqselfenc-lock/1", "host": "elsewhere"}))
    age(lock_file, HOUR)
    text = run(capsys, "store", "stats", "--store", "c").out
    assert f"stale exclusive lock {'ab' * 8} (pid None on host elsewhere" in text
    assert run(capsys, "encrypt", "drop.bin", "--store", "c").code == 1  # writers refuse it
    removed = run(capsys, "store", "unlock", "ab" * 8, "--store", "c")
    assert removed.code == 0 and f"removed stale exclusive lock {'ab' * 8}" in removed.out
    assert run(capsys, "encrypt", "drop.bin", "--store", "c").code == 0
    assert decrypts(store, encrypt(store, b"y" * 3000), b"y" * 3000)


def test_cli_durations(capsys: pytest.CaptureFixture[str], cli: Path) -> None:
    run(capsys, "encrypt", "keep.bin", "--store", "c")
    for text, seconds in (("0", 0), ("90m", 5400), ("2.5h", 9000), ("7d", 604800), ("30s", 30)):
        doc = json.loads(run(capsys, "store", "gc", "keep.bin.map", "--store", "c",
                             "--grace", text, "--json").out)  # fmt: skip
        assert doc["grace"] == seconds
    bad = run(capsys, "store", "gc", "keep.bin.map", "--store", "c", "--grace=-1h")
    assert bad.code == 2 and "not a duration" in bad.err


@pytest.mark.parametrize("body", ["intact", "lost"])
def test_a_dead_writer_whose_lock_body_was_lost_leaves_every_chunk_protected(
    tmp_path: Path, body: str
) -> None:
    """A writer's session ran for three days and died; its lock was last refreshed an hour ago
    (a directory store's refresh only moves the mtime). Its lock body is intact, or was lost in
    a crash: unreadable, the start is unknown, so the session it leaves on ``store unlock``
    protects everything for the grace period, never only what came after the last refresh."""
    store = DirectoryChunkStore(tmp_path)
    keep, data = encrypt(store, os.urandom(3000)), os.urandom(3000)
    written = encrypt(store, data)  # what the dead writer wrote, its map never given to gc
    now = time.time()
    for info in written.chunks:
        os.utime(store.path_of(info), (now - 3 * 86400,) * 2)
    ghost = plant_lock(store.locks().space, "shared", host="elsewhere", pid=7)
    lock = tmp_path / "locks" / f"shared-{ghost}"
    held = {**json.loads(lock.read_bytes()), "start": now - 3 * 86400}
    lock.write_text(json.dumps(held) if body == "intact" else "")
    os.utime(lock, (now - 3600,) * 2)  # stale
    plan = collect_garbage(store, [keep], delete=True, grace=86400, remove_stale_locks=[ghost])
    assert plan.deleted == 0 and decrypts(store, written, data)
