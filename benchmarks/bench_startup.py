"""Start-up: what a short command costs over a bare interpreter (``python3 -c pass``).

Every small-file invocation and every cron job pays it. Rows, each run as a fresh process in
alternating rounds (one round runs every row once, bare first); the table shows the median
over rounds of each row's difference to the bare run of the same round, in wall clock
("+ms") and in CPU time of the child ("cpu +ms", from its rusage: it moves less than wall
clock on a loaded machine):

- ``python3 -m pqselfenc.cli --version`` and the installed ``pqselfenc`` entry script (the one
  next to ``sys.executable``, not a pyenv shim), target <= 60 ms;
- ``pqselfenc decrypt`` of an unsealed 1 KiB file's map from a directory store to a file,
  target <= 60 ms;
- ``import pqselfenc``, ``--help`` and ``encrypt`` of the same 1 KiB file, for reference.

Python runs with a bytecode cache, as after ``pip install`` (one untimed warm-up fills it in
the run's folder). The note of each row lists how many modules it imports beyond the bare
interpreter (``-X importtime``) and any heavy one that should not be there.

``--wheel`` also builds a wheel of this checkout, installs it (no dependencies) into a venv
that sees this interpreter's packages, and measures the same rows there: an editable install
adds its own finder, a wheel does not. The checkout measured is the one Python imports:
run with it first on PYTHONPATH (``PYTHONPATH=$PWD python3 benchmarks/bench_startup.py``).

    python benchmarks/bench_startup.py [--rounds N] [--wheel] [--json]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import Row, median, python_env, report, row, run_process

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 60.0
# Modules a short command must not load (tests/test_startup.py holds the same idea as a test).
HEAVY = (
    "asyncio", "zstandard", "keyring", "argon2", "zxcvbn", "boto3", "botocore", "tqdm", "dask",
    "distributed", "pkcs11", "filelock", "pqselfenc.kem", "pqselfenc.keys",
)  # fmt: skip
CLI = ["-m", "pqselfenc.cli"]


def commands(work: Path, python: str, script: Path | None) -> dict[str, list[str]]:
    """Name -> argv of every row; the bare interpreter first."""
    store, home = str(work / "store"), str(work / "home")
    files = ["--store", store, "--home", home, "-q"]
    cmds = {
        "python3 -c pass (bare)": [python, "-c", "pass"],
        "import pqselfenc": [python, "-c", "import pqselfenc"],
        "python3 -m pqselfenc.cli --version": [python, *CLI, "--version"],
        "python3 -m pqselfenc.cli --help": [python, *CLI, "--help"],
        "decrypt 1 KiB (unsealed map, directory store)": [
            python, *CLI, "decrypt", str(work / "small.map"), *files,
            "--out", str(work / "small.out"), "--force",
        ],
        "encrypt 1 KiB (unsealed, directory store)": [
            python, *CLI, "encrypt", str(work / "small"), *files,
            "--out", str(work / "again.map"), "--force",
        ],
    }  # fmt: skip
    if script is not None:
        cmds["pqselfenc --version (entry script)"] = [str(script), "--version"]
    return cmds


TARGETS = ("--version", "decrypt 1 KiB")


def imported(cmd: list[str], env: dict[str, str]) -> set[str]:
    """Modules ``cmd`` imports, from ``-X importtime``."""
    argv = [cmd[0], "-X", "importtime", *cmd[1:]]
    if not Path(cmd[0]).name.startswith("python"):  # an entry script: run by its python
        python = Path(cmd[0]).read_text().splitlines()[0].removeprefix("#!").strip()
        argv = [python, "-X", "importtime", *cmd]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    lines = [line.split("|") for line in done.stderr.splitlines() if line.startswith("import")]
    return {cells[2].strip() for cells in lines[1:] if len(cells) == 3}


def measure(cmds: dict[str, list[str]], env: dict[str, str], rounds: int) -> list[Row]:
    for cmd in cmds.values():  # warm-up: fills the bytecode cache
        run_process(cmd, env)
    walls: dict[str, list[float]] = {name: [] for name in cmds}
    cpus: dict[str, list[float]] = {name: [] for name in cmds}
    for _ in range(rounds):
        for name, cmd in cmds.items():
            wall, cpu = run_process(cmd, env)
            walls[name].append(wall)
            cpus[name].append(cpu)
    bare_name = next(iter(cmds))
    bare = imported(cmds[bare_name], env)
    rows = []
    for name, cmd in cmds.items():
        extra = imported(cmd, env) - bare
        heavy = sorted({h for h in HEAVY for m in extra if m == h or m.startswith(h + ".")})
        plus = median([w - b for w, b in zip(walls[name], walls[bare_name], strict=True)])
        cpu = median([c - b for c, b in zip(cpus[name], cpus[bare_name], strict=True)])
        cells: Row = {"ms": median(walls[name]) * 1e3}
        if name != bare_name:
            cells |= {"+ms": plus * 1e3, "cpu +ms": cpu * 1e3}
        if any(t in name for t in TARGETS):
            cells |= {"target": f"<= {TARGET_MS:.0f} ms", "ok": plus * 1e3 <= TARGET_MS}
        note = f"{len(extra)} modules beyond bare" + (f"; heavy: {', '.join(heavy)}" * bool(heavy))
        rows.append(row("startup", name, **cells, note=note if name != bare_name else ""))
    return rows


def entry_script(bindir: Path) -> Path | None:
    script = bindir / "pqselfenc"
    return script if script.is_file() else None


def prepare(work: Path, python: str, env: dict[str, str]) -> None:
    """A 1 KiB file encrypted (unsealed) into a directory store: the map decrypt reads."""
    (work / "small").write_bytes(os.urandom(1024))
    store, home, out = str(work / "store"), str(work / "home"), str(work / "small.map")
    cmd = [python, *CLI, "encrypt", str(work / "small"), "--store", store, "--home", home]
    run_process([*cmd, "--out", out, "-q"], env)


def wheel_venv(work: Path) -> Path:
    """A venv (seeing this interpreter's packages) with a wheel of this checkout; its python."""
    wheels, venv = work / "wheels", work / "venv"
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(ROOT)], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    wheel = next(wheels.glob("pqselfenc-*.whl"))
    install = ["install", "--no-deps", "--ignore-installed", str(wheel)]  # over the editable one
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "-q", *install], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return venv / "bin" / "python"


