"""Against what users run today: encrypting a file into a directory store end to end through
the command line (``python -m pqselfenc.cli encrypt FILE --store DIR --out MAP``) versus
``restic backup`` of the same file into a fresh local repository (init not timed), alternating
runs in the same session. Wall-clock time includes interpreter start-up. Target: >= 3x.

    python benchmarks/bench_restic.py [--size MIB] [--runs N] [--json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import MiB, mbps, median, report, row


def run_timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def pqselfenc_once(work: Path, i: int, env: dict[str, str]) -> float:
    cmd = [sys.executable, "-m", "pqselfenc.cli", "encrypt", str(work / "input"),
           "--store", str(work / f"store-{i}"), "--out", str(work / f"map-{i}"),
           "--home", str(work / "home"), "-q"]  # fmt: skip
    seconds = run_timed(cmd, env)
    shutil.rmtree(work / f"store-{i}")
    return seconds


LIBRARY = (
    "import sys; from pqselfenc import DirectoryChunkStore as D; "
    "from pqselfenc.streaming import encrypt_file as e; "
    "e(sys.argv[1], D(sys.argv[2], fsync=sys.argv[3] == 'on'))"
)


def library_once(work: Path, i: int, env: dict[str, str], fsync: str) -> float:
    store = work / f"lib-{i}"
    cmd = [sys.executable, "-c", LIBRARY, str(work / "input"), str(store), fsync]
    seconds = run_timed(cmd, env)
    shutil.rmtree(store)
    return seconds


def restic_once(work: Path, i: int, env: dict[str, str]) -> float:
    repo = str(work / f"repo-{i}")
    subprocess.run(["restic", "-r", repo, "init", "-q"], check=True, env=env,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    seconds = run_timed(["restic", "-r", repo, "backup", str(work / "input"), "-q"], env)
    shutil.rmtree(repo)
    return seconds


def restic_version() -> str:
    out = subprocess.run(["restic", "version"], check=True, capture_output=True, text=True)
    return out.stdout.split(" compiled")[0].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="MiB (256)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if shutil.which("restic") is None:
        raise SystemExit("restic is not installed (apt-get install restic)")
    size = args.size * MiB
    ours: list[float] = []
    theirs: list[float] = []
    lib: dict[str, list[float]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory(prefix="pqselfenc-bench-") as tmp:
        work = Path(tmp)
        with open(work / "input", "wb") as f:
            for _ in range(args.size):
                f.write(os.urandom(MiB))
        env = dict(os.environ, RESTIC_PASSWORD="benchmark", HOME=str(work / "home"),
                   RESTIC_CACHE_DIR=str(work / "restic-cache"))  # fmt: skip
        for i in range(args.runs):
            ours.append(pqselfenc_once(work, i, env))
            theirs.append(restic_once(work, i, env))
            for fsync, times in lib.items():
                times.append(library_once(work, i, env, fsync))
    ratios = [t / o for o, t in zip(ours, theirs, strict=True)]
    b = "vs restic"
    rows = [
        row(b, "pqselfenc encrypt (CLI)", **{"MB/s": mbps(size, median(ours))},
            ms=median(ours) * 1e3),
        row(b, restic_version() + " backup", **{"MB/s": mbps(size, median(theirs))},
            ms=median(theirs) * 1e3),
        *(row(b, f"encrypt_file in python3 -c, fsync {fsync}",
              **{"MB/s": mbps(size, median(times))}, ms=median(times) * 1e3,
              ratio=median(theirs) / median(times), note="x restic; library, no CLI")
          for fsync, times in lib.items()),
        row(b, "speedup over restic", ratio=median(ratios), target=">= 3x",
            ok=median(ratios) >= 3, note=f"per-run ratios {', '.join(f'{r:.2f}' for r in ratios)}"),
    ]  # fmt: skip
    header = f"{args.size} MiB random file, median of {args.runs} alternating runs, wall clock"
    report("bench_restic", rows, header)


if __name__ == "__main__":
    main()
