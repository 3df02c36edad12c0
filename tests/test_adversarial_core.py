"""Adversarial tests of the core formats: a tamper matrix by byte class, and hostile size claims.

``tests/test_core_tamper.py`` (core's own) flips every byte and expects *some* ``Error``. Here every
byte position is put in its class (magic, version, child level, compression, level, secret id,
total size, count, entry hash/name/size, inline length/bytes; chunk flag/body/tag) and the class
fixes the *exact* error, so a flip that is caught by the wrong check (or by luck) shows.
"""

from __future__ import annotations

import contextlib
import struct
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from pqselfenc import ChunkInfo, DataMap, EncryptedChunk, SelfEncryptor
from pqselfenc.core import _primitives as P
from pqselfenc.core._cipher import ChunkKeys, seal_frame
from pqselfenc.error import (
    ChunkNotFound,
    EncryptionError,
    Error,
    IntegrityError,
    InvalidDataError,
)

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))

import fuzz_targets as F

CFG = F._CORE_CFG.with_convergence_secret(F._SECRET)
HEAD = 13  # magic 8, version, child, compression, level, secret id length


def map_classes(m: DataMap) -> list[tuple[str, range]]:
    """Every byte of ``m.to_bytes()`` in exactly one named class."""
    s = len(m.secret_id)
    base = HEAD + s + 12
    out = [
        ("magic", range(0, 8)),
        ("version", range(8, 9)),
        ("child", range(9, 10)),
        ("compression", range(10, 11)),
        ("level", range(11, 12)),
        ("secret_id_len", range(12, 13)),
        ("secret_id", range(HEAD, HEAD + s)),
        ("total_size", range(HEAD + s, HEAD + s + 8)),
        ("count", range(HEAD + s + 8, base)),
    ]
    if not m.chunks:
        inline = range(base + 1, base + 1 + len(m.inline))
        return [*out, ("inline_len", range(base, base + 1)), ("inline", inline)]
    for i in range(len(m.chunks)):
        e = base + 68 * i
        out += [
            ("src_hash", range(e, e + 32)),
            ("name", range(e + 32, e + 64)),
            ("src_size", range(e + 64, e + 68)),
        ]
    return out


def expected(cls: str, m: DataMap, pos: int, bit: int) -> type[Exception] | None:
    """The exact error a flip of ``bit`` at ``pos`` (class ``cls``) must raise; None: decrypts."""
    if cls == "secret_id":
        return EncryptionError  # "not the one this map needs": checked before any chunk
    if cls == "src_hash":
        return IntegrityError  # the key of this chunk and its two ring successors changes
    if cls == "name":
        return ChunkNotFound  # the store has nothing under the edited name
    if cls == "level" and m.compression != P.COMPRESSION_NONE and bit == 1:
        return IntegrityError  # a valid other level: another pipeline id, so another key
    # (a parent's last size has no total to meet, but its sizes must hold a whole child map:
    # a flip changes them by 2^k, never a multiple of an entry's 68 bytes, so InvalidDataError)
    if cls == "inline":
        return None  # the map is the root of trust: only sealing protects inline bytes
    return InvalidDataError  # every structural field is checked by the parser (or the child)


def decrypt(raw: bytes) -> bytes:
    parsed = DataMap.from_bytes(raw)
    return SelfEncryptor.from_data_map(parsed, list(F._all_chunks()), CFG).decrypt()


@pytest.mark.parametrize("sample", range(4), ids=["inline", "three", "secret", "zstd"])
def test_map_tamper_matrix_exact_errors(sample: int) -> None:
    m, _, plain = F.core_samples()[sample]
    raw = m.to_bytes()
    classes = map_classes(m)
    assert sorted(p for _, r in classes for p in r) == list(range(len(raw)))  # a partition
    for cls, positions in classes:
        for pos in positions:
            for bit in (0x01, 0x80):
                bad = bytearray(raw)
                bad[pos] ^= bit
                want = expected(cls, m, pos, bit)
                if want is None:
                    assert decrypt(bytes(bad)) != plain  # edited inline bytes, not the original
                    continue
                with pytest.raises(Error) as info:
                    decrypt(bytes(bad))
                assert type(info.value) is want, f"{cls} byte {pos} bit {bit:#x}: {info.value!r}"


