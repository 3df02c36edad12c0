"""Failures that used to come late or unnamed (issue 11/18 siblings).

* An input with more chunks than a DataMap names (``MAX_PARSE_ENTRIES``) used to be encrypted
  and stored in full, then refused by ``make_map``: now it is refused before any chunk is
  written (``SelfEncryptor``, ``encrypt_file`` from the file's size), and a stream stops at the
  first byte past the bound.
* A chunk that failed its name check inside a store that verifies on retrieve was reported by
  short name only: every ``IntegrityError`` of a decryption names the chunk's index too
  (CRYPTO.md 1), whichever path reads it.
"""

from __future__ import annotations

import hashlib
import re
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
from pqselfenc.core._stream import StreamEncryption
from pqselfenc.core._streaming import StreamDecryptor
from pqselfenc.core.files import decrypt_file, encrypt_file
from pqselfenc.error import EncryptionError, IntegrityError
from pqselfenc.memory import CacheConfig

LIMIT = 16
ONE = ParallelConfig(max_threads=1)
TINY = EncryptionConfig(chunk_size=4, min_chunks=3, parallel=ONE)


@pytest.fixture
def small_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "MAX_PARSE_ENTRIES", LIMIT)


def test_in_memory_input_over_the_bound_writes_nothing(small_limit: None) -> None:
    store = MemoryChunkStore()
    SelfEncryptor(bytes(4 * LIMIT), TINY, chunk_store=store).encrypt()  # exactly the bound
    written = len(list(store))
    with pytest.raises(EncryptionError, match=rf"needs {LIMIT + 1} chunks.*at least 5 bytes"):
        SelfEncryptor(b"\x01" * (4 * LIMIT + 1), TINY, chunk_store=store).encrypt()
    assert len(list(store)) == written


def test_encrypt_file_over_the_bound_writes_nothing(small_limit: None, tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(b"\x02" * (4 * LIMIT + 1))
    store = DirectoryChunkStore(tmp_path / "chunks", fsync=False)
    with pytest.raises(EncryptionError, match=f"needs {LIMIT + 1} chunks"):
        encrypt_file(source, store, TINY.with_parallel(ParallelConfig(max_threads=2)))
    assert list(store) == []


def test_a_stream_stops_at_the_first_byte_past_the_bound(small_limit: None) -> None:
    store = MemoryChunkStore()
    stream = StreamEncryption(TINY, store.put_named)
    stream.write(b"\x03" * (4 * LIMIT))  # LIMIT chunks: still a valid input
    with pytest.raises(EncryptionError, match=f"needs {LIMIT + 1} chunks"):
        stream.write(b"\x03")
    assert len(list(store)) <= LIMIT  # nothing past the bound was encrypted
    with pytest.raises(EncryptionError, match="failed"):
        stream.finish()


def test_the_bound_itself_encrypts(small_limit: None) -> None:
    m, chunks = SelfEncryptor(bytes(range(4 * LIMIT)), TINY).encrypt()
    assert len(m.chunks) == LIMIT
    assert SelfEncryptor.from_data_map(m, chunks).decrypt() == bytes(range(4 * LIMIT))


# -- every IntegrityError names index and short name ----------------------------------------------

DATA = hashlib.shake_256(b"limits").digest(768)  # six distinct 128-byte chunks


def corrupt_in_memory(store: MemoryChunkStore, name: bytes) -> None:
    store._chunks[name] = b"\x00" + store._chunks[name][1:]  # type: ignore[attr-defined]


def corrupt_on_disk(store: DirectoryChunkStore, name: bytes) -> None:
    path = store.root / name.hex()[:2] / name.hex()
    content = bytearray(path.read_bytes())
    content[0] ^= 1
    path.write_bytes(bytes(content))


@pytest.mark.parametrize("where", ["memory", "directory", "cache"])
@pytest.mark.parametrize(
    "path", ["decrypt", "read_range", "iter_range", "stream", "stream_range", "decrypt_file"]
)
def test_a_store_refusing_a_chunk_names_its_index(where: str, path: str, tmp_path: Path) -> None:
    store: MemoryChunkStore | DirectoryChunkStore
    if where == "directory":
        store = DirectoryChunkStore(tmp_path / "chunks", fsync=False)
    else:
        store = MemoryChunkStore()
    cfg = EncryptionConfig(chunk_size=128, parallel=ONE)
    m, _ = SelfEncryptor(DATA, cfg, chunk_store=store).encrypt()
    assert store.verifies_on_retrieve
    bad = m.chunks[4]
    if isinstance(store, DirectoryChunkStore):
        corrupt_on_disk(store, bad.name)
    else:
        corrupt_in_memory(store, bad.name)
    cache = CacheConfig() if where == "cache" else None
    stream = StreamDecryptor.from_data_map(m, store, cfg, cache=cache)
    calls = {
        "decrypt": lambda: SelfEncryptor.from_data_map(m, stream.store, cfg).decrypt(),
        "read_range": lambda: SelfEncryptor.from_data_map(m, stream.store, cfg).read_range(520, 9),
        "iter_range": lambda: list(SelfEncryptor.from_data_map(m, store, cfg).iter_range(300, 400)),
        "stream": lambda: list(stream),
        "stream_range": lambda: list(stream.iter_range(500, 100)),
        "decrypt_file": lambda: decrypt_file(m, stream.store, tmp_path / "out", cfg),
    }
    label = re.escape(f"chunk 4 ({bad.name[:4].hex()})")
    with pytest.raises(IntegrityError, match=rf"^{label} failed the store's check: .*name"):
        calls[path]()
    assert not (tmp_path / "out").exists()


def test_a_map_whose_chunks_exceed_the_memory_bound_is_a_library_error(tmp_path: Path) -> None:
    """Its sizes come from the map, not from the caller: EncryptionError, not ValueError (the
    CLI's "internal error"), on every streaming path, before any chunk is fetched."""
    from pqselfenc import ChunkInfo, DataMap

    piece = 300 << 20
    m = DataMap(2 * piece, (ChunkInfo(bytes(32), bytes(32), piece),) * 2)
    reader = StreamDecryptor.from_data_map(m, MemoryChunkStore())
    for call in (
        lambda: list(reader),
        lambda: list(reader.iter_range(0, 10)),
        lambda: decrypt_file(m, MemoryChunkStore(), tmp_path / "out"),
    ):
        with pytest.raises(EncryptionError, match="memory bound"):
            call()
    assert not (tmp_path / "out").exists()
