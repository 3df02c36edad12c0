"""Run every benchmark script in benchmarks/ (each in its own process) and print one table.

    python benchmarks/run_all.py [--quick]

Scripts built on ``_common.report`` give rows for the table (``--json``); any other
``bench_*.py`` runs with its defaults and its output is appended verbatim, so new scripts are
picked up without editing this file. A script that fails is listed as failed, the rest still
run. ``--quick`` uses small sizes for the streaming scripts (a smoke run, not the figures).
Everything is also written to benchmarks/results/all.txt.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from _common import RESULTS, Row, machine, row, table

HERE = Path(__file__).resolve().parent
QUICK = {
    "bench_throughput.py": ["--size", "32", "--rounds", "1"],
    "bench_memory.py": ["--sizes", "16,64"],
    "bench_nonce.py": ["--size", "8", "--rounds", "1"],
    "bench_random_access.py": ["--size", "64", "--reads", "20"],
    "bench_restic.py": ["--size", "32", "--runs", "1"],
    "bench_floor.py": ["--size", "16", "--rounds", "1"],
    "bench_decrypt.py": ["--size", "16", "--runs", "1"],
    "bench_small_files.py": ["--files", "200", "--runs", "1"],
    "bench_startup.py": ["--rounds", "3"],
    "bench_keystore_backends.py": ["--runs", "2"],
    "bench_gc.py": ["--chunks", "4000"],
}


def run(script: Path, quick: bool) -> tuple[list[Row], str]:
    tabular = "from _common import" in script.read_text()
    args = (["--json"] if tabular else []) + (QUICK.get(script.name, []) if quick else [])
    print(f"running {script.name} {' '.join(args)}", file=sys.stderr, flush=True)
    done = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, cwd=HERE
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return [row(script.stem, "FAILED", ok=False, note=last[:120])], ""
    if tabular:
        return json.loads(done.stdout.strip().splitlines()[-1]), ""
    return [], f"\n== {script.name} ==\n{done.stdout.rstrip()}\n"


def main() -> None:
    quick = "--quick" in sys.argv
    rows: list[Row] = []
    texts: list[str] = []
    for script in sorted(HERE.glob("bench_*.py")):
        got, text = run(script, quick)
        rows += got
        texts.append(text)
    title = f"pqselfenc benchmarks ({machine()}{', quick sizes' if quick else ''})"
    out = title + "\n" + table(rows) + "\n" + "".join(texts)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "all.txt").write_text(out)
    print(out)
    print(f"written to {RESULTS / 'all.txt'}")


if __name__ == "__main__":
    main()
