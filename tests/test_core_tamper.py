"""Tamper, misuse and boundary-translation tests: every failure is a pqselfenc Error."""

from __future__ import annotations

import os

import pytest

from pqselfenc import (
    ChunkInfo,
    ChunkStore,
    CompressionConfig,
    DataMap,
    EncryptedChunk,
    EncryptionConfig,
    MemoryChunkStore,
    SelfEncryptor,
)
from pqselfenc.core import _primitives as P
from pqselfenc.core._cipher import ChunkKeys, decrypt_chunk, seal_frame
from pqselfenc.error import (
    ChunkNotFound,
    ChunkStoreError,
    EncryptionError,
    Error,
    IntegrityError,
    InvalidDataError,
)

CFG = EncryptionConfig(chunk_size=32, compression=CompressionConfig("zstd"))
DATA = os.urandom(100) + b"z" * 60


def encrypted() -> tuple[DataMap, list[EncryptedChunk]]:
    return SelfEncryptor(DATA, CFG).encrypt()


def test_every_flipped_chunk_byte_is_detected() -> None:
    data_map, chunks = encrypted()
    for ci, chunk in enumerate(chunks):
        for pos in range(len(chunk.content)):
            bad = bytearray(chunk.content)
            bad[pos] ^= 0x01
            forged = list(chunks)
            forged[ci] = EncryptedChunk(chunk.name, bytes(bad))
            with pytest.raises(IntegrityError, match="chunk"):
                SelfEncryptor.from_data_map(data_map, forged).decrypt()


def test_flipped_chunk_in_a_verifying_store_is_detected() -> None:
    store = MemoryChunkStore()
    data_map, _ = SelfEncryptor(DATA, CFG, chunk_store=store).encrypt()
    info = data_map.chunks[1]
    stored = store._chunks[info.name]
    store._chunks[info.name] = bytes([stored[0] ^ 1]) + stored[1:]  # changed, whatever it was
    with pytest.raises(IntegrityError, match=info.name[:4].hex()):
        SelfEncryptor.from_data_map(data_map, store).decrypt()


def test_every_flipped_map_byte_fails_cleanly() -> None:
    data_map, chunks = encrypted()
    raw = data_map.to_bytes()
    for pos in range(len(raw)):
        for bit in (0x01, 0x80):
            bad = bytearray(raw)
            bad[pos] ^= bit
            with pytest.raises(Error):
                forged = DataMap.from_bytes(bytes(bad))
                SelfEncryptor.from_data_map(forged, chunks, CFG).decrypt()


def test_swapped_chunks_are_detected() -> None:
    data_map, chunks = encrypted()
    a, b = chunks[0], chunks[1]
    swapped = [EncryptedChunk(a.name, b.content), EncryptedChunk(b.name, a.content), *chunks[2:]]
    with pytest.raises(IntegrityError):
        SelfEncryptor.from_data_map(data_map, swapped).decrypt()


def test_missing_chunk_is_named() -> None:
    data_map, chunks = encrypted()
    gone = data_map.chunks[2]
    rest = [c for c in chunks if c.name != gone.name]
    with pytest.raises(ChunkNotFound, match=gone.name[:4].hex()) as info:
        SelfEncryptor.from_data_map(data_map, rest).decrypt()
    assert isinstance(info.value, ChunkStoreError)


def test_convergence_secret_is_required_and_checked() -> None:
    cfg = CFG.with_convergence_secret(bytes(32))
    data_map, chunks = SelfEncryptor(DATA, cfg).encrypt()
    with pytest.raises(EncryptionError, match="convergence secret"):
        SelfEncryptor.from_data_map(data_map, chunks).decrypt()
    with pytest.raises(EncryptionError, match="not the one"):
        SelfEncryptor.from_data_map(
            data_map, chunks, CFG.with_convergence_secret(b"\x01" * 32)
        ).decrypt()


def _forge(body: bytes, version: int) -> tuple[bytes, bytes, ChunkKeys, tuple[bytes, ...]]:
    """A chunk encrypted under the right key (format ``version``) but carrying a hostile body."""
    keys = ChunkKeys(P.ZERO_SALT, P.pipeline_id(1, 3, version), 1, 3)
    hashes = (b"\x01" * 32, b"\x02" * 32, b"\x03" * 32)
    stored = seal_frame(body, hashes, keys)
    return stored, P.chunk_name(stored), keys, hashes


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"\x01not zstd at all", "is not one standard zstd frame"),
        (b"\x01" + __import__("zstandard").ZstdCompressor().compress(b"x" * 10_000),
         "is larger than a chunk of 18 bytes is stored"),  # 21 bytes: never stored for 18
        (b"\x01" + __import__("zstandard").ZstdCompressor().compress(b"x" * 100),
         "declares the wrong size"),  # 17 bytes declaring 100
        (b"\x07" + b"unknown flag", "unknown body flag"),
        (b"", "failed authentication"),  # no flag byte: a writer never makes it
        (b"\x00" + b"raw but wrong hash", "does not match its source hash"),
        (b"\x00" + b"raw, 17 bytes...", "decrypts to 16 bytes, expected 18"),
    ],
)  # fmt: skip
def test_hostile_bodies_raise_integrity_error(body: bytes, match: str, version: int) -> None:
    stored, name, keys, hashes = _forge(body, version)
    with pytest.raises(IntegrityError, match=rf"^chunk 0 \({name[:4].hex()}\).*{match}"):
        decrypt_chunk(stored, name, hashes, 18, keys, index=0)  # type: ignore[arg-type]


