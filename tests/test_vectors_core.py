"""Known-answer vectors for chunk and DataMap bytes (tests/vectors/core_*.txt).

The files were generated once by tests/vectors/make_core_vectors.py and are committed: if the
chunk derivation, cipher, naming or map encoding drifts, these tests fail. ``core_zstd.txt`` is
format 1's compressed pipeline (written before synthetic nonces): decrypt-only, it must keep
opening. ``core_zstd_siv.txt`` pins format 2 byte for byte, which also depends on zstd's output:
if zstd changes its frames, the test says so (and which versions) instead of passing quietly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pqselfenc import CompressionConfig, DataMap, EncryptedChunk, EncryptionConfig, SelfEncryptor
from pqselfenc.core import _cipher as C
from pqselfenc.core import _primitives as P
from pqselfenc.core._cipher import ChunkKeys

VECTORS_DIR = Path(__file__).parent / "vectors"
VECTORS = sorted(VECTORS_DIR.glob("core_*.txt"))
LEGACY = {"core_zstd.txt"}  # format 1 compressed: no writer makes these bytes any more


def load(path: Path) -> tuple[dict[str, str], list[EncryptedChunk]]:
    fields: dict[str, str] = {}
    chunks: list[EncryptedChunk] = []
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(": ")
        if key == "chunk":
            name, content = value.split()
            chunks.append(EncryptedChunk(bytes.fromhex(name), bytes.fromhex(content)))
        else:
            fields[key] = value
    return fields, chunks


def config_of(f: dict[str, str]) -> EncryptionConfig:
    secret = None if f["convergence_secret"] == "none" else bytes.fromhex(f["convergence_secret"])
    return EncryptionConfig(
        chunk_size=int(f["chunk_size"]),
        min_chunks=int(f["min_chunks"]),
        compression=CompressionConfig(f["compression"], int(f["level"])),
        convergence_secret=secret,
    )


def test_vectors_exist() -> None:
    assert {p.name for p in VECTORS} >= {"core_plain.txt", "core_secret.txt", "core_zstd.txt",
                                         "core_inline.txt", "core_zstd_siv.txt"}  # fmt: skip


def test_the_legacy_compressed_vector_is_format_1_and_the_new_one_format_2() -> None:
    legacy = DataMap.from_bytes(bytes.fromhex(load(VECTORS_DIR / "core_zstd.txt")[0]["map"]))
    siv = DataMap.from_bytes(bytes.fromhex(load(VECTORS_DIR / "core_zstd_siv.txt")[0]["map"]))
    assert (legacy.version, legacy.pipeline[0]) == (1, 1)
    assert (siv.version, siv.pipeline[0]) == (2, 2)
    assert (legacy.compression, legacy.level) == (siv.compression, siv.level)


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.name)
def test_decrypts_to_the_input(path: Path) -> None:
    f, chunks = load(path)
    assert f["expect"] == "success"
    data_map = DataMap.from_bytes(bytes.fromhex(f["map"]))
    assert data_map.to_bytes().hex() == f["map"]
    for c in chunks:
        assert P.chunk_name(c.content) == c.name
    out = SelfEncryptor.from_data_map(data_map, chunks, config_of(f)).decrypt()
    assert out.hex() == f["input"]


@pytest.mark.parametrize("path", [p for p in VECTORS if p.name not in LEGACY], ids=lambda p: p.name)
def test_encrypts_to_the_same_bytes(path: Path) -> None:
    f, chunks = load(path)
    data_map, got = SelfEncryptor(bytes.fromhex(f["input"]), config_of(f)).encrypt()
    if "zstandard" in f:
        _say_if_zstd_changed(f, DataMap.from_bytes(bytes.fromhex(f["map"])), chunks)
    assert data_map.to_bytes().hex() == f["map"]
    assert {(c.name, c.content) for c in got} == {(c.name, c.content) for c in chunks}


def _say_if_zstd_changed(f: dict[str, str], m: DataMap, chunks: list[EncryptedChunk]) -> None:
    """Fail with the reason when today's zstd frames a pinned chunk's plaintext differently:
    then the vector's bytes cannot be reproduced, though pqselfenc's format did not change."""
    import zstandard

    plain = bytes.fromhex(f["input"])
    pinned = {c.name: c.content for c in chunks}
    keys = ChunkKeys(P.ZERO_SALT, m.pipeline, m.compression, m.level)
    for i, e in enumerate(m.chunks):
        assert e.src_hash is not None and e.src_size is not None
        hashes = (e.src_hash, m.chunks[i - 1].src_hash, m.chunks[i - 2].src_hash)
        key, _ = keys.derive(*hashes)  # type: ignore[arg-type]
        stored = pinned[e.name]
        nonce, body = stored[: P.SIV_NONCE_SIZE], stored[P.SIV_NONCE_SIZE :]
        frame = AESGCM(key).decrypt(nonce, body, P.CHUNK_AAD_V2)
        start = i * m.chunks[0].src_size  # type: ignore[operator]
        piece = plain[start : start + e.src_size]
        now = C.compress(piece, m.level)
        today = bytes((P.BODY_ZSTD,)) + now if len(now) < len(piece) else b"\0" + piece
        if today != frame:
            pytest.fail(
                f"zstd's output changed: chunk {i} of {path_name(f)} frames differently with "
                f"zstandard {zstandard.__version__} libzstd {zstandard.ZSTD_VERSION} than with "
                f"the vector's {f['zstandard']}; pqselfenc's format did not change. Regenerate "
                "the vector (tests/vectors/make_core_vectors.py) and note the zstd version."
            )


def path_name(f: dict[str, str]) -> str:
    return "core_zstd_siv.txt" if "zstandard" in f else "a vector"


def test_a_change_in_zstd_output_is_reported_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulate a zstd release that frames the same plaintext differently (a checksum): the
    format-2 vector test fails and says why, rather than passing or blaming the format."""
    import zstandard

    def other_zstd(plain: bytes | memoryview, level: int) -> bytes:
        return zstandard.ZstdCompressor(level=level, write_checksum=True).compress(plain)

    monkeypatch.setattr(C, "compress", other_zstd)
    with pytest.raises(pytest.fail.Exception, match=r"zstd.s output changed(.|\n)*did not change"):
        test_encrypts_to_the_same_bytes(VECTORS_DIR / "core_zstd_siv.txt")


