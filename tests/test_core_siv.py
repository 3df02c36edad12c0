"""Format 2: a synthetic nonce for compressed pipelines (issue 11, "key/nonce reuse").

A chunk's key depends on plaintext hashes and the pipeline id, not on the frame encrypted. zstd
does not promise one frame per input across releases (and raw vs compressed can flip), so in
format 1 two releases could encrypt two different frames under one (key, nonce): GCM nonce
reuse. Format 2 takes the nonce from the frame itself (HMAC-SHA-256 under a key derived with
the chunk key), stores it in front of the ciphertext, and checks it again after decryption.
"""

from __future__ import annotations

import hashlib

import pytest
import zstandard

from pqselfenc import CompressionConfig, DataMap, EncryptedChunk, EncryptionConfig, SelfEncryptor
from pqselfenc.core import _cipher as C
from pqselfenc.core import _primitives as P
from pqselfenc.core._cipher import ChunkKeys, decrypt_chunk, encrypt_chunk, seal_frame
from pqselfenc.core.config import ParallelConfig
from pqselfenc.error import IntegrityError

ZSTD = EncryptionConfig(
    chunk_size=4096, compression=CompressionConfig("zstd", 3), parallel=ParallelConfig(1)
)
DATA = b"".join(b"line %05d of a compressible log\n" % i for i in range(600))  # 5 chunks


def other_zstd(plain: bytes | memoryview, level: int) -> bytes:
    """Another valid frame of the same plaintext, as another zstd release might write it."""
    return zstandard.ZstdCompressor(level=level, write_checksum=True).compress(plain)


def frame_of(chunk: EncryptedChunk, m: DataMap, i: int) -> bytes:
    """Decrypt chunk ``i``'s stored bytes back to its frame (a test's view inside GCM)."""
    keys = ChunkKeys(P.ZERO_SALT, m.pipeline, m.compression, m.level)
    e = m.chunks
    key, _ = keys.derive(e[i].src_hash, e[i - 1].src_hash, e[i - 2].src_hash)  # type: ignore[arg-type]
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce, body = chunk.content[:12], chunk.content[12:]
    return AESGCM(key).decrypt(nonce, body, P.CHUNK_AAD_V2)


def by_index(m: DataMap, chunks: list[EncryptedChunk]) -> list[EncryptedChunk]:
    named = {c.name: c for c in chunks}
    return [named[e.name] for e in m.chunks]


def test_compressed_maps_are_format_2_and_uncompressed_stay_format_1() -> None:
    m, chunks = SelfEncryptor(DATA, ZSTD).encrypt()
    assert (m.version, m.pipeline[0], m.to_bytes()[8]) == (2, 2, 2)
    assert all(len(c.content) > P.SIV_NONCE_SIZE + 17 for c in chunks)
    plain, _ = SelfEncryptor(DATA, ZSTD.with_compression("none")).encrypt()
    assert (plain.version, plain.pipeline[0], plain.to_bytes()[8]) == (1, 1, 1)