PLAIN = b"zstd frames " * 400  # compresses well: room for any frame around the real one


def _skippable(size: int, payload: bool = True) -> bytes:
    """A skippable zstd frame of ``size`` bytes (zstd reports its length as a content size),
    or only its 8-byte header."""
    header = (0x184D2A50).to_bytes(4, "little") + size.to_bytes(4, "little")
    return header + bytes(size) if payload else header


def _authentic(body: bytes, version: int) -> bytes | IntegrityError:
    """Decrypt a chunk of PLAIN whose zstd body is ``body``, sealed under the right key with
    the right source hash (what someone who knows the map can store): the plaintext or the
    error it raises."""
    keys = ChunkKeys(P.ZERO_SALT, P.pipeline_id(1, 3, version), 1, 3)
    hashes = (P.src_hash(PLAIN), b"\x02" * 32, b"\x03" * 32)
    stored = seal_frame(bytes((P.BODY_ZSTD,)) + body, hashes, keys)
    try:
        return decrypt_chunk(stored, P.chunk_name(stored), hashes, len(PLAIN), keys, index=0)
    except IntegrityError as exc:
        return exc


FRAME = __import__("zstandard").ZstdCompressor(level=3).compress(PLAIN)
BARE = __import__("zstandard").ZstdCompressor(level=3, write_content_size=False).compress(PLAIN)
EMPTY = __import__("zstandard").ZstdCompressor().compress(b"")


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize(
    "body",
    [_skippable(len(PLAIN), payload=False) + BARE, _skippable(4) + FRAME,
     FRAME + _skippable(4), FRAME + EMPTY, FRAME + FRAME[:2], FRAME + b"\0", FRAME[:-1]],
    ids=["skippable-header-declaring-the-size+bare-frame", "skippable+frame", "frame+skippable",
         "frame+empty-frame", "frame+cut-header", "frame+one-byte", "frame-cut-short"],
)  # fmt: skip
def test_a_zstd_body_must_be_exactly_one_standard_frame(body: bytes, version: int) -> None:
    """Review #1: a skippable frame passes a "declares exactly src_size" check (zstd reports
    its length as a content size), and the decoder read across frames. A whole skippable frame
    declaring src_size cannot fit in a stored chunk (refused by its size), and one whose
    payload is missing then decoded nothing (refused by the count), but frames and bytes after
    the real one were accepted. Each body here holds PLAIN with its right hash in a frame of
    its own, yet is not the one frame a writer stores: refused before decoding."""
    result = _authentic(body, version)
    assert isinstance(result, IntegrityError), "accepted"
    assert "not one standard zstd frame" in str(result)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("checksum", [False, True])
def test_one_standard_frame_with_or_without_a_checksum_is_accepted(
    version: int, checksum: bool
) -> None:
    zstandard = __import__("zstandard")
    body = zstandard.ZstdCompressor(level=3, write_checksum=checksum).compress(PLAIN)
    assert _authentic(body, version) == PLAIN


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"chunk_size": 0}, ValueError),
        ({"chunk_size": -1}, ValueError),
        ({"chunk_size": "1"}, TypeError),
        ({"chunk_size": True}, TypeError),
        ({"min_chunks": 0}, ValueError),
        ({"min_chunks": 256}, ValueError),
        ({"convergence_secret": b"short"}, ValueError),
        ({"convergence_secret": "x" * 32}, TypeError),
        ({"compression": "zstd"}, TypeError),
    ],
)
def test_bad_config_is_refused_at_construction(kwargs: dict[str, object], exc: type) -> None:
    with pytest.raises(exc):
        EncryptionConfig(**kwargs)  # type: ignore[arg-type]