def test_parent_map_tamper_matrix() -> None:
    """A parent (child = 1) map: structure, entries, and the encrypted child map's chunks."""
    m, chunks, plain = F.core_samples()[4]
    assert m.child == 1
    raw = m.to_bytes()
    for cls, positions in map_classes(m):
        for pos in positions:
            bad = bytearray(raw)
            bad[pos] ^= 0x01
            want = expected(cls, m, pos, 0x01)
            with pytest.raises(Error) as info:
                reader = SelfEncryptor.from_data_map(DataMap.from_bytes(bytes(bad)), list(chunks))
                reader.read_range(0, 1)
            assert type(info.value) is want, f"{cls} byte {pos}: {info.value!r}"
    i = next(k for k, c in enumerate(chunks) if c.name == m.chunks[0].name)
    bad = bytearray(chunks[i].content)
    bad[5] ^= 0x01
    data_map, forged = _forge(m, list(chunks), i, bytes(bad), rename=True)
    with pytest.raises(IntegrityError, match="failed authentication"):
        SelfEncryptor.from_data_map(data_map, forged).read_range(0, 1)
    assert SelfEncryptor.from_data_map(m, list(chunks)).read_range(0, 8) == plain[:8]


def _repoint(m: DataMap, renames: dict[bytes, bytes]) -> DataMap:
    """``m`` with entries renamed (an attacker who edits both the store and the map, so the
    name check passes and the next check must catch the forgery)."""
    entries = tuple(
        ChunkInfo(name=renames.get(e.name, e.name), src_hash=e.src_hash, src_size=e.src_size)
        for e in m.chunks
    )
    return DataMap(m.total_size, entries, m.inline, m.child, m.compression, m.level, m.secret_id)


def _forge(
    m: DataMap, chunks: list[EncryptedChunk], i: int, content: bytes, *, rename: bool
) -> tuple[DataMap, list[EncryptedChunk]]:
    """Replace chunk ``i`` of ``chunks`` by ``content``, under its old name or a new one."""
    old = chunks[i].name
    new = P.chunk_name(content) if rename else old
    forged = [*chunks[:i], EncryptedChunk(new, content), *chunks[i + 1 :]]
    return _repoint(m, {old: new}), forged


CHUNK_CLASSES: list[tuple[str, Callable[[int], range]]] = [
    ("flag", lambda n: range(0, 1)),  # first ciphertext byte covers the raw/zstd flag
    ("body", lambda n: range(1, n - P.TAG_SIZE)),
    ("tag", lambda n: range(n - P.TAG_SIZE, n)),
]


@pytest.mark.parametrize("sample", [1, 2, 3], ids=["three", "secret", "zstd"])
@pytest.mark.parametrize("rename", [False, True], ids=["same-name", "renamed"])
def test_chunk_tamper_matrix_exact_errors(sample: int, rename: bool) -> None:
    """Same name: the name check catches it. Renamed (attacker also edits the map): GCM does."""
    m, chunks, _ = F.core_samples()[sample]
    match = "failed authentication" if rename else "does not match its name"
    for ci, chunk in enumerate(chunks):
        n = len(chunk.content)
        for _cls, positions in CHUNK_CLASSES:
            for pos in positions(n):
                bad = bytearray(chunk.content)
                bad[pos] ^= 0x01
                data_map, forged = _forge(m, list(chunks), ci, bytes(bad), rename=rename)
                with pytest.raises(IntegrityError, match=match):
                    SelfEncryptor.from_data_map(data_map, forged, CFG).decrypt()


@pytest.mark.parametrize("edit", ["truncate", "extend", "empty", "tag-only"])
def test_chunk_length_edits(edit: str) -> None:
    m, chunks, _ = F.core_samples()[1]
    c = chunks[0]
    content = {
        "truncate": c.content[:-1],
        "extend": c.content + b"\x00",
        "empty": b"",
        "tag-only": c.content[-P.TAG_SIZE :],
    }[edit]
    for rename in (False, True):
        data_map, forged = _forge(m, list(chunks), 0, content, rename=rename)
        with pytest.raises(IntegrityError, match=r"chunk \d"):
            SelfEncryptor.from_data_map(data_map, forged, CFG).decrypt()


def test_same_content_under_another_pipeline_is_another_key() -> None:
    """A chunk from the zstd pipeline never opens under the raw pipeline's entry (and back)."""
    data = F.det_bytes("pipelines", 300)
    a_map, a_chunks = SelfEncryptor(data, F._CORE_CFG).encrypt()
    b_map, b_chunks = SelfEncryptor(data, F._CORE_CFG.with_compression("zstd")).encrypt()
    assert {c.name for c in a_chunks}.isdisjoint(c.name for c in b_chunks)
    swapped = DataMap(b_map.total_size, a_map.chunks, b"", 0, b_map.compression, b_map.level, b"")
    with pytest.raises(IntegrityError, match="failed authentication"):
        SelfEncryptor.from_data_map(swapped, a_chunks).decrypt()


