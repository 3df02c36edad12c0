"""Cost of format 2's synthetic nonce on compressible data, against format 1 in the same run.

Format 2 (compressed pipelines) adds, per chunk, an HMAC-SHA-256 over the frame on encryption
and again on decryption (the nonce is recomputed and compared), 32 more HKDF output bytes and 12
stored bytes. Both formats run the same chunks of the same compressible data (text-like, about
4:1 with zstd level 3) through ``encrypt_chunk``/``decrypt_chunk`` (the engine's chunk path,
one thread), alternating, round by round; the table shows the median of ``--rounds`` rounds
(5) and the ratio format 2 / format 1 per round, as a median. Times are this process's CPU
time (one thread), so other load on a shared machine does not count.

A reference row decrypts the format-1 chunks the way the reader did before zstd was streamed
(one-shot ``decompress`` into a buffer of the declared size, then SHA3-256): the cost of the
capped stream (``_cipher._inflate``) against it.

    python benchmarks/bench_nonce.py [--size MIB] [--rounds N] [--level L] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Callable

import zstandard
from _common import MiB, mbps, median, report, row
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pqselfenc.core import _primitives as P
from pqselfenc.core._cipher import ChunkKeys, decrypt_chunk, encrypt_chunk
from pqselfenc.core._store import EncryptedChunk

CHUNK = MiB


def timed(func: Callable[[], object]) -> float:
    """CPU seconds of this process spent in ``func`` (the work is single-threaded)."""
    start = time.process_time()
    func()
    return time.process_time() - start


def compressible(size: int) -> bytes:
    """Log-like lines with a random field: zstd level 3 takes it to roughly a quarter."""
    lines, i, total = [], 0, 0
    while total < size:
        tag = hashlib.sha256(i.to_bytes(8, "big")).hexdigest()[:12]
        lines.append(b"2026-12-01T10:%02d:%02d host%03d GET /api/v1/items/%s 200 %d\n"
                     % (i // 60 % 60, i % 60, i % 97, tag.encode(), i % 5000))  # fmt: skip
        total += len(lines[-1])
        i += 1
    return b"".join(lines)[:size]


def keys(version: int, level: int) -> ChunkKeys:
    return ChunkKeys(P.ZERO_SALT, P.pipeline_id(P.COMPRESSION_ZSTD, level, version), 1, level)


def encrypt_all(pieces: list[bytes], k: ChunkKeys) -> list[EncryptedChunk]:
    hashes = [P.src_hash(p) for p in pieces]
    return [
        encrypt_chunk(p, (hashes[i], hashes[i - 1], hashes[i - 2]), k) for i, p in enumerate(pieces)
    ]


def decrypt_all(pieces: list[bytes], chunks: list[EncryptedChunk], k: ChunkKeys) -> None:
    hashes = [P.src_hash(p) for p in pieces]
    for i, (p, c) in enumerate(zip(pieces, chunks, strict=True)):
        ring = (hashes[i], hashes[i - 1], hashes[i - 2])
        assert decrypt_chunk(c.content, c.name, ring, len(p), k, index=i) == p


def decrypt_one_shot(pieces: list[bytes], chunks: list[EncryptedChunk], k: ChunkKeys) -> None:
    """Format 1 as the reader did it before: GCM, one-shot zstd, SHA3-256 (no checks here
    beyond the hash: a reference for the cost of decoding, not a reader)."""
    hashes = [P.src_hash(p) for p in pieces]
    for i, (p, c) in enumerate(zip(pieces, chunks, strict=True)):
        key, nonce = k.derive(hashes[i], hashes[i - 1], hashes[i - 2])
        framed = AESGCM(key).decrypt(nonce, c.content, P.CHUNK_AAD)
        body = framed[1:]
        out = zstandard.ZstdDecompressor().decompress(body, max_output_size=len(p))
        assert framed[0] == P.BODY_ZSTD and P.src_hash(out) == hashes[i]


def one_round(pieces: list[bytes], k: ChunkKeys) -> dict[str, float]:
    made: list[EncryptedChunk] = []
    out = {"encrypt": timed(lambda: made.extend(encrypt_all(pieces, k)))}
    out["decrypt"] = timed(lambda: decrypt_all(pieces, made, k))
    if not k.synthetic:
        out["decrypt one-shot"] = timed(lambda: decrypt_one_shot(pieces, made, k))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64, help="MiB of compressible data")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--level", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    data = compressible(args.size * MiB)
    pieces = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    times: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for version in (P.FORMAT_VERSION, P.SIV_FORMAT_VERSION):
            for op, seconds in one_round(pieces, keys(version, args.level)).items():
                times.setdefault(f"{op} v{version}", []).append(seconds)
    rows = []
    for op in ("encrypt", "decrypt"):
        old, new = times[f"{op} v1"], times[f"{op} v2"]
        ratios = [n / o for n, o in zip(new, old, strict=True)]
        for version, ts in ((1, old), (2, new)):
            rows.append(row("nonce", f"{op} zstd:{args.level} format {version}",
                            **{"MB/s": mbps(len(data), median(ts)), "ms": median(ts) * 1e3,
                               "ratio": median(ratios) if version == 2 else 1.0}))  # fmt: skip
    shot, old = times["decrypt one-shot v1"], times["decrypt v1"]
    rows.append(row("nonce", "decrypt format 1, one-shot zstd (before)",
                    **{"MB/s": mbps(len(data), median(shot)), "ms": median(shot) * 1e3,
                       "ratio": median([a / b for a, b in zip(shot, old, strict=True)]),
                       "note": "ratio to the streamed format-1 decrypt"}))  # fmt: skip
    ratio = len(data) / sum(len(c.content) for c in encrypt_all(pieces, keys(2, args.level)))
    report("nonce", rows, f"{args.size} MiB compressible ({ratio:.1f}:1), 1 MiB chunks, 1 thread")


if __name__ == "__main__":
    main()
