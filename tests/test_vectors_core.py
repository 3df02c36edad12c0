"""Known-answer vectors for chunk and DataMap bytes (tests/vectors/core_*.txt).

The files were generated once by tests/vectors/make_core_vectors.py and are committed: if the
chunk derivation, cipher, naming or map encoding drifts, these tests fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pqselfenc import CompressionConfig, DataMap, EncryptedChunk, EncryptionConfig, SelfEncryptor
from pqselfenc.core import _primitives as P

VECTORS = sorted((Path(__file__).parent / "vectors").glob("core_*.txt"))


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
                                         "core_inline.txt"}  # fmt: skip


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


@pytest.mark.parametrize("path", [p for p in VECTORS if "zstd" not in p.name], ids=lambda p: p.name)
def test_encrypts_to_the_same_bytes(path: Path) -> None:
    # zstd output may legitimately change between zstd releases, so that vector is decrypt-only.
    f, chunks = load(path)
    data_map, got = SelfEncryptor(bytes.fromhex(f["input"]), config_of(f)).encrypt()
    assert data_map.to_bytes().hex() == f["map"]
    assert {(c.name, c.content) for c in got} == {(c.name, c.content) for c in chunks}


def test_derivation_known_answer() -> None:
    # Pins HKDF-SHA3-256 inputs (ikm order, salt, info = label || pipeline id) independently
    # of the files above, computed here with cryptography's HKDF directly.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    h0, h1, h2 = (bytes([i]) * 32 for i in (1, 2, 3))
    pipeline = bytes([1, 1]) + (3).to_bytes(4, "big")
    expected = HKDF(
        algorithm=hashes.SHA3_256(), length=44, salt=bytes(32),
        info=b"pqselfenc/v1/chunk-key" + pipeline,
    ).derive(h0 + h1 + h2)  # fmt: skip
    assert P.pipeline_id(P.COMPRESSION_ZSTD, 3) == pipeline
    assert P.chunk_key_nonce(h0, h1, h2, bytes(32), pipeline) == (expected[:32], expected[32:])