def wheel_rows(work: Path, rounds: int) -> list[Row]:
    python = str(wheel_venv(work))
    env = python_env(work, {k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    probe = [python, "-c", "import pqselfenc; print(pqselfenc.__file__)"]
    done = subprocess.run(probe, env=env, check=True, capture_output=True, text=True)
    where = done.stdout.strip()
    if not where.startswith(str(work)):
        raise SystemExit(f"the venv imports pqselfenc from {where}, not from its wheel")
    rows = measure(commands(work, python, entry_script(Path(python).parent)), env, rounds)
    for r in rows:
        r["name"] = "wheel venv: " + r["name"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--wheel", action="store_true", help="also measure a wheel install")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pqselfenc-bench-") as tmp:
        work = Path(tmp)
        os.chdir(work)  # not the checkout: python -c would import it from the current folder
        env = python_env(work)
        prepare(work, sys.executable, env)
        script = entry_script(Path(sys.executable).parent)
        rows = measure(commands(work, sys.executable, script), env, args.rounds)
        if args.wheel:
            rows += wheel_rows(work, args.rounds)
        os.chdir(ROOT)
    header = (
        f"start-up over a bare interpreter, median of {args.rounds} alternating rounds "
        f"(+ms: wall clock, cpu +ms: child CPU time), bytecode cache on"
    )
    report("bench_startup", rows, header)


if __name__ == "__main__":
    main()
