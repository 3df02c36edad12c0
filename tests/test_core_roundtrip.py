"""Round trips over the boundary table, determinism, deduplication and hierarchical maps."""

from __future__ import annotations

import os

import pytest

from pqselfenc import (
    CompressionConfig,
    DataMap,
    DirectoryChunkStore,
    EncryptionConfig,
    MemoryChunkStore,
    ParallelConfig,
    SelfEncryptor,
)
from pqselfenc.core import _primitives as P
from pqselfenc.core._chunking import Layout
from pqselfenc.error import InvalidDataError

CHUNK = 64
SECRET = bytes(range(32))
SIZES = [0, 1, 2, 3, 4, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK - 1, 3 * CHUNK, 3 * CHUNK + 1,
         10 * CHUNK + 7]  # fmt: skip


def config(
    compress: bool = False, secret: bytes | None = None, threads: int = 1
) -> EncryptionConfig:
    return EncryptionConfig(
        chunk_size=CHUNK,
        compression=CompressionConfig("zstd", 3) if compress else CompressionConfig(),
        parallel=ParallelConfig(max_threads=threads),
        convergence_secret=secret,
    )


def payload(size: int, compressible: bool) -> bytes:
    return (b"pqselfenc " * (size // 10 + 1))[:size] if compressible else os.urandom(size)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("secret", [None, SECRET])
@pytest.mark.parametrize("compressible", [False, True])
def test_boundary_round_trip(
    size: int, compress: bool, secret: bytes | None, compressible: bool
) -> None:
    data = payload(size, compressible)
    cfg = config(compress, secret)
    data_map, chunks = SelfEncryptor(data, cfg).encrypt()
    assert data_map.total_size == size
    assert len(data_map.chunks) == Layout.of(size, cfg.chunking).count
    assert SelfEncryptor.from_data_map(data_map, chunks, cfg).decrypt() == data
    assert DataMap.from_bytes(data_map.to_bytes()) == data_map
    assert DataMap.from_json(data_map.to_json()) == data_map


@pytest.mark.parametrize("size", SIZES)
def test_chunks_never_hold_plaintext(size: int) -> None:
    data = payload(size, compressible=True)
    _, chunks = SelfEncryptor(data, config()).encrypt()
    for c in chunks:
        assert data[:16] not in c.content or len(data) < 16


def test_layout_policy() -> None:
    cfg = config().chunking
    assert Layout.of(2, cfg).inline
    assert [Layout.of(4, cfg).size(i) for i in range(3)] == [1, 1, 2]
    assert [Layout.of(3 * CHUNK - 1, cfg).size(i) for i in range(3)] == [63, 63, 65]
    big = Layout.of(10 * CHUNK + 7, cfg)
    assert big.count == 11 and big.size(10) == 7 and big.size(0) == CHUNK


def test_min_chunks_one_and_large() -> None:
    for min_chunks in (1, 2, 7):
        cfg = config().with_min_chunks(min_chunks)
        for size in (0, 1, min_chunks, CHUNK * min_chunks + 3):
            data = os.urandom(size)
            m, c = SelfEncryptor(data, cfg).encrypt()
            assert SelfEncryptor.from_data_map(m, c).decrypt() == data


def test_deterministic_and_deduplicated() -> None:
    data = os.urandom(10 * CHUNK + 7)
    m1, c1 = SelfEncryptor(data, config()).encrypt()
    m2, c2 = SelfEncryptor(data, config(threads=4)).encrypt()
    assert m1 == m2 and m1.to_bytes() == m2.to_bytes()
    assert [c.content for c in c1] == [c.content for c in c2]
    store = MemoryChunkStore()
    SelfEncryptor(data, config(), chunk_store=store).encrypt()
    before = (len(store), store.total_bytes())
    SelfEncryptor(data, config(), chunk_store=store).encrypt()
    assert (len(store), store.total_bytes()) == before


def test_identical_triples_deduplicate_across_files() -> None:
    block = os.urandom(CHUNK)
    a = block * 6
    b = block * 9  # every interior triple is (block, block, block) in both
    _, ca = SelfEncryptor(a, config()).encrypt()
    _, cb = SelfEncryptor(b, config()).encrypt()
    assert {c.name for c in ca} == {c.name for c in cb}


def test_secret_and_pipeline_change_every_name() -> None:
    data = os.urandom(5 * CHUNK)
    variants = [
        config(),
        config(secret=SECRET),
        config(secret=bytes(31) + b"\x01"),
        config(compress=True),
        config(compress=True).with_compression(CompressionConfig("zstd", 4)),
    ]
    names = [{c.name for c in SelfEncryptor(data, v).encrypt()[1]} for v in variants]
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            assert not names[i] & names[j], (i, j)


def test_incompressible_chunks_are_stored_raw() -> None:
    data = os.urandom(4 * CHUNK)
    _, plain = SelfEncryptor(data, config()).encrypt()
    _, packed = SelfEncryptor(data, config(compress=True)).encrypt()
    # raw frames in both; the compressed pipeline (format 2) adds its 12-byte synthetic nonce
    extra = P.SIV_NONCE_SIZE
    assert sorted(len(c.content) + extra for c in plain) == sorted(len(c.content) for c in packed)


def test_compression_shrinks_compressible_chunks() -> None:
    data = b"a" * (8 * CHUNK)
    _, plain = SelfEncryptor(data, config()).encrypt()
    _, packed = SelfEncryptor(data, config(compress=True)).encrypt()
    assert sum(len(c.content) for c in packed) < sum(len(c.content) for c in plain)


def test_directory_store_round_trip_and_dedup(tmp_path: os.PathLike[str]) -> None:
    store = DirectoryChunkStore(tmp_path)
    data = os.urandom(7 * CHUNK + 3)
    m, chunks = SelfEncryptor(data, config(), chunk_store=store).encrypt()
    assert chunks == []
    names = sorted(i.name for i in store)
    assert names == sorted({c.name for c in m.chunks})
    SelfEncryptor(data, config(), chunk_store=store).encrypt()
    assert sorted(i.name for i in store) == names
    assert SelfEncryptor.from_data_map(m, store).decrypt() == data
    assert (
        SelfEncryptor.from_data_map(m, store).read_range(CHUNK - 2, 5)
        == data[CHUNK - 2 : CHUNK + 3]
    )


def test_hierarchical_map_round_trip() -> None:
    cfg = EncryptionConfig(chunk_size=4, parallel=ParallelConfig(max_threads=2))
    data = os.urandom(4 * (P.MAX_MAP_ENTRIES + 5))
    store = MemoryChunkStore()
    m, _ = SelfEncryptor(data, cfg, chunk_store=store).encrypt()
    assert m.child == 1 and m.is_child() and len(m.chunks) <= P.MAX_MAP_ENTRIES
    assert m.total_size == len(data)
    assert DataMap.from_bytes(m.to_bytes()) == m
    dec = SelfEncryptor.from_data_map(m, store)
    assert dec.decrypt() == data
    assert dec.read_range(4097, 9) == data[4097:4106]


def test_levels_name_every_chunk_a_map_needs() -> None:
    """``levels()`` walks a hierarchical map top first: together its levels reference exactly
    the chunks the store received, and the last level is the content's own map."""
    cfg = EncryptionConfig(chunk_size=4)
    data = os.urandom(4 * (P.MAX_MAP_ENTRIES + 5))
    store = MemoryChunkStore()
    m, _ = SelfEncryptor(data, cfg, chunk_store=store).encrypt()
    levels = list(SelfEncryptor.from_data_map(m, store).levels())
    assert [level.child for level in levels] == [1, 0] and levels[0] == m
    assert len(levels[1].chunks) == P.MAX_MAP_ENTRIES + 5
    assert {c.name for level in levels for c in level.chunks} == {i.name for i in store}

    small, chunks = SelfEncryptor(os.urandom(3 * CHUNK), config()).encrypt()
    assert list(SelfEncryptor.from_data_map(small, chunks).levels()) == [small]


def test_levels_refuse_a_child_that_does_not_match_its_parent() -> None:
    cfg = EncryptionConfig(chunk_size=4)
    store = MemoryChunkStore()
    data = os.urandom(4 * (P.MAX_MAP_ENTRIES + 5))
    m, _ = SelfEncryptor(data, cfg, chunk_store=store).encrypt()
    lying = DataMap(
        total_size=m.total_size + 1, chunks=m.chunks, compression=m.compression,
        level=m.level, secret_id=m.secret_id, child=m.child,
    )  # fmt: skip
    walk = SelfEncryptor.from_data_map(lying, store).levels()
    assert next(walk) == lying
    with pytest.raises(InvalidDataError, match="inconsistent child"):
        next(walk)


def test_read_range_matches_slicing() -> None:
    data = os.urandom(10 * CHUNK + 7)
    m, c = SelfEncryptor(data, config()).encrypt()
    dec = SelfEncryptor.from_data_map(m, c)
    for off in (0, 1, CHUNK - 1, CHUNK, 3 * CHUNK + 5, len(data) - 1, len(data), len(data) + 10):
        for length in (0, 1, 2, CHUNK, 3 * CHUNK + 1, 10**6):
            assert dec.read_range(off, length) == data[off : off + length], (off, length)


def test_key_store_supplies_the_secret() -> None:
    class Domain:
        def convergence_secret(self) -> bytes:
            return SECRET

    data = os.urandom(4 * CHUNK)
    m, c = SelfEncryptor(data, config(), key_store=Domain()).encrypt()
    m2, _ = SelfEncryptor(data, config(secret=SECRET)).encrypt()
    assert m == m2 and m.secret_id == P.secret_id(SECRET)
    assert SelfEncryptor.from_data_map(m, c, key_store=Domain()).decrypt() == data
