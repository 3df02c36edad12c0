"""Throughput of the engine against the primitives it is built from, in one process.

The composed limit is what the chunk path cannot beat: SHA3-256 of the plaintext, AES-256-GCM
(into a preallocated buffer: the primitive at its fastest) and SHA-256 of the ciphertext, each
timed over the same 1 MiB pieces of the same data in the same round. Encryption is measured
into a store that keeps nothing (the engine alone; stores are measured end to end in
bench_restic.py), decryption from a MemoryChunkStore (which checks every name, as the limit
counts). Each round measures the limits and every mode back to back; ratios are per round and
the table shows medians over rounds.

Threads or processes: the script also pushes the same chunks through a 2-process pool, which
has to copy every plaintext in and every ciphertext out.

    python benchmarks/bench_throughput.py [--size MIB] [--rounds N] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import os
from concurrent.futures import ProcessPoolExecutor

from _common import MiB, mbps, median, report, row, timed
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pqselfenc import (
    ChunkInfo,
    ChunkStore,
    EncryptedChunk,
    EncryptionConfig,
    MemoryChunkStore,
    ParallelConfig,
    SelfEncryptor,
)
from pqselfenc.core import _primitives as P
from pqselfenc.streaming import StreamDecryptor

CHUNK = MiB


class Discard(ChunkStore):
    """Takes named chunks and keeps nothing but a byte count."""

    def __init__(self) -> None:
        self.bytes = 0

    def store(self, chunk: bytes) -> ChunkInfo:
        self.bytes += len(chunk)
        return ChunkInfo.for_chunk(chunk)

    def store_chunk(self, chunk: EncryptedChunk) -> None:
        self.bytes += len(chunk.content)

    def retrieve(self, info: ChunkInfo) -> bytes:
        raise KeyError(info)


def pieces(data: memoryview) -> list[memoryview]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def limits(data: memoryview) -> tuple[float, float]:
    """(encrypt, decrypt) composed limits in seconds for all of ``data``."""
    aes, nonce = AESGCM(os.urandom(32)), os.urandom(12)
    out = bytearray(CHUNK + P.TAG_SIZE)
    back = bytearray(CHUNK)
    parts = pieces(data)
    sealed = aes.encrypt(nonce, parts[0], b"")
    t_sha3 = timed(lambda: [hashlib.sha3_256(p).digest() for p in parts])
    t_enc = timed(lambda: [aes.encrypt_into(nonce, p, b"", out) for p in parts])
    t_dec = timed(lambda: [aes.decrypt_into(nonce, sealed, b"", back) for _ in parts])
    t_sha2 = timed(lambda: [hashlib.sha256(p).digest() for p in parts])
    return t_sha3 + t_enc + t_sha2, t_sha3 + t_dec + t_sha2


def config(threads: int) -> EncryptionConfig:
    return EncryptionConfig(chunk_size=CHUNK, parallel=ParallelConfig(max_threads=threads))


def encrypt_time(data: memoryview, threads: int) -> float:
    return timed(lambda: SelfEncryptor(data, config(threads), chunk_store=Discard()).encrypt())


def decrypt_time(data_map: object, store: ChunkStore, threads: int) -> float:
    dec = StreamDecryptor.from_data_map(data_map, store, config(threads))  # type: ignore[arg-type]
    return timed(lambda: sum(len(p) for p in dec))


def _process_task(plain: bytes) -> tuple[bytes, bytes]:
    h = hashlib.sha3_256(plain).digest()
    key, nonce = P.chunk_key_nonce(h, h, h, P.ZERO_SALT, P.pipeline_id(0, 0))
    stored = AESGCM(key).encrypt(nonce, b"\x00" + plain, P.CHUNK_AAD)
    return hashlib.sha256(stored).digest(), stored


def process_pool_time(data: memoryview, workers: int) -> float:
    chunks = [bytes(p) for p in pieces(data)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_process_task, chunks[:workers]))  # start the workers first

        def run() -> None:
            for _ in pool.map(_process_task, chunks):
                pass

        return timed(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="MiB of random data (256)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    size = args.size * MiB
    data = memoryview(os.urandom(size))
    store = MemoryChunkStore()
    data_map, _ = SelfEncryptor(data, config(2), chunk_store=store).encrypt()
    runs: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        lim_e, lim_d = limits(data)
        sample = {
            "limit_e": lim_e, "limit_d": lim_d,
            "enc1": encrypt_time(data, 1), "enc2": encrypt_time(data, 2),
            "dec1": decrypt_time(data_map, store, 1), "dec2": decrypt_time(data_map, store, 2),
            "proc2": process_pool_time(data[: size // 4], 2) * 4,
        }  # fmt: skip
        sample["r_enc1"] = lim_e / sample["enc1"]
        sample["r_dec1"] = lim_d / sample["dec1"]
        sample["s_enc2"] = sample["enc1"] / sample["enc2"]
        sample["s_dec2"] = sample["dec1"] / sample["dec2"]
        sample["s_proc2"] = sample["enc1"] / sample["proc2"]
        for key, value in sample.items():
            runs.setdefault(key, []).append(value)
    m = {key: median(values) for key, values in runs.items()}
    rate = {key: mbps(size, m[key]) for key in runs if not key.startswith(("r_", "s_"))}
    b = "throughput"
    rows = [
        row(b, "limit encrypt (SHA3+AES-GCM+SHA-256)", **{"MB/s": rate["limit_e"]}),
        row(b, "limit decrypt (SHA-256+AES-GCM+SHA3)", **{"MB/s": rate["limit_d"]}),
        row(b, "encrypt, 1 worker", **{"MB/s": rate["enc1"]}, ratio=m["r_enc1"],
            target=">= 0.85 of limit", ok=m["r_enc1"] >= 0.85),
        row(b, "decrypt, 1 worker", **{"MB/s": rate["dec1"]}, ratio=m["r_dec1"],
            target=">= 0.85 of limit", ok=m["r_dec1"] >= 0.85),
        row(b, "encrypt, 2 worker threads", **{"MB/s": rate["enc2"]}, ratio=m["s_enc2"],
            target=">= 1.6x 1 worker", ok=m["s_enc2"] >= 1.6),
        row(b, "decrypt, 2 worker threads", **{"MB/s": rate["dec2"]}, ratio=m["s_dec2"],
            target=">= 1.6x 1 worker", ok=m["s_dec2"] >= 1.6),
        row(b, "chunk tasks, 2 processes", **{"MB/s": rate["proc2"]}, ratio=m["s_proc2"],
            note="x 1 worker thread; copies chunks in and out"),
    ]  # fmt: skip
    header = f"{args.size} MiB random data, 1 MiB chunks, no compression, median of {args.rounds}"
    report("bench_throughput", rows, header)


if __name__ == "__main__":
    main()
