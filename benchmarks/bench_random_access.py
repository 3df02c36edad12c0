"""Random access: 4 KiB reads at random offsets of a 1 GiB encrypted file in a warm
DirectoryChunkStore. Counts the chunks each read fetches (target: at most 2, plus map chunks)
and times each read (target: under 20 ms). With 64 KiB chunks the map is hierarchical
(16384 entries), so the first read also fetches the map's own chunks.

    python benchmarks/bench_random_access.py [--size MIB] [--reads N] [--json]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from _common import MiB, report, row

from pqselfenc import ChunkInfo, ChunkStore, DirectoryChunkStore, EncryptionConfig
from pqselfenc.streaming import StreamDecryptor, encrypt_file

READ = 4096


class Counting(ChunkStore):
    verifies_on_retrieve = True

    def __init__(self, inner: ChunkStore) -> None:
        self.inner, self.fetches = inner, 0

    def store(self, chunk: bytes) -> ChunkInfo:
        return self.inner.store(chunk)

    def retrieve(self, info: ChunkInfo) -> bytes:
        self.fetches += 1
        return self.inner.retrieve(info)


def measure(work: Path, chunk: int, reads: int, size: int) -> list[dict[str, object]]:
    cfg = EncryptionConfig(chunk_size=chunk)
    store = DirectoryChunkStore(work / f"store-{chunk}", fsync=False)
    data_map = encrypt_file(work / "input", store, cfg)
    counting = Counting(store)
    dec = StreamDecryptor.from_data_map(data_map, counting, cfg)
    rng = random.Random(1)
    with open(work / "input", "rb") as f:
        start = time.perf_counter()
        dec.read_range(rng.randrange(size - READ), READ)  # first read: map levels + content
        first_ms, first_fetches = (time.perf_counter() - start) * 1e3, counting.fetches
        times, fetches = [], []
        for _ in range(reads):
            offset = rng.randrange(size - READ + 1)
            counting.fetches = 0
            start = time.perf_counter()
            got = dec.read_range(offset, READ)
            times.append((time.perf_counter() - start) * 1e3)
            fetches.append(counting.fetches)
            f.seek(offset)
            if got != f.read(READ):
                raise SystemExit(f"read at {offset} differs from the input")
    name = f"{chunk // 1024} KiB chunks, map level {data_map.child}"
    p95 = statistics.quantiles(times, n=20)[-1]
    return [
        row("random access", f"{name}: first read", ms=first_ms,
            note=f"fetched {first_fetches} chunks (map levels + content)"),
        row("random access", f"{name}: 4 KiB read, median", ms=statistics.median(times),
            target="< 20 ms", ok=max(times) < 20,
            note=f"p95 {p95:.1f} ms, max {max(times):.1f} ms over {reads} reads"),
        row("random access", f"{name}: chunks per read", ratio=float(max(fetches)),
            target="<= 2", ok=max(fetches) <= 2, note="max over the reads"),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="MiB (1024)")
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    size = args.size * MiB
    rows = []
    with tempfile.TemporaryDirectory(prefix="pqselfenc-bench-") as tmp:
        work = Path(tmp)
        with open(work / "input", "wb") as f:
            for _ in range(args.size):
                f.write(os.urandom(MiB))
        for chunk in (MiB, 64 << 10):
            rows += measure(work, chunk, args.reads, size)
    report("bench_random_access", rows, f"{args.size} MiB file, warm DirectoryChunkStore")


if __name__ == "__main__":
    main()
