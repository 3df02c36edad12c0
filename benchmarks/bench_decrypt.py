"""Decrypt side by side: ``pqselfenc decrypt`` against ``restic restore`` and ``age -d`` of the
same file, alternating runs in one session, wall clock including start-up.

Setup (not timed): the file is encrypted once by each tool -- ``pqselfenc encrypt`` into a
directory store (unsealed map), ``restic backup`` into a fresh local repository, ``age -r``
to an X25519 recipient from ``age-keygen``. Each round then runs, in turn:

- ``pqselfenc decrypt MAP --store DIR --out FILE -q``: the output appears whole, fsynced;
- ``pqselfenc decrypt MAP --store DIR -q`` with stdout redirected to a file: no fsync, which
  is what the other two do (neither fsyncs what it writes);
- ``restic restore latest --target DIR`` (every restic command first derives the repository
  key with scrypt; the row ``restic cat config`` shows that fixed cost);
- ``age -d -i KEY -o FILE``.

Each output is checked (size) and deleted after its run. Ratios are per round, other / ours
(> 1: pqselfenc is faster), and the table shows medians; the notes add each process's own CPU
time (rusage, every thread) and the same ratio in CPU time, which a loaded machine disturbs
less than wall clock. Python has a bytecode cache (one
untimed warm-up fills it). Target: pqselfenc decrypt at least as fast as restic restore (>= 1).
Against age only the ratio is reported: age decrypts with ChaCha20-Poly1305 and hashes nothing,
while the format must check SHA-256 of every stored chunk and SHA3-256 of every plaintext, and
those two hashes alone cost more CPU than age's whole decryption.

    python benchmarks/bench_decrypt.py [--size MIB] [--runs N] [--dir DIR] [--json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import MiB, Row, mbps, median, python_env, report, row, run_process

CLI = ["-m", "pqselfenc.cli"]
Timed = tuple[float, float]  # (wall clock, CPU of the process) seconds


class Peers:
    """The input encrypted by each tool, and one timed decrypt per tool."""

    def __init__(self, work: Path, size_mib: int) -> None:
        self.work, self.size = work, size_mib * MiB
        self.input = work / "input"
        with open(self.input, "wb") as f:
            for _ in range(size_mib):
                f.write(os.urandom(MiB))
        self.env = python_env(work, dict(os.environ, RESTIC_PASSWORD="benchmark",
                              RESTIC_CACHE_DIR=str(work / "restic-cache")))  # fmt: skip
        self.store, self.map, self.repo = work / "store", work / "input.map", work / "repo"
        self.key, self.aged = work / "age-key.txt", work / "input.age"
        self._setup()

    def _run(self, *cmd: str, out: Path | None = None) -> Timed:
        if out is None:
            return run_process(list(cmd), self.env)
        with open(out, "wb") as sink:
            return run_process(list(cmd), self.env, stdout=sink)

    def _setup(self) -> None:
        self.pqselfenc("encrypt", str(self.input), "--out", str(self.map))
        self._run("restic", "-r", str(self.repo), "init", "-q")
        self._run("restic", "-r", str(self.repo), "backup", str(self.input), "-q")
        subprocess.run(["age-keygen", "-o", str(self.key)], check=True, capture_output=True)
        public = next(line.split(": ")[1] for line in self.key.read_text().splitlines()
                      if line.startswith("# public key: "))  # fmt: skip
        self._run("age", "-r", public, "-o", str(self.aged), str(self.input))

    def pqselfenc(self, *args: str, out: Path | None = None) -> Timed:
        home = ["--store", str(self.store), "--home", str(self.work / "home"), "-q"]
        return self._run(sys.executable, *CLI, *args, *home, out=out)

    def decrypt_file(self, tag: str) -> Timed:
        out = self.work / f"out-{tag}"
        return self._done(out, self.pqselfenc("decrypt", str(self.map), "--out", str(out)))

    def decrypt_stdout(self, tag: str) -> Timed:
        out = self.work / f"out-{tag}"
        return self._done(out, self.pqselfenc("decrypt", str(self.map), out=out))

    def restic(self, tag: str) -> Timed:
        target = self.work / f"restore-{tag}"
        cmd = ["restic", "-r", str(self.repo), "restore", "latest", "--target", str(target), "-q"]
        timed = self._run(*cmd)
        self._done(target / self.input.relative_to("/"), timed)
        shutil.rmtree(target)
        return timed

    def restic_key(self) -> Timed:
        return self._run("restic", "-r", str(self.repo), "cat", "config", "-q")

    def age(self, tag: str) -> Timed:
        out = self.work / f"out-{tag}"
        return self._done(out, self._run("age", "-d", "-i", str(self.key), "-o", str(out),
                                         str(self.aged)))  # fmt: skip

    def _done(self, out: Path, timed: Timed) -> Timed:
        if out.stat().st_size != self.size:
            raise SystemExit(f"{out}: {out.stat().st_size} bytes, expected {self.size}")
        out.unlink()
        return timed


def version(cmd: list[str]) -> str:
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return done.stdout.split(" compiled")[0].strip()


def table_rows(runs: dict[str, list[float]], size: int) -> list[Row]:
    m = {key: median(values) for key, values in runs.items()}
    b = "decrypt vs"

    def timed(name: str, key: str, note: str = "") -> Row:
        note = f"CPU {m[key + '_cpu'] * 1e3:.0f} ms" + (f"; {note}" if note else "")
        return row(b, name, **{"MB/s": mbps(size, m[key])}, ms=m[key] * 1e3, note=note)

    fixed = row(b, "restic cat config", ms=m["restic_key"] * 1e3,
                note=f"CPU {m['restic_key_cpu'] * 1e3:.0f} ms; restic's fixed cost per command: "
                "start + scrypt key derivation")  # fmt: skip

    def ratio(name: str, theirs: str, ours: str) -> Row:
        """other / ours; only restic has a target (see the module docstring)."""
        rs = [t / o for t, o in zip(runs[theirs], runs[ours], strict=True)]
        theirs_cpu, ours_cpu = runs[theirs + "_cpu"], runs[ours + "_cpu"]
        cpu = median([t / o for t, o in zip(theirs_cpu, ours_cpu, strict=True)])
        per_round = ", ".join(f"{r:.2f}" for r in rs)
        target = {"target": ">= 1", "ok": median(rs) >= 1} if theirs == "restic" else {}
        return row(b, name, ratio=median(rs), **target,
                   note=f"> 1: pqselfenc faster; rounds {per_round}; CPU {cpu:.2f}")  # fmt: skip

    return [
        timed("pqselfenc decrypt --out FILE", "ours", "atomic: temp file, fsync, rename"),
        timed("pqselfenc decrypt > FILE", "ours_stdout", "no fsync, as restic and age"),
        timed(version(["restic", "version"]) + " restore", "restic"),
        fixed,
        timed("age " + version(["age", "--version"]) + " -d", "age"),
        ratio("restic restore / pqselfenc decrypt --out", "restic", "ours"),
        ratio("restic restore / pqselfenc decrypt > FILE", "restic", "ours_stdout"),
        ratio("age -d / pqselfenc decrypt --out", "age", "ours"),
        ratio("age -d / pqselfenc decrypt > FILE", "age", "ours_stdout"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="MiB (256)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for tool in ("restic", "age", "age-keygen"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install restic age)")
    args.dir.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="pqselfenc-bench-", dir=args.dir) as tmp:
        peers = Peers(Path(tmp), args.size)
        peers.decrypt_file("warm-up")  # untimed: fills the bytecode cache
        for i in range(args.runs):
            sample = {
                "ours": peers.decrypt_file(str(i)), "restic": peers.restic(str(i)),
                "ours_stdout": peers.decrypt_stdout(str(i)), "age": peers.age(str(i)),
                "restic_key": peers.restic_key(),
            }  # fmt: skip
            for key, (wall, cpu) in sample.items():
                runs.setdefault(key, []).append(wall)
                runs.setdefault(key + "_cpu", []).append(cpu)
    header = f"{args.size} MiB random file, median of {args.runs} alternating runs, wall clock"
    report("bench_decrypt", table_rows(runs, args.size * MiB), header)


if __name__ == "__main__":
    main()
