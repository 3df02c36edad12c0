"""File twins: encrypt_file/decrypt_file equal the in-memory engine, and a failure never leaves
a half-written chunk or output file that looks valid."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pqselfenc import (
    DirectoryChunkStore,
    EncryptionConfig,
    MemoryChunkStore,
    ParallelConfig,
    SelfEncryptor,
)
from pqselfenc.core import _primitives as P
from pqselfenc.core.stores import directory
from pqselfenc.error import ChunkStoreError, EncryptionError, IntegrityError
from pqselfenc.memory import MemoryConfig
from pqselfenc.streaming import decrypt_file, encrypt_file
from tests._stream_helpers import CountingStore

CHUNK = 128
CFG = EncryptionConfig(chunk_size=CHUNK, min_chunks=3, parallel=ParallelConfig(max_threads=2))
SIZES = [0, 1, 2, 3, CHUNK, 3 * CHUNK - 1, 3 * CHUNK, 3 * CHUNK + 1, 20 * CHUNK, 20 * CHUNK + 5]


def write(tmp_path: Path, data: bytes, name: str = "in.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("size", SIZES)
def test_file_round_trip_equals_in_memory(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    store = DirectoryChunkStore(tmp_path / "store", fsync=False)
    data_map = encrypt_file(write(tmp_path, data), store, CFG)
    ref_map, ref_chunks = SelfEncryptor(data, CFG).encrypt()
    assert data_map.to_bytes() == ref_map.to_bytes()
    assert sorted(i.name for i in store) == [c.name for c in ref_chunks]
    out = tmp_path / "out.bin"
    decrypt_file(data_map, store, out, CFG)
    assert out.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.bin", "out.bin", "store"]


def test_small_memory_bound_and_secret(tmp_path: Path) -> None:
    cfg = CFG.with_convergence_secret(bytes(range(32)))
    data = os.urandom(50 * CHUNK + 3)
    store = MemoryChunkStore()
    memory = MemoryConfig(max_total_memory=6 * CHUNK)
    data_map = encrypt_file(write(tmp_path, data), store, cfg, memory=memory)
    assert data_map == SelfEncryptor(data, cfg).encrypt()[0]
    decrypt_file(data_map, store, tmp_path / "out", cfg, memory=memory)
    assert (tmp_path / "out").read_bytes() == data
    with pytest.raises(ValueError, match="max_total_memory"):
        encrypt_file(write(tmp_path, data), store, cfg, memory=MemoryConfig(3 * CHUNK))
    with pytest.raises(EncryptionError, match="convergence secret"):
        decrypt_file(data_map, store, tmp_path / "other", CFG)
    assert not (tmp_path / "other").exists()


def test_tampered_chunk_leaves_no_output(tmp_path: Path) -> None:
    data = os.urandom(30 * CHUNK)
    store = MemoryChunkStore()
    data_map = encrypt_file(write(tmp_path, data), store, CFG)
    counting = CountingStore(store, verifies=False)
    victim = data_map.chunks[17]
    counting.tamper[victim.name] = store.retrieve(victim)[:-1] + b"\x00"
    out = tmp_path / "out.bin"
    out.write_bytes(b"previous content")
    with pytest.raises(IntegrityError, match="chunk 17"):
        decrypt_file(data_map, counting, out, CFG)
    assert out.read_bytes() == b"previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.bin", "out.bin"]


def test_store_failure_mid_file_leaves_no_half_written_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_replace, calls = os.replace, []

    def failing_replace(src: str, dst: str, **dir_fds: int) -> None:
        calls.append(dst)
        if len(calls) == 6:
            raise OSError(28, "No space left on device")
        real_replace(src, dst, **dir_fds)

    monkeypatch.setattr(directory.os, "replace", failing_replace)
    store = DirectoryChunkStore(tmp_path / "store")
    with pytest.raises(ChunkStoreError, match="No space left"):
        encrypt_file(write(tmp_path, os.urandom(40 * CHUNK)), store, CFG)
    stored = list(store)
    assert 0 < len(stored) < 40
    for info in stored:  # every visible chunk is whole: it hashes to its name
        assert P.chunk_name(store.path_of(info).read_bytes()) == info.name
    assert list((tmp_path / "store").glob("*/.tmp-*")) == []


def test_unreadable_input_and_unwritable_output(tmp_path: Path) -> None:
    store = MemoryChunkStore()
    with pytest.raises(EncryptionError, match="cannot read"):
        encrypt_file(tmp_path / "missing", store, CFG)
    with pytest.raises(EncryptionError, match="cannot read"):
        encrypt_file(tmp_path, store, CFG)
    data_map = encrypt_file(write(tmp_path, b"x" * 1000), store, CFG)
    with pytest.raises(EncryptionError, match="cannot write"):
        decrypt_file(data_map, store, tmp_path / "no" / "such" / "dir" / "out", CFG)
    with pytest.raises(EncryptionError, match="cannot write"):
        decrypt_file(data_map, store, tmp_path, CFG)  # a directory is not replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.bin"]
    with pytest.raises(TypeError):
        encrypt_file(write(tmp_path, b"x"), {}, CFG)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        decrypt_file(b"map", store, tmp_path / "o", CFG)  # type: ignore[arg-type]