def test_two_frames_of_one_chunk_get_two_nonces(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compressor emits another valid frame for the same plaintext: same map entries
    (hashes, sizes), so the same keys; different frames, so different nonces and ciphertexts;
    and both decrypt, each under the map that names it and under the other's entries."""
    a_map, a_chunks = SelfEncryptor(DATA, ZSTD).encrypt()
    monkeypatch.setattr(C, "compress", other_zstd)
    b_map, b_chunks = SelfEncryptor(DATA, ZSTD).encrypt()
    a, b = by_index(a_map, a_chunks), by_index(b_map, b_chunks)
    assert [e.src_hash for e in a_map.chunks] == [e.src_hash for e in b_map.chunks]
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        fx, fy = frame_of(x, a_map, i), frame_of(y, b_map, i)
        assert fx != fy and fx[0] == fy[0] == P.BODY_ZSTD  # two frames, one plaintext
        assert x.content[:12] != y.content[:12]  # two nonces
        assert x.content[12:] != y.content[12:]
    monkeypatch.undo()
    for m, chunks in ((a_map, a_chunks), (b_map, b_chunks)):
        assert SelfEncryptor.from_data_map(m, chunks).decrypt() == DATA
    swapped = DataMap(a_map.total_size, b_map.chunks, compression=1, level=3)
    assert SelfEncryptor.from_data_map(swapped, b_chunks).decrypt() == DATA


def test_format_1_would_have_reused_the_nonce(monkeypatch: pytest.MonkeyPatch) -> None:
    """Why format 2 exists: under format 1 the two frames share (key, nonce), so the XOR of
    the two ciphertexts is the XOR of the two frames (one GCM keystream, used twice)."""
    keys = ChunkKeys(P.ZERO_SALT, P.pipeline_id(1, 3, P.FORMAT_VERSION), 1, 3)
    plain = DATA[:4096]
    h = (P.src_hash(plain), P.src_hash(b"x"), P.src_hash(b"y"))
    first = encrypt_chunk(plain, h, keys).content[: -P.TAG_SIZE]
    monkeypatch.setattr(C, "compress", other_zstd)
    second = encrypt_chunk(plain, h, keys).content[: -P.TAG_SIZE]
    monkeypatch.undo()
    frames = [bytes((P.BODY_ZSTD,)) + z(plain, 3) for z in (C.compress, other_zstd)]
    n = min(len(first), len(second))
    assert first != second
    assert xor(first[:n], second[:n]) == xor(frames[0][:n], frames[1][:n])


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(p ^ q for p, q in zip(a, b, strict=True))


def test_the_same_frame_gives_the_same_chunk() -> None:
    """Dedup is kept: the nonce is a function of (key, frame)."""
    one = SelfEncryptor(DATA, ZSTD).encrypt()
    two = SelfEncryptor(DATA, ZSTD.with_parallel(ParallelConfig(2))).encrypt()
    assert one == two


def test_raw_and_compressed_frames_of_one_chunk_get_two_nonces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A compressor that does not shrink the chunk flips it to a raw frame: another nonce."""
    keys = ChunkKeys(P.ZERO_SALT, P.pipeline_id(1, 3), 1, 3)
    h = (P.src_hash(DATA[:4096]), P.src_hash(b"x"), P.src_hash(b"y"))
    packed = encrypt_chunk(DATA[:4096], h, keys)
    monkeypatch.setattr(C, "compress", lambda plain, level: bytes(len(plain) + 1))
    raw = encrypt_chunk(DATA[:4096], h, keys)
    assert packed.content[:12] != raw.content[:12]
    for chunk in (packed, raw):
        out = decrypt_chunk(chunk.content, chunk.name, h, 4096, keys, index=0)
        assert out == DATA[:4096]


def test_a_nonce_that_is_not_its_frames_is_refused() -> None:
    """A key holder who encrypts a frame under a nonce of their choosing (GCM accepts it) is
    refused: the stored nonce must be the frame's HMAC."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    keys = ChunkKeys(P.ZERO_SALT, P.pipeline_id(1, 3), 1, 3)
    plain = DATA[:4096]
    h = (P.src_hash(plain), P.src_hash(b"x"), P.src_hash(b"y"))
    frame = bytes((P.BODY_ZSTD,)) + C.compress(plain, 3)
    key, _ = keys.derive(*h)
    chosen = hashlib.sha256(b"chosen").digest()[:12]
    stored = chosen + AESGCM(key).encrypt(chosen, frame, P.CHUNK_AAD_V2)
    with pytest.raises(IntegrityError, match=r"^chunk 7 \(.*nonce is not the one its frame"):
        decrypt_chunk(stored, P.chunk_name(stored), h, 4096, keys, index=7)
    good = seal_frame(frame, h, keys)
    assert decrypt_chunk(good, P.chunk_name(good), h, 4096, keys, index=7) == plain


@pytest.mark.parametrize("pos", [0, 11, 12, -1])
def test_every_part_of_a_format_2_chunk_is_authenticated(pos: int) -> None:
    m, chunks = SelfEncryptor(DATA, ZSTD).encrypt()
    c = by_index(m, chunks)[2]
    bad = bytearray(c.content)
    bad[pos] ^= 1
    forged = [x if x.name != c.name else EncryptedChunk(c.name, bytes(bad)) for x in chunks]
    with pytest.raises(IntegrityError, match="chunk 2"):
        SelfEncryptor.from_data_map(m, forged).decrypt()


def test_format_1_compressed_maps_still_decrypt() -> None:
    """A map and chunks written by format 1 (before synthetic nonces): made here with the
    format-1 pipeline the old writer used."""
    keys = ChunkKeys(P.ZERO_SALT, P.pipeline_id(1, 3, P.FORMAT_VERSION), 1, 3)
    pieces = [DATA[i : i + 4096] for i in range(0, len(DATA), 4096)]
    hashes = [P.src_hash(p) for p in pieces]
    chunks = [
        encrypt_chunk(p, (hashes[i], hashes[i - 1], hashes[i - 2]), keys)
        for i, p in enumerate(pieces)
    ]
    from pqselfenc import ChunkInfo

    entries = tuple(
        ChunkInfo(name=c.name, src_hash=h, src_size=len(p))
        for c, h, p in zip(chunks, hashes, pieces, strict=True)
    )
    legacy = DataMap(len(DATA), entries, compression=1, level=3, version=1)
    assert legacy.to_bytes()[8] == 1
    assert DataMap.from_bytes(legacy.to_bytes()) == legacy
    assert DataMap.from_json(legacy.to_json()) == legacy
    assert SelfEncryptor.from_data_map(legacy, chunks).decrypt() == DATA
    assert SelfEncryptor.from_data_map(legacy, chunks).read_range(5000, 10) == DATA[5000:5010]
