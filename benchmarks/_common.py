"""Shared bits of the benchmark scripts: timing, tables, result files."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
MiB = 1 << 20

Row = dict[str, Any]


def timed(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def run_process(
    cmd: Sequence[str], env: dict[str, str] | None = None, **popen: Any
) -> tuple[float, float]:
    """Run ``cmd`` to completion (it must exit 0); its (wall clock, CPU user+system) seconds.

    CPU time comes from the child's own rusage (``os.wait4``), so it counts only that process,
    and moves less than wall clock on a loaded machine. stdout is discarded, stderr kept for
    the error message.
    """
    popen.setdefault("stdout", subprocess.DEVNULL)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, **popen)
    stderr = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {stderr.decode()[-500:]}")
    return wall, usage.ru_utime + usage.ru_stime


def python_env(work: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: ours) for a Python child that has a bytecode cache, as a package
    installed by pip has: the cache goes into ``work`` (one untimed run fills it)."""
    base = dict(os.environ if env is None else env)
    base.pop("PYTHONDONTWRITEBYTECODE", None)
    base["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return base


def mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def row(bench: str, name: str, **cells: Any) -> Row:
    return {"bench": bench, "name": name, **cells}


COLUMNS = [
    "bench", "name", "MB/s", "ratio", "target", "peak RSS MiB", "ms", "+ms", "cpu +ms", "ok",
    "note",
]  # fmt: skip


def table(rows: list[Row]) -> str:
    cols = [c for c in COLUMNS if any(c in r for r in rows)]
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)) for line in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def report(name: str, rows: list[Row], header: str = "") -> None:
    """Print the table (or JSON rows with --json, for run_all.py) and write both to results/."""
    RESULTS.mkdir(exist_ok=True)
    text = (header + "\n" if header else "") + table(rows)
    (RESULTS / f"{name}.txt").write_text(text + "\n")
    (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=2) + "\n")
    if "--json" in sys.argv:
        print(json.dumps(rows))
    else:
        print(text)
        print(f"\nwritten to {RESULTS / (name + '.txt')}")


def machine() -> str:
    return f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"
