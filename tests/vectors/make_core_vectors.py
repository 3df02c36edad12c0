"""Regenerate tests/vectors/core_*.txt from the current implementation.

Run only on purpose (a format change): the committed files are what pins the format.
    python3 tests/vectors/make_core_vectors.py

``core_zstd.txt`` is not regenerated: it was written by format 1 (compressed chunks before the
synthetic nonce of format 2) and stays as it is, so maps of that version keep opening.
``core_zstd_siv.txt`` pins format 2; its bytes depend on zstd's output, so its header records
the zstandard and libzstd versions that made it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import zstandard

from pqselfenc import CompressionConfig, EncryptionConfig, SelfEncryptor

HERE = Path(__file__).parent


def zstd_version() -> str:
    """The libzstd version zstandard runs on, e.g. ``1.5.7``."""
    return ".".join(str(v) for v in zstandard.ZSTD_VERSION)


def stream(n: int, seed: bytes) -> bytes:
    """Deterministic pseudo-random input: SHAKE-256 of the seed."""
    return hashlib.shake_256(seed).digest(n)


def write(
    name: str, comment: str, data: bytes, cfg: EncryptionConfig, secret: bytes | None
) -> None:
    data_map, chunks = SelfEncryptor(data, cfg).encrypt()
    lines = [f"# {comment}", "expect: success"]
    if cfg.compression.algorithm == "zstd":
        lines.append(f"zstandard: {zstandard.__version__} libzstd {zstd_version()}")
    lines += [
        f"chunk_size: {cfg.chunk_size}",
        f"min_chunks: {cfg.min_chunks}",
        f"compression: {cfg.compression.algorithm}",
        f"level: {cfg.compression.level}",
        f"convergence_secret: {secret.hex() if secret else 'none'}",
        f"input: {data.hex()}",
        f"map: {data_map.to_bytes().hex()}",
    ]
    lines += [f"chunk: {c.name.hex()} {c.content.hex()}" for c in chunks]
    (HERE / name).write_text("\n".join(lines) + "\n")


def main() -> None:
    secret = bytes(range(32))
    base = EncryptionConfig(chunk_size=64, min_chunks=3)
    write(
        "core_plain.txt",
        "10 chunks + 7 bytes, no compression, no secret",
        stream(647, b"plain"),
        base,
        None,
    )
    write(
        "core_secret.txt",
        "below 3 chunks: three equal parts, with a convergence secret",
        stream(150, b"secret"),
        base.with_convergence_secret(secret),
        secret,
    )
    write(
        "core_zstd_siv.txt",
        "compressible + random chunks, zstd level 3: format 2 (synthetic nonce); needs the "
        "same zstd output",
        b"A" * 200 + stream(100, b"zstd"),
        base.with_compression(CompressionConfig("zstd", 3)),
        None,
    )
    write("core_inline.txt", "2 bytes: stored inline in the map", b"hi", base, None)


if __name__ == "__main__":
    main()
