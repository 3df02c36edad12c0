"""Helpers shared by the CLI tests: run ``main`` in-process and check the error contract."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from pqselfenc.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str

    def error_line(self) -> str:
        """The single ``pqselfenc: error:`` line; fails if stderr breaks the error contract."""
        assert self.code != 0, self
        assert "Traceback" not in self.err
        lines = self.err.splitlines()
        assert all(x.startswith("pqselfenc: ") for x in lines), self.err
        errors = [i for i, x in enumerate(lines) if x.startswith("pqselfenc: error: ")]
        hints = [i for i, x in enumerate(lines) if x.startswith("pqselfenc: hint: ")]
        assert len(errors) == 1, self.err
        assert hints in ([], [errors[0] + 1]), self.err
        return lines[errors[0]].removeprefix("pqselfenc: error: ")


def run(capsys: pytest.CaptureFixture[str], *argv: str | os.PathLike[str]) -> Result:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


class FakeTerminal(io.StringIO):
    """A text stream that says it is a terminal (with a binary buffer that records writes)."""

    def __init__(self) -> None:
        super().__init__()
        self.buffer = io.BytesIO()

    def isatty(self) -> bool:
        return True


def run_process(
    *argv: str, env: dict[str, str], cwd: Path, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """The real console script (``python -m pqselfenc.cli``) in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "pqselfenc.cli", *argv],
        env=env,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """A subprocess environment with its own HOME, data home and pqselfenc home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PQSELFENC_")}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / ".local" / "share"))
    for key in ("PQSELFENC_SECRET_SERVICE",):
        if key in os.environ:
            env[key] = os.environ[key]
    env.update(extra)
    return env


_WITH_PEAK = """import sys
from pqselfenc.cli import main
code = main(sys.argv[1:])
hwm = [x for x in open("/proc/self/status") if x.startswith("VmHWM:")]
sys.stderr.write("peak-kib " + hwm[0].split()[1] + "\\n")
sys.exit(code)
"""


def run_with_peak_rss(
    argv: list[str], env: dict[str, str], cwd: Path
) -> tuple[int, subprocess.CompletedProcess[bytes]]:
    """The command in a subprocess, and its peak RSS in bytes (``VmHWM`` of its own process
    image; ``ru_maxrss`` would also count the pytest process it was forked from)."""
    done = subprocess.run([sys.executable, "-c", _WITH_PEAK, *argv], env=env, cwd=cwd,
                          capture_output=True, timeout=120, check=False)  # fmt: skip
    *lines, peak = done.stderr.splitlines()
    done.stderr = b"".join(line + b"\n" for line in lines)
    return int(peak.split()[1]) << 10, done
