"""File twins: encrypt_file/decrypt_file equal the in-memory engine, and a failure never leaves
a half-written chunk or output file that looks valid."""

from __future__ import annotations

import os
import tracemalloc
from functools import partial
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
from pqselfenc.core import files
from pqselfenc.core._stream import StreamEncryption
from pqselfenc.core.stores import directory
from pqselfenc.error import ChunkStoreError, EncryptionError, IntegrityError
from pqselfenc.memory import MemoryConfig
from pqselfenc.streaming import decrypt_file, encrypt_file
from tests._cli_helpers import clean_env, run_with_peak_rss
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


# -- the small-input fast path (read once, encrypt in memory) ----------------------------------

AROUND = [0, 1, 2 * CHUNK, 3 * CHUNK - 2, 3 * CHUNK - 1, 3 * CHUNK, 3 * CHUNK + 1, 4 * CHUNK]


@pytest.mark.parametrize("min_chunks", [1, 3, 5])
@pytest.mark.parametrize("size", AROUND)
def test_read_once_path_is_byte_identical_to_the_stream_and_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, min_chunks: int
) -> None:
    """Below ``min_chunks * chunk_size`` the file is read once and encrypted in memory; at and
    above it is streamed. Forcing the stream for every size gives the same map and chunks."""
    cfg = EncryptionConfig(chunk_size=CHUNK, min_chunks=min_chunks,
                           parallel=ParallelConfig(max_threads=2))  # fmt: skip
    data = os.urandom(size)
    path = write(tmp_path, data)
    fast, streamed = MemoryChunkStore(), MemoryChunkStore()
    fast_map = encrypt_file(path, fast, cfg)
    real_fstat = files.os.fstat
    monkeypatch.setattr(files.os, "fstat", lambda fd: _sized(real_fstat(fd), 1 << 40))
    monkeypatch.setattr(files, "_check_size", lambda size, config: None)
    streamed_map = encrypt_file(path, streamed, cfg)  # "too big": the stream path
    expected, chunks = SelfEncryptor(data, cfg).encrypt()
    assert fast_map.to_bytes() == streamed_map.to_bytes() == expected.to_bytes()
    assert _contents(fast) == _contents(streamed) == {c.name: c.content for c in chunks}


def _contents(store: MemoryChunkStore) -> dict[bytes, bytes]:
    return {info.name: store.retrieve(info) for info in store}


def test_a_file_that_grows_past_the_small_bound_while_read_is_streamed_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(7 * CHUNK + 3)
    path = write(tmp_path, data)
    real_fstat = files.os.fstat
    monkeypatch.setattr(files.os, "fstat", lambda fd: _sized(real_fstat(fd), 10))  # "10 bytes"
    data_map = encrypt_file(path, MemoryChunkStore(), CFG)
    assert data_map.to_bytes() == SelfEncryptor(data, CFG).encrypt()[0].to_bytes()


def _sized(st: os.stat_result, size: int) -> os.stat_result:
    fields = list(st)
    fields[6] = size  # st_size
    return os.stat_result(fields)


def test_a_small_file_with_a_huge_chunk_size_takes_memory_for_its_bytes_only(
    tmp_path: Path,
) -> None:
    """``--chunk-size 1G`` on a 5 KB file: neither the file path nor a stream allocates a
    chunk-sized buffer up front (the first piece's buffer grows with the input)."""
    cfg = EncryptionConfig(chunk_size=1 << 30, parallel=ParallelConfig(max_threads=1))
    data = os.urandom(5000)
    path = write(tmp_path, data)
    tracemalloc.start()
    try:
        data_map = encrypt_file(path, MemoryChunkStore(), cfg)
        memory = MemoryConfig().fit_encrypt(cfg.chunk_size, cfg.min_chunks)  # as the CLI does
        stream = StreamEncryption(cfg, lambda chunk: None, memory)
        for _ in range(50):
            stream.write(data[:100])
        stream_map = stream.finish()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak
    expected = SelfEncryptor(data, cfg).encrypt()[0]
    assert data_map.to_bytes() == expected.to_bytes()
    assert stream_map.to_bytes() == SelfEncryptor(data[:100] * 50, cfg).encrypt()[0].to_bytes()


def peak_rss_mib(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Run the command ``ARGV`` in a child (it must succeed); its peak RSS in MiB, from the
    child's own ``VmHWM`` (``run_with_peak_rss``): ``ru_maxrss`` from ``wait4`` also counts the
    process it was forked from, so a full pytest session's 370 MiB failed the bound)."""
    peak, done = run_with_peak_rss(argv, env, cwd)
    assert done.returncode == 0, done.stderr[-2000:]
    return peak / (1 << 20)


def test_the_command_with_a_huge_chunk_size_stays_small_on_a_small_file(tmp_path: Path) -> None:
    """``pqselfenc encrypt --chunk-size 1G small_file`` took a 1 GiB buffer (peak RSS 1,054 MiB
    measured before the fix, 31 MiB after): the buffer is sized from the file, not the chunk
    size. The bound leaves room for the interpreter and a loaded import, not for a chunk."""
    data = write(tmp_path, os.urandom(5000))
    env = clean_env(tmp_path / "home")
    encrypt = ["encrypt", data.name, "--chunk-size", "1G", "--store", "c", "--out", "m", "-q"]
    assert peak_rss_mib(encrypt, tmp_path, env) < 200
    decrypt = ["decrypt", "m", "--store", "c", "--out", "o", "-q"]
    assert peak_rss_mib(decrypt, tmp_path, env) < 200
    assert (tmp_path / "o").read_bytes() == data.read_bytes()


def test_the_first_piece_grows_to_a_whole_chunk_and_the_output_is_unchanged() -> None:
    cfg = EncryptionConfig(chunk_size=200 << 10, min_chunks=3,
                           parallel=ParallelConfig(max_threads=2))  # fmt: skip
    data = os.urandom(3 * (200 << 10) + 12345)
    out: dict[bytes, bytes] = {}
    stream = StreamEncryption(cfg, lambda chunk: out.setdefault(chunk.name, chunk.content))
    assert len(stream._fill) == 64 << 10  # starts small
    view = memoryview(data)
    while view:
        n = stream.write_from(partial(_copy, view=view))
        view = view[n:]
    expected, chunks = SelfEncryptor(data, cfg).encrypt()
    assert stream.finish().to_bytes() == expected.to_bytes()
    assert out == {c.name: c.content for c in chunks}


def _copy(buf: memoryview, *, view: memoryview) -> int:
    n = min(len(buf), len(view), 50_000)  # reads of odd sizes, across the growth points
    buf[:n] = view[:n]
    return n
