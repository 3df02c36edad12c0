"""Many small files: ``pqselfenc encrypt`` of 10,000 files of 4 KiB in one call against
``restic backup`` of the same folder, alternating runs in one session, wall clock including
start-up; and what each costs the file system per input file.

pqselfenc runs ``python3 -m pqselfenc.cli encrypt FILES... --store DIR --out MAPS/ -q`` into a
fresh directory store and map folder each run (unsealed maps, default chunking); restic runs
``restic backup FOLDER -q`` into a fresh repository (init not timed). Target: not slower than
restic (ratio restic / pqselfenc >= 1).

Overhead, from one more untimed run of each: the files and folders each leaves behind (counted
on disk) and, when ``strace`` is installed, the system calls that make a file durable or cost a
thread: fsync/fdatasync, openat, renames, links, mkdir, clone (``strace -f -c``, calls that failed
included, e.g. mkdir of a folder that exists; its own overhead makes that run slow, so it is not
timed). Shown per input file.

Python has a bytecode cache (one untimed warm-up fills it). ``--dir`` places the session
(default: the temp folder; bench_restic.py says why the place matters for file creation).

    python benchmarks/bench_small_files.py [--files N] [--kib K] [--runs N] [--dir DIR] [--json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

from _common import Row, median, python_env, report, row, run_process

TRACED = "fsync,fdatasync,openat,rename,renameat,renameat2,link,linkat,mkdir,mkdirat,clone,clone3"
SHOWN = ("fsync", "openat", "rename", "link", "mkdir", "clone")


class Session:
    """The input folder and one run of each tool."""

    def __init__(self, work: Path, files: int, kib: int) -> None:
        self.work = work
        self.folder = work / "files"
        self.folder.mkdir()
        for i in range(files):
            (self.folder / f"f{i:06d}").write_bytes(os.urandom(kib * 1024))
        self.inputs = sorted(str(p) for p in self.folder.iterdir())
        self.env = python_env(work, dict(os.environ, RESTIC_PASSWORD="benchmark",
                              RESTIC_CACHE_DIR=str(work / "restic-cache")))  # fmt: skip

    def pqselfenc_cmd(self, tag: str) -> tuple[list[str], list[Path]]:
        store, maps = self.work / f"store-{tag}", self.work / f"maps-{tag}"
        maps.mkdir()
        home = str(self.work / "home")
        cmd = [sys.executable, "-m", "pqselfenc.cli", "encrypt", *self.inputs,
               "--store", str(store), "--out", str(maps), "--home", home, "-q"]  # fmt: skip
        return cmd, [store, maps]

    def restic_cmd(self, tag: str) -> tuple[list[str], list[Path]]:
        repo = self.work / f"repo-{tag}"
        run_process(["restic", "-r", str(repo), "init", "-q"], self.env)
        return ["restic", "-r", str(repo), "backup", str(self.folder), "-q"], [repo]

    def timed(self, make: str, tag: str) -> float:
        cmd, made = getattr(self, make)(tag)
        seconds = run_process(cmd, self.env)[0]
        for path in made:
            shutil.rmtree(path)
        return seconds

    def overhead(self, make: str, tag: str) -> dict[str, int]:
        """Files and folders left on disk, and (with strace) the traced system calls."""
        cmd, made = getattr(self, make)(tag)
        counts: Counter[str] = Counter()
        if shutil.which("strace"):
            trace = self.work / f"strace-{tag}"
            cmd = ["strace", "-f", "-c", "-o", str(trace), "-e", f"trace={TRACED}", *cmd]
            run_process(cmd, self.env)
            counts.update(_syscalls(trace.read_text()))
        else:
            run_process(cmd, self.env)
        for path in made:
            for _, dirs, files in os.walk(path):
                counts["files"] += len(files)
                counts["folders"] += len(dirs)
            shutil.rmtree(path)
        return dict(counts)


def _syscalls(summary: str) -> Counter[str]:
    """Calls per family (``SHOWN``; fdatasync counts as fsync) from an ``strace -c`` table."""
    counts: Counter[str] = Counter()
    for line in summary.splitlines():
        cells = line.split()
        if len(cells) >= 5 and cells[3].isdigit():
            family = next((s for s in SHOWN if cells[-1].startswith(s)), None)
            family = "fsync" if cells[-1] == "fdatasync" else family
            if family:
                counts[family] += int(cells[3])
    return counts


def overhead_note(counts: dict[str, int], files: int) -> str:
    shown = ("files", "folders", *(s for s in SHOWN if s in counts))
    return ", ".join(f"{key} {counts.get(key, 0) / files:.2f}" for key in shown) + " per input"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--kib", type=int, default=4, help="size of each file in KiB (4)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if shutil.which("restic") is None:
        raise SystemExit("restic is not installed (apt-get install restic)")
    args.dir.mkdir(parents=True, exist_ok=True)
    ours: list[float] = []
    theirs: list[float] = []
    with tempfile.TemporaryDirectory(prefix="pqselfenc-bench-", dir=args.dir) as tmp:
        s = Session(Path(tmp), args.files, args.kib)
        s.timed("pqselfenc_cmd", "warm-up")  # untimed: fills the bytecode cache
        for i in range(args.runs):
            ours.append(s.timed("pqselfenc_cmd", str(i)))
            theirs.append(s.timed("restic_cmd", str(i)))
        cost = {t: s.overhead(f"{t}_cmd", f"trace-{t}") for t in ("pqselfenc", "restic")}
    ratios = [t / o for o, t in zip(ours, theirs, strict=True)]
    b = "small files"
    rows: list[Row] = [
        row(b, "pqselfenc encrypt (CLI, one call)", ms=median(ours) * 1e3,
            note=overhead_note(cost["pqselfenc"], args.files)),
        row(b, "restic backup of the folder", ms=median(theirs) * 1e3,
            note=overhead_note(cost["restic"], args.files)),
        row(b, "restic / pqselfenc", ratio=median(ratios), target=">= 1", ok=median(ratios) >= 1,
            note="> 1: pqselfenc faster; runs " + ", ".join(f"{r:.2f}" for r in ratios)),
    ]  # fmt: skip
    header = (
        f"{args.files} files of {args.kib} KiB, median of {args.runs} alternating runs, wall "
        f"clock; overhead from one untimed run each"
        + ("" if shutil.which("strace") else " (strace not installed: files only)")
    )
    report("bench_small_files", rows, header)


if __name__ == "__main__":
    main()
