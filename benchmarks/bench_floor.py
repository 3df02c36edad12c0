"""The command against the floor of this machine: how close ``pqselfenc encrypt``/``decrypt`` of
one large file come to what the format's own work costs here, measured in the same run.

The floor of one direction is the sum of
- the CPU time of its primitives over 1 MiB pieces of the same data, timed in this process on
  one thread and divided by the number of cores (``os.cpu_count()``): SHA3-256 of the
  plaintext, AES-256-GCM (``encrypt_into``/``decrypt_into`` into a preallocated buffer: the
  primitive at its fastest) and SHA-256 of the ciphertext. Dividing assumes the work spreads
  perfectly over every core (hashlib releases the GIL; AES-GCM holds it, but is the smallest
  part) -- a floor, not a forecast;
- a bare interpreter start (``python3 -c pass``, wall clock);
- writing the same bytes to a fresh file in the folder the store lives in and fsyncing it, in
  a fresh process (wall clock of the write and the fsync, measured in that process). Encrypt
  into a memory store writes nothing, so its floor has no write; every decrypt writes its
  output file.

Rows, each the median over rounds of floor / command (1.0 = at the floor, goal >= 0.9):
- ``pqselfenc encrypt FILE --store DIR`` and ``pqselfenc decrypt MAP --store DIR --out FILE``,
  run as subprocesses with ``--quiet`` (directory store, a fresh store for every encrypt);
- the same on a ``MemoryChunkStore``: the CLI has none, so a ``python3 -c`` driver calls
  ``encrypt_file`` / ``decrypt_file`` (its wall clock is the command time; for decrypt the
  driver first encrypts into the memory store, and that time, measured inside, is subtracted).

Every round runs everything once, alternating, and measures the primitives again; a round's
ratios use that round's floor. The note of each row adds a load-independent view: the CPU time
of the floor (primitives, not divided, + a bare start) over the command's own CPU time (its
rusage: every thread, user and system), i.e. how much CPU the command spends beyond the
format's own work. On a loaded machine the wall-clock ratio is not meaningful (the floor
counts CPU time, the command waits for a core); the CPU ratio still is. Python has a bytecode
cache (one untimed warm-up fills it). ``--dir`` places the session (default: the temp folder;
see bench_restic.py on why the place matters for a store that creates a file per chunk).

    python benchmarks/bench_floor.py [--size MIB] [--rounds N] [--dir DIR] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import MiB, median, python_env, report, row, run_process
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

CLI = ["-m", "pqselfenc.cli"]
TAG = 16
GOAL = 0.9

WRITE = """
import os, sys, time
path, size = sys.argv[1], int(sys.argv[2])
block = os.urandom(1 << 20)
start = time.perf_counter()
with open(path, "wb") as f:
    for _ in range(size >> 20):
        f.write(block)
    f.flush()
    os.fsync(f.fileno())
print(time.perf_counter() - start)
"""

MEMORY_ENCRYPT = """
import sys
from pqselfenc import MemoryChunkStore
from pqselfenc.streaming import encrypt_file
encrypt_file(sys.argv[1], MemoryChunkStore())
"""

MEMORY_DECRYPT = """
import sys, time
from pqselfenc import MemoryChunkStore
from pqselfenc.streaming import decrypt_file, encrypt_file
store = MemoryChunkStore()
wall, cpu = time.perf_counter(), time.process_time()
data_map = encrypt_file(sys.argv[1], store)
print(time.perf_counter() - wall, time.process_time() - cpu)
decrypt_file(data_map, store, sys.argv[2])
"""

Timed = tuple[float, float]  # (wall clock, CPU) seconds


def primitives(data: memoryview) -> tuple[float, float]:
    """CPU seconds, one thread, of (encrypt, decrypt) primitives over all of ``data``."""
    aes, nonce = AESGCM(os.urandom(32)), os.urandom(12)
    parts = [data[i : i + MiB] for i in range(0, len(data), MiB)]
    out, back = bytearray(MiB + TAG), bytearray(MiB)
    sealed = aes.encrypt(nonce, parts[0], b"")  # one chunk's ciphertext, opened once per piece

    def cpu(func: Callable[[], object]) -> float:
        start = time.process_time()
        func()
        return time.process_time() - start

    sha3 = cpu(lambda: [hashlib.sha3_256(p).digest() for p in parts])
    enc = cpu(lambda: [aes.encrypt_into(nonce, p, b"", out) for p in parts])
    dec = cpu(lambda: [aes.decrypt_into(nonce, sealed, b"", back) for _ in parts])
    sha2 = cpu(lambda: [hashlib.sha256(p).digest() for p in parts])  # ciphertext: 16 bytes more
    return sha3 + enc + sha2, sha3 + dec + sha2


class Session:
    """The run's folder: input, a store to decrypt from, and the commands."""

    def __init__(self, work: Path, size_mib: int) -> None:
        self.work, self.size = work, size_mib * MiB
        self.env = python_env(work)
        self.input = work / "input"
        with open(self.input, "wb") as f:
            for _ in range(size_mib):
                f.write(os.urandom(MiB))
        self.home = work / "home"
        self.map = work / "input.map"
        self.store = work / "store-decrypt"
        self.cli("encrypt", str(self.input), "--store", str(self.store), "--out", str(self.map))

    def cli(self, *args: str) -> Timed:
        cmd = [sys.executable, *CLI, *args, "--home", str(self.home), "-q"]
        return run_process(cmd, self.env)

    def encrypt_dir(self, tag: str) -> Timed:
        store = self.work / f"store-{tag}"
        timed = self.cli("encrypt", str(self.input), "--store", str(store),
                         "--out", str(self.work / f"map-{tag}"), "--force")  # fmt: skip
        shutil.rmtree(store)
        return timed

    def decrypt_dir(self, tag: str) -> Timed:
        out = self.work / f"out-{tag}"
        timed = self.cli("decrypt", str(self.map), "--store", str(self.store), "--out", str(out))
        self._check_and_remove(out)
        return timed

    def encrypt_memory(self) -> Timed:
        return run_process([sys.executable, "-c", MEMORY_ENCRYPT, str(self.input)], self.env)

    def decrypt_memory(self, tag: str) -> Timed:
        """The driver's wall and CPU time minus those of its untimed encrypt (it prints them)."""
        out, stdout = self.work / f"out-mem-{tag}", self.work / f"stdout-{tag}"
        cmd = [sys.executable, "-c", MEMORY_DECRYPT, str(self.input), str(out)]
        with open(stdout, "wb") as sink:
            wall, cpu = run_process(cmd, self.env, stdout=sink)
        setup_wall, setup_cpu = (float(x) for x in stdout.read_text().split())
        stdout.unlink()
        self._check_and_remove(out)
        return wall - setup_wall, cpu - setup_cpu

    def bare(self) -> Timed:
        return run_process([sys.executable, "-c", "pass"], self.env)

    def write_fsync(self, tag: str) -> float:
        path = self.work / f"write-{tag}"
        cmd = [sys.executable, "-c", WRITE, str(path), str(self.size)]
        done = subprocess.run(cmd, env=self.env, check=True, capture_output=True, text=True)
        path.unlink()
        return float(done.stdout)

    def _check_and_remove(self, out: Path) -> None:
        if out.stat().st_size != self.size:
            raise SystemExit(f"{out} has {out.stat().st_size} bytes, expected {self.size}")
        out.unlink()


