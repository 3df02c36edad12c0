"""Garbage collection over a store of many chunks: time and peak memory of planning and of
deleting, on the directory store and the memory store.

    python benchmarks/bench_gc.py [--chunks 100000] [--chunk-size 512]

The store holds two files' chunks: one whose map gc is given (half the chunks, a two-level
map), one abandoned (the other half, all garbage). ``grace=0``: every unreferenced chunk goes.
Rows: the dry run (plan: list with stamps, walk every level of the map, compute candidates)
and the deleting run. The directory rows run gc in a fresh process that only opens the store,
reads the map and collects: "peak RSS MiB" is that process's peak (Python and the imports
included, ~35 MiB); the note says what gc itself allocated at its peak (``tracemalloc``, in a
separate dry run: tracing slows Python down). The memory store is collected in this process;
its own chunks are not counted in what gc allocated.
Setting the store up (encrypting N chunks) is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from _common import report, row

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pqselfenc import (  # noqa: E402
    ChunkStore,
    DataMap,
    DirectoryChunkStore,
    EncryptionConfig,
    MemoryChunkStore,
    SelfEncryptor,
)
from pqselfenc.core.gc import collect_garbage  # noqa: E402

CHILD = """
import json, resource, sys, time, tracemalloc
from pqselfenc import DataMap, DirectoryChunkStore
from pqselfenc.core.gc import GcMap, collect_garbage
where, map_file, mode = sys.argv[1:4]
store, data_map = DirectoryChunkStore(where), DataMap.from_bytes(open(map_file, "rb").read())
if mode == "trace":
    tracemalloc.start()
start = time.perf_counter()
plan = collect_garbage(store, [GcMap(data_map, "keep")], delete=mode == "delete", grace=0)
seconds = time.perf_counter() - start
peak = tracemalloc.get_traced_memory()[1] if mode == "trace" else None
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "gc_mib": peak and peak / 2**20, "rss_mib": rss,
                  "chunks": plan.chunks, "candidates": len(plan.candidates),
                  "deleted": plan.deleted}))
"""


def fill(store: ChunkStore, chunks: int, config: EncryptionConfig) -> DataMap:
    """Half the chunks under a map that is returned, half abandoned."""
    half = chunks // 2 * config.chunk_size
    keep, _ = SelfEncryptor(os.urandom(half), config, chunk_store=store).encrypt()
    SelfEncryptor(os.urandom(half), config, chunk_store=store).encrypt()
    return keep


def directory_rows(chunks: int, config: EncryptionConfig) -> list[dict[str, object]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-gc-") as work:
        store = DirectoryChunkStore(Path(work) / "store", fsync=False)
        keep = fill(store, chunks, config)
        (Path(work) / "keep.map").write_bytes(keep.to_bytes())
        runs = {m: _child(store.root, Path(work) / "keep.map", m) for m in ("trace", "plan")}
        runs["delete"] = _child(store.root, Path(work) / "keep.map", "delete")
        rows.append(_row("directory", "plan", {**runs["plan"], "gc_mib": runs["trace"]["gc_mib"]}))
        rows.append(_row("directory", "delete", runs["delete"]))
    return rows


def _child(root: Path, map_file: Path, mode: str) -> dict[str, float]:
    """gc in a fresh process (``trace``: a dry run under tracemalloc, for its memory only)."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), str(map_file), mode],
        capture_output=True, text=True, check=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    got: dict[str, float] = json.loads(done.stdout)
    return got


def memory_rows(chunks: int, config: EncryptionConfig) -> list[dict[str, object]]:
    store = MemoryChunkStore()
    keep = fill(store, chunks, config)
    tracemalloc.start()
    collect_garbage(store, [keep], grace=0)
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    rows = []
    for mode in ("plan", "delete"):
        start = time.perf_counter()
        plan = collect_garbage(store, [keep], delete=mode == "delete", grace=0)
        seconds = time.perf_counter() - start
        got = {"seconds": seconds, "gc_mib": traced if mode == "plan" else None,
               "chunks": plan.chunks, "candidates": len(plan.candidates),
               "deleted": plan.deleted}  # fmt: skip
        rows.append(_row("memory", mode, got))
    return rows


def _row(store: str, mode: str, got: dict[str, float | None]) -> dict[str, object]:
    note = f"{got['chunks']} chunks, {got['candidates']} candidates"
    if mode == "delete":
        note += f", {got['deleted']} deleted"
    if got.get("gc_mib") is not None:
        note += f"; gc allocated {got['gc_mib']:.1f} MiB at its peak"
    seconds = got["seconds"] or 0.0
    return row("gc", f"{store}: {mode}", ms=seconds * 1000,
               **{"peak RSS MiB": got.get("rss_mib")}, note=note)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--chunk-size", type=int, default=512)
    parser.add_argument("--json", action="store_true", help="rows as JSON (for run_all.py)")
    args = parser.parse_args()
    config = EncryptionConfig(chunk_size=args.chunk_size)
    rows = directory_rows(args.chunks, config) + memory_rows(args.chunks, config)
    header = f"gc over {args.chunks} chunks of {args.chunk_size} bytes, half referenced, grace 0"
    report("gc", rows, header)


if __name__ == "__main__":
    main()
