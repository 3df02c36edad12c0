"""Against what users run today: encrypting a file into a directory store end to end through
the command line (``python -m pqselfenc.cli encrypt FILE --store DIR --out MAP``) versus
``restic backup`` of the same file into a fresh local repository (init not timed), alternating
runs in the same session. Wall-clock time includes interpreter start-up. Target: >= 3x.

Python runs with a bytecode cache, as a package installed by pip has one (restic is a compiled
binary); one untimed warm-up run fills it in a folder of the run's own. Environments that set
PYTHONDONTWRITEBYTECODE=1 compile every module from source at each start: the row "no
bytecode cache" shows what that costs.

Each store and repository is deleted right after its run (keeping them all made every later
run slower here: new page-cache pages, not recycled ones). ``--dir`` picks where the session's
folder goes (default: the temp folder). On an ext4 without a journal, as on the machine these
figures come from, creating an inode skips one by one every inode deleted in the last seconds
to minutes in its group, so a folder where much is deleted (/tmp, shared with every test run)
makes each new file and folder cost more: 416 inodes took 80-220 ms of CPU in /tmp, 10-37 ms
in /var/tmp or /work. pqselfenc creates one file per chunk, restic one per pack, so the effect
weighs on one side.

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


def pqselfenc_once(work: Path, tag: str, env: dict[str, str]) -> float:
    cmd = [sys.executable, "-m", "pqselfenc.cli", "encrypt", str(work / "input"),
           "--store", str(work / f"store-{tag}"), "--out", str(work / f"map-{tag}"),
           "--home", str(work / "home"), "-q"]  # fmt: skip
    seconds = run_timed(cmd, env)
    shutil.rmtree(work / f"store-{tag}")
    return seconds


def python_envs(work: Path, env: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(with a bytecode cache in ``work``, without any)."""
    cached = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cached["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    uncached = {k: v for k, v in env.items() if k != "PYTHONPYCACHEPREFIX"}
    uncached["PYTHONDONTWRITEBYTECODE"] = "1"
    return cached, uncached


LIBRARY = (
    "import sys; from pqselfenc import DirectoryChunkStore as D; "
    "from pqselfenc.streaming import encrypt_file as e; "
    "e(sys.argv[1], D(sys.argv[2], fsync=sys.argv[3] == 'on'))"
)


def library_once(work: Path, tag: str, env: dict[str, str], fsync: str) -> float:
    store = work / f"lib-{fsync}-{tag}"
    cmd = [sys.executable, "-c", LIBRARY, str(work / "input"), str(store), fsync]
    seconds = run_timed(cmd, env)
    shutil.rmtree(store)
    return seconds


def restic_once(work: Path, tag: str, env: dict[str, str]) -> float:
    repo = str(work / f"repo-{tag}")
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
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where the run's folder goes (default: the temp folder)",
    )
    args = parser.parse_args()
    if shutil.which("restic") is None:
        raise SystemExit("restic is not installed (apt-get install restic)")
    size = args.size * MiB
    ours: list[float] = []
    cold: list[float] = []
    theirs: list[float] = []
    lib: dict[str, list[float]] = {"on": [], "off": []}
    args.dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pqselfenc-bench-", dir=args.dir) as tmp:
        work = Path(tmp)
        with open(work / "input", "wb") as f:
            for _ in range(args.size):
                f.write(os.urandom(MiB))
        env = dict(os.environ, RESTIC_PASSWORD="benchmark", HOME=str(work / "home"),
                   RESTIC_CACHE_DIR=str(work / "restic-cache"))  # fmt: skip
        cached, uncached = python_envs(work, env)
        pqselfenc_once(work, "warm-up", cached)  # untimed: fills the bytecode cache
        library_once(work, "warm-up", cached, "on")
        for i in range(args.runs):
            ours.append(pqselfenc_once(work, str(i), cached))
            theirs.append(restic_once(work, str(i), env))
            for fsync, times in lib.items():
                times.append(library_once(work, str(i), cached, fsync))
            cold.append(pqselfenc_once(work, f"cold-{i}", uncached))
    ratios = [t / o for o, t in zip(ours, theirs, strict=True)]
    b = "vs restic"
    rows = [
        row(b, "pqselfenc encrypt (CLI)", **{"MB/s": mbps(size, median(ours))},
            ms=median(ours) * 1e3),
        row(b, restic_version() + " backup", **{"MB/s": mbps(size, median(theirs))},
            ms=median(theirs) * 1e3),
        row(b, "pqselfenc encrypt (CLI), no bytecode cache",
            **{"MB/s": mbps(size, median(cold))}, ms=median(cold) * 1e3,
            ratio=median(theirs) / median(cold), note="x restic; modules compiled at start"),
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
