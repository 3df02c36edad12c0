"""Encrypt-into and decrypt-from an S3 store (SeaweedFS on loopback) beside the directory store.

    python benchmarks/bench_s3.py [--mib 256] [--threads N]

256 MiB of random bytes (compression off, 1 MiB chunks) go through
``SelfEncryptor(data, chunk_store=...)`` and back; the table (MB/s, ratio to the directory
store) is printed and written to ``benchmarks/results/s3.txt``. The SeaweedFS server is the one
the tests use (``tests/_s3server.py``), started here in a temp folder and stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from _s3server import running_weed  # noqa: E402

from pqselfenc import ChunkStore, DirectoryChunkStore, EncryptionConfig, SelfEncryptor  # noqa: E402
from pqselfenc.core.config import ParallelConfig  # noqa: E402
from pqselfenc.core.stores import S3ChunkStore  # noqa: E402

MB = 1_000_000


def timed(job: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = job()
    return time.perf_counter() - start, result


def run(store: ChunkStore, data: bytes, config: EncryptionConfig) -> tuple[float, float]:
    """Seconds to encrypt ``data`` into ``store`` and to decrypt it back (checked)."""
    enc_s, (data_map, _) = timed(lambda: SelfEncryptor(data, config, chunk_store=store).encrypt())
    dec_s, back = timed(lambda: SelfEncryptor.from_data_map(data_map, store, config).decrypt())
    assert back == data, "round trip mismatch"
    return enc_s, dec_s


def table(rows: list[tuple[str, float, float]], size: int, threads: int) -> str:
    base = rows[0][1:]
    lines = [
        f"pqselfenc store benchmark: {size // (1 << 20)} MiB random, compression off, "
        f"1 MiB chunks, {threads} worker threads, loopback, {os.cpu_count()} CPUs",
        f"{'store':<28} {'encrypt MB/s':>12} {'ratio':>6} {'decrypt MB/s':>12} {'ratio':>6}",
    ]
    for name, enc_s, dec_s in rows:
        enc, dec = size / MB / enc_s, size / MB / dec_s
        lines.append(
            f"{name:<28} {enc:>12.1f} {base[0] / enc_s:>6.2f} {dec:>12.1f} {base[1] / dec_s:>6.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--threads", type=int, default=min(8, os.cpu_count() or 1))
    args = parser.parse_args()
    data = os.urandom(args.mib << 20)
    config = EncryptionConfig(parallel=ParallelConfig(max_threads=args.threads))
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="pqselfenc-bench-") as tmp:
        directory = DirectoryChunkStore(Path(tmp) / "chunks")
        rows.append(("directory (fsync)", *run(directory, data, config)))
        with (
            running_weed(Path(tmp) / "weed") as server,
            S3ChunkStore(server.bucket, "bench", **server.credentials()) as s3,
        ):
            rows.append(("s3 (SeaweedFS, loopback)", *run(s3, data, config)))
    text = table(rows, len(data), args.threads)
    print(text)
    out = ROOT / "benchmarks" / "results" / "s3.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