COMMANDS = {  # key -> (floor key, CPU floor key)
    "enc_dir": ("floor_e_dir", "cpu_e"), "dec_dir": ("floor_d", "cpu_d"),
    "enc_mem": ("floor_e_mem", "cpu_e"), "dec_mem": ("floor_d", "cpu_d"),
}  # fmt: skip


def one_round(s: Session, data: memoryview, tag: str) -> dict[str, float]:
    """Every command once, then the floors of this round; wall and CPU ratios."""
    cores = os.cpu_count() or 1
    (start, start_cpu), write = s.bare(), s.write_fsync(tag)
    timed = {"enc_dir": s.encrypt_dir(tag), "dec_dir": s.decrypt_dir(tag),
             "enc_mem": s.encrypt_memory(), "dec_mem": s.decrypt_memory(tag)}  # fmt: skip
    prim_e, prim_d = primitives(data)
    sample = {"start": start, "write": write, "prim_e": prim_e / cores, "prim_d": prim_d / cores}
    sample |= {
        "floor_e_dir": prim_e / cores + start + write, "floor_e_mem": prim_e / cores + start,
        "floor_d": prim_d / cores + start + write,
        "cpu_e": prim_e + start_cpu, "cpu_d": prim_d + start_cpu,
    }  # fmt: skip
    for key, (wall, cpu) in timed.items():
        floor, cpu_floor = COMMANDS[key]
        sample |= {key: wall, f"r_{key}": sample[floor] / wall, f"c_{key}": sample[cpu_floor] / cpu}
    return sample


def rows(runs: dict[str, list[float]]) -> list[dict[str, object]]:
    m = {key: median(values) for key, values in runs.items()}
    b = "floor"

    def ratio_row(name: str, key: str) -> dict[str, object]:
        floor = COMMANDS[key][0]
        per_round = ", ".join(f"{r:.2f}" for r in runs[f"r_{key}"])
        note = (f"floor {m[floor] * 1e3:.0f} ms; rounds {per_round}; "
                f"CPU: floor/command {m[f'c_{key}']:.2f}")  # fmt: skip
        return row(b, name, ratio=m[f"r_{key}"], target=f">= {GOAL} of floor",
                   ok=m[f"r_{key}"] >= GOAL, ms=m[key] * 1e3, note=note)  # fmt: skip

    parts = (f"primitives/cores enc {m['prim_e'] * 1e3:.0f} ms, dec {m['prim_d'] * 1e3:.0f} ms; "
             f"start {m['start'] * 1e3:.0f} ms; write+fsync {m['write'] * 1e3:.0f} ms")  # fmt: skip
    return [
        row(b, "floor parts", note=parts),
        ratio_row("pqselfenc encrypt, directory store", "enc_dir"),
        ratio_row("pqselfenc decrypt, directory store", "dec_dir"),
        ratio_row("encrypt_file, memory store (python -c)", "enc_mem"),
        ratio_row("decrypt_file, memory store (python -c)", "dec_mem"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="MiB (256)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="pqselfenc-bench-", dir=args.dir) as tmp:
        session = Session(Path(tmp), args.size)
        data = memoryview(session.input.read_bytes())
        session.encrypt_dir("warm-up")  # untimed: fills the bytecode cache
        session.decrypt_memory("warm-up")
        for i in range(args.rounds):
            for key, value in one_round(session, data, str(i)).items():
                runs.setdefault(key, []).append(value)
    header = (
        f"{args.size} MiB random file, 1 MiB chunks, median of {args.rounds} alternating rounds; "
        f"floor = primitives CPU / {os.cpu_count()} cores (assumed perfectly parallel) + "
        f"bare start + write+fsync of the bytes; ratio = floor / command"
    )
    report("bench_floor", rows(runs), header)


if __name__ == "__main__":
    main()