# -- hostile size claims: nothing is allocated for what is only claimed ----------------------------


def peak_bytes(call: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        with contextlib.suppress(Error):
            call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _header(count: int, total: int = 1 << 40, child: int = 0) -> bytes:
    return P.MAP_MAGIC + bytes((1, child, 0, 0, 0)) + struct.pack(">QI", total, count)


@pytest.mark.parametrize(
    "count", [1, 4096, P.MAX_PARSE_ENTRIES, P.MAX_PARSE_ENTRIES + 1, 2**32 - 1]
)
@pytest.mark.parametrize("body", [0, 68, 68 * 100])
def test_map_claiming_huge_counts_allocates_nothing(count: int, body: int) -> None:
    raw = _header(count) + bytes(body)
    with pytest.raises(InvalidDataError):
        DataMap.from_bytes(raw)
    assert peak_bytes(lambda: DataMap.from_bytes(raw)) < 64 * len(raw) + (64 << 10)


def test_map_parse_allocation_is_linear_in_its_input() -> None:
    """The largest legal map (2^20 entries, 68 MiB) costs a bounded multiple of its size."""
    m, _, _ = F.core_samples()[1]
    raw = m.to_bytes()
    entries = raw[HEAD + 12 :]
    small = _header(3, m.total_size) + entries
    assert DataMap.from_bytes(small) == m
    per_entry = peak_bytes(lambda: DataMap.from_bytes(small)) / 3
    assert per_entry < 64 * 68 + 4096  # ChunkInfo + two 32-byte bytes per 68-byte entry


@pytest.mark.parametrize(
    "doc",
    [
        '{"format": "pqselfenc-datamap", "chunks": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "[" * 1_000_000,
        '{"total_size": 1' + "0" * 5000 + "}",
        '{"format": "pqselfenc-datamap", "version": 1, "child": 0, "total_size": '
        + str(2**64)
        + ', "compression": "none", "level": 0, "convergence_secret_id": null, '
        '"inline": "", "chunks": []}',
    ],
    ids=["deep-nesting", "unclosed-nesting", "huge-int", "total-out-of-range"],
)
def test_hostile_json_fails_cleanly_and_small(doc: str) -> None:
    with pytest.raises(InvalidDataError):
        DataMap.from_json(doc)
    assert peak_bytes(lambda: DataMap.from_json(doc)) < 64 * len(doc) + (1 << 20)


@pytest.mark.parametrize("declared", [True, False], ids=["declares-2^40", "undeclared-16MiB"])
def test_zstd_bomb_in_an_authentic_chunk_is_refused_without_allocating(declared: bool) -> None:
    """A chunk correctly encrypted under its key (an attacker who knows the map) whose zstd
    body declares 2^40 bytes, or declares nothing and inflates to 16 MiB."""
    import zstandard

    m, chunks, _ = F.core_samples()[3]  # the zstd sample
    e = m.chunks[0]
    if declared:  # a frame header that declares 2^40 bytes, then one block (never finished)
        cobj = zstandard.ZstdCompressor().compressobj(size=1 << 40)
        body = cobj.compress(b"x" * 64) + cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        assert zstandard.frame_content_size(body) == 1 << 40
    else:
        body = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(16 << 20))
    hashes = (e.src_hash, m.chunks[-1].src_hash, m.chunks[-2].src_hash)
    keys = ChunkKeys(P.ZERO_SALT, m.pipeline, m.compression, m.level)
    stored = seal_frame(bytes((P.BODY_ZSTD,)) + body, hashes, keys)  # type: ignore[arg-type]
    i = chunks.index(_by_name(chunks, e.name))
    data_map, forged = _forge(m, list(chunks), i, stored, rename=True)
    reader = SelfEncryptor.from_data_map(data_map, forged)
    with pytest.raises(IntegrityError, match=r"chunk 0 .*(declares the wrong size|is larger)"):
        reader.decrypt()
    assert peak_bytes(reader.decrypt) < 1 << 20


def _by_name(chunks: tuple[EncryptedChunk, ...], name: bytes) -> EncryptedChunk:
    return next(c for c in chunks if c.name == name)