def test_derivation_known_answer() -> None:
    # Pins HKDF-SHA3-256 inputs (ikm order, salt, info = label || pipeline id) independently
    # of the files above, computed here with cryptography's HKDF directly.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    h0, h1, h2 = (bytes([i]) * 32 for i in (1, 2, 3))
    pipeline = bytes([1, 1]) + (3).to_bytes(4, "big")  # format 1 zstd: read, no longer written
    expected = HKDF(
        algorithm=hashes.SHA3_256(), length=44, salt=bytes(32),
        info=b"pqselfenc/v1/chunk-key" + pipeline,
    ).derive(h0 + h1 + h2)  # fmt: skip
    assert P.pipeline_id(P.COMPRESSION_ZSTD, 3, P.FORMAT_VERSION) == pipeline
    assert P.chunk_key_nonce(h0, h1, h2, bytes(32), pipeline) == (expected[:32], expected[32:])
    assert P.pipeline_id(P.COMPRESSION_NONE, 0) == bytes([1, 0, 0, 0, 0, 0])  # unchanged


def test_synthetic_nonce_derivation_known_answer() -> None:
    # Format 2 (compressed pipelines): K || K_nonce from HKDF-SHA3-256 under the v2 label, and
    # nonce = HMAC-SHA-256(K_nonce, frame)[:12], computed here with cryptography directly.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import hmac as chmac
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    h0, h1, h2 = (bytes([i]) * 32 for i in (1, 2, 3))
    pipeline = bytes([2, 1]) + (3).to_bytes(4, "big")
    okm = HKDF(
        algorithm=hashes.SHA3_256(), length=64, salt=bytes(32),
        info=b"pqselfenc/v2/chunk-key" + pipeline,
    ).derive(h0 + h1 + h2)  # fmt: skip
    assert P.pipeline_id(P.COMPRESSION_ZSTD, 3) == pipeline
    assert P.chunk_siv_keys(h0, h1, h2, bytes(32), pipeline) == (okm[:32], okm[32:])
    mac = chmac.HMAC(okm[32:], hashes.SHA256())
    mac.update(b"\x01frame")
    assert P.synthetic_nonce(okm[32:], b"\x01frame") == mac.finalize()[:12]
    assert P.CHUNK_AAD_V2 == b"pqselfenc/v2/chunk"