def test_bad_compression_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown compression"):
        CompressionConfig("brotli")
    with pytest.raises(ValueError):
        CompressionConfig("zstd", level=23)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError):
        SelfEncryptor("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SelfEncryptor(b"x", config={"chunk_size": 3})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SelfEncryptor(b"x", chunk_store={})  # type: ignore[arg-type]
    data_map, chunks = encrypted()
    with pytest.raises(TypeError):
        SelfEncryptor.from_data_map(data_map, [b"raw"])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        SelfEncryptor(b"abc").decrypt()
    with pytest.raises(ValueError):
        SelfEncryptor.from_data_map(data_map, chunks).read_range(-1, 3)


def test_builder_form() -> None:
    cfg = (
        EncryptionConfig()
        .with_chunk_size(4096)
        .with_min_chunks(5)
        .with_compression(CompressionConfig("zstd", 9))
    )
    assert (cfg.chunk_size, cfg.min_chunks, cfg.compression.level) == (4096, 5, 9)
    assert cfg.with_compression("none").compression.algorithm == "none"


def test_secret_never_printed() -> None:
    secret = bytes(range(100, 132))
    cfg = CFG.with_convergence_secret(secret)
    data_map, chunks = SelfEncryptor(DATA, cfg).encrypt()
    for text in (
        repr(cfg),
        str(cfg),
        repr(data_map),
        str(data_map),
        repr(chunks),
        repr(data_map.chunks),
    ):
        assert secret.hex() not in text and secret.hex()[:16] not in text
        for c in data_map.chunks:
            assert c.src_hash is not None and c.src_hash.hex()[:16] not in text


class BrokenStore(ChunkStore):
    """A user store whose backend fails after a few writes."""

    def __init__(self, fail_after: int) -> None:
        self.inner = MemoryChunkStore()
        self.left = fail_after

    def store(self, chunk: bytes) -> ChunkInfo:
        if self.left == 0:
            raise ChunkStoreError("disk full")
        self.left -= 1
        return self.inner.store(chunk)

    def retrieve(self, info: ChunkInfo) -> bytes:
        return self.inner.retrieve(info)


@pytest.mark.parametrize("threads", [1, 2, 8])
def test_store_failure_surfaces_and_nothing_hangs(threads: int) -> None:
    from pqselfenc import ParallelConfig

    cfg = CFG.with_parallel(ParallelConfig(max_threads=threads))
    store = BrokenStore(fail_after=3)
    with pytest.raises(ChunkStoreError, match="disk full"):
        SelfEncryptor(os.urandom(50 * 32), cfg, chunk_store=store).encrypt()


def test_store_defaults_for_a_minimal_subclass() -> None:
    store = BrokenStore(fail_after=10)
    data_map, _ = SelfEncryptor(DATA, CFG, chunk_store=store).encrypt()
    assert store.has(data_map.chunks[0])
    assert not store.has(ChunkInfo(name=bytes(32)))
    with pytest.raises(ChunkStoreError, match="delete"):
        store.delete(data_map.chunks[0])
    with pytest.raises(ChunkStoreError, match="listing"):
        iter(store)


def test_map_parser_rejects_malformed_bytes() -> None:
    data_map, _ = encrypted()
    raw = data_map.to_bytes()
    for bad in (
        b"",
        raw[:-1],
        raw + b"\x00",
        b"PQSEMAP\x00" + raw[8:20],
        raw[:8] + b"\x03" + raw[9:],  # no version 3
        raw[:8] + b"\x02" + raw[9:10] + b"\x00\x00" + raw[12:],  # version 2 is compressed only
    ):
        with pytest.raises(InvalidDataError):
            DataMap.from_bytes(bad)
    with pytest.raises(TypeError):
        DataMap.from_bytes("text")  # type: ignore[arg-type]


def test_json_parser_is_strict() -> None:
    import json

    data_map, _ = encrypted()
    doc = json.loads(data_map.to_json())
    mutations = [
        lambda d: d.pop("level"),
        lambda d: d.update(extra=1),
        lambda d: d.update(version=3),
        lambda d: d.update(version=2, compression="none", level=0),
        lambda d: d.update(total_size=-1),
        lambda d: d.update(total_size=True),
        lambda d: d["chunks"][0].update(name="ZZ"),
        lambda d: d["chunks"][0].update(name=d["chunks"][0]["name"].upper()),
        lambda d: d["chunks"][0].update(src_size=0),
        lambda d: d["chunks"].pop(),
        lambda d: d.update(inline=""),
        lambda d: d.update(compression="lz4"),
        lambda d: d.update(child=1, chunks=[]),
    ]
    for mutate in mutations:
        bad = json.loads(json.dumps(doc))
        mutate(bad)
        with pytest.raises(InvalidDataError):
            DataMap.from_json(json.dumps(bad))
    for junk in ("", "[]", "{", "null", '{"format": 1}', "1e999999"):
        with pytest.raises(InvalidDataError):
            DataMap.from_json(junk)
