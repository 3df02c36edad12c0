"""Peak RSS of streaming-encrypting and then streaming-decrypting a file, at two sizes.

Each size runs in a fresh process (peak RSS is per process): ``encrypt_file`` into a
DirectoryChunkStore, then ``decrypt_file`` back out, 1 MiB chunks, default MemoryConfig and
threads. ``--api stream`` runs the seed page's spelling instead: ``StreamEncryptor()`` fed
1 MiB writes with no store (the embedded default store, under a temp ``PQSELFENC_HOME``),
``data_map, chunks = await finalize()``, then ``StreamDecryptor.from_data_map(data_map)``.
The output is compared with the input (outside the measured process). Targets: the larger
size stays under 150 MiB, and its peak is within 16 MiB of the smaller size's peak.

    python benchmarks/bench_memory.py [--sizes 256,1024] [--api files|stream] [--json]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import MiB, mbps, peak_rss_mib, report, row


def child(size_mib: int, workdir: Path) -> None:
    from pqselfenc import DirectoryChunkStore
    from pqselfenc.streaming import decrypt_file, encrypt_file

    baseline = peak_rss_mib()
    store = DirectoryChunkStore(workdir / "store")
    start = time.perf_counter()
    data_map = encrypt_file(workdir / "input", store)
    mid = time.perf_counter()
    after_encrypt = peak_rss_mib()
    decrypt_file(data_map, store, workdir / "output")
    end = time.perf_counter()
    size = size_mib * MiB
    print(json.dumps({
        "baseline": baseline, "encrypt": after_encrypt, "peak": peak_rss_mib(),
        "enc_mbps": mbps(size, mid - start), "dec_mbps": mbps(size, end - mid),
    }))  # fmt: skip


def child_stream(size_mib: int, workdir: Path) -> None:
    import asyncio

    os.environ["PQSELFENC_HOME"] = str(workdir / "home")
    from pqselfenc.streaming import StreamDecryptor, StreamEncryptor

    async def run() -> tuple[float, float, float, float]:
        baseline = peak_rss_mib()
        start = time.perf_counter()
        encryptor = StreamEncryptor()
        with open(workdir / "input", "rb") as f:
            while block := f.read(MiB):
                await encryptor.write(block)
        data_map, _chunks = await encryptor.finalize()
        mid, after_encrypt = time.perf_counter(), peak_rss_mib()
        with open(workdir / "output", "wb") as out:
            async for piece in StreamDecryptor.from_data_map(data_map):
                out.write(piece)
        return baseline, after_encrypt, mid - start, time.perf_counter() - mid

    baseline, after_encrypt, enc_s, dec_s = asyncio.run(run())
    size = size_mib * MiB
    print(json.dumps({
        "baseline": baseline, "encrypt": after_encrypt, "peak": peak_rss_mib(),
        "enc_mbps": mbps(size, enc_s), "dec_mbps": mbps(size, dec_s),
    }))  # fmt: skip


def make_input(path: Path, size_mib: int) -> None:
    with open(path, "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(MiB))


def measure(size_mib: int, api: str = "files") -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="pqselfenc-bench-") as tmp:
        work = Path(tmp)
        make_input(work / "input", size_mib)
        cmd = [sys.executable, __file__, "--child", str(size_mib), str(work), "--api", api]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        result: dict[str, float] = json.loads(out)
        if not filecmp.cmp(work / "input", work / "output", shallow=False):
            raise SystemExit(f"round trip of {size_mib} MiB differs")
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,1024", help="MiB, comma-separated, ascending")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--api", choices=("files", "stream"), default="files",
                        help="encrypt_file/decrypt_file, or the streams on the default store")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.child:
        run = child_stream if args.api == "stream" else child
        run(int(args.child[0]), Path(args.child[1]))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {size: measure(size, args.api) for size in sizes}
    small, large = results[sizes[0]], results[sizes[-1]]
    rows = [
        row("memory", f"{size} MiB encrypt+decrypt", **{"peak RSS MiB": r["peak"]},
            note=f"after imports {r['baseline']:.0f} MiB; enc {r['enc_mbps']:.0f} MB/s, "
            f"dec {r['dec_mbps']:.0f} MB/s (fsync on)")
        for size, r in results.items()
    ]  # fmt: skip
    rows.append(row("memory", f"peak at {sizes[-1]} MiB", **{"peak RSS MiB": large["peak"]},
                    target="< 150 MiB", ok=large["peak"] < 150))  # fmt: skip
    growth = large["peak"] - small["peak"]
    rows.append(row("memory", f"growth {sizes[0]} -> {sizes[-1]} MiB", **{"peak RSS MiB": growth},
                    target="<= 16 MiB", ok=growth <= 16))  # fmt: skip
    how = "streams, default store" if args.api == "stream" else "files, DirectoryChunkStore"
    report("bench_memory", rows, f"1 MiB chunks, {how}, default MemoryConfig")


if __name__ == "__main__":
    main()
