"""The real command in subprocesses: the docs' command blocks run verbatim, exit codes, and
error output that is one line (plus a hint) with no traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _cli_helpers import clean_env, run_process
from _keys_support import OwnCollection, needs_secret_service

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "cli.md"
README = ROOT / "README.md"
DOCS = [pytest.param(README, id="README"), pytest.param(DOC, id="cli.md")]
BLOCK = re.compile(r"<!-- test: (?P<name>[a-z-]+) -->\n```sh\n(?P<body>.*?)```", re.DOTALL)
FAIL_KEYRING = "keyring.backends.fail.Keyring"
PASSPHRASE = "gravel orbit candle mosaic tundra"


@pytest.fixture(autouse=True)
def _own_keyring_collection(isolated_keyring: OwnCollection | None) -> None:
    """Subprocesses inherit KEYRING_PROPERTY_PREFERRED_COLLECTION: the tests' own collection."""


def doc_block(name: str, doc: Path = DOC) -> str:
    """The ``sh`` block marked ``<!-- test: NAME -->`` in ``doc``, exactly as written."""
    blocks = {m["name"]: m["body"] for m in BLOCK.finditer(doc.read_text())}
    assert name in blocks, f"{doc.name} has no block marked <!-- test: {name} -->"
    return blocks[name]


def path_env(home: Path, **extra: str) -> dict[str, str]:
    """A fresh HOME with the installed ``pqselfenc`` console script first on PATH (after
    ``PATH_PREFIX``, if given)."""
    prefix = extra.pop("PATH_PREFIX", None)
    env = clean_env(home, **extra)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if prefix:
        env["PATH"] = f"{prefix}{os.pathsep}{env['PATH']}"
    return env


def run_block(
    name: str, tmp_path: Path, doc: Path = DOC, **extra: str
) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", doc_block(name, doc)],
        cwd=work,
        env=path_env(home, **extra),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("doc", DOCS)
def test_main_job_block_runs_verbatim(tmp_path: Path, doc: Path) -> None:
    # The README's one command starts with "pip install -e ." (a fresh machine's set-up). This
    # checkout is already installed that way, so a pip shim records the call and succeeds;
    # everything after it runs for real.
    shim = tmp_path / "bin"
    shim.mkdir()
    calls = tmp_path / "pip-calls"
    (shim / "pip").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (shim / "pip").chmod(0o755)
    done = run_block("main-job", tmp_path, doc, PATH_PREFIX=str(shim))
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("OK")
    assert "Traceback" not in done.stderr
    if doc == README:  # set-up and the job in one command, on the embedded default store
        assert calls.read_text().split() == ["install", "-e", "."]
        import pqselfenc

        assert Path(pqselfenc.__file__).resolve().is_relative_to(ROOT)
        default_store = tmp_path / "home" / ".local" / "share" / "pqselfenc" / "chunks"
        assert sum(1 for p in default_store.rglob("*") if p.is_file()) >= 3


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = README.read_text().split("## Run the tests", 1)[1].split("```sh\n", 1)[1]
    command = readme.split("```", 1)[0].strip()
    assert command.endswith("bash scripts/test.sh")
    assert "pip install -e '.[dev,s3]'" in command
    ci = (ROOT / ".ci" / "run").read_text()
    assert "-e '.[dev,s3]'" in ci and "bash scripts/test.sh" in ci


@pytest.mark.parametrize("doc", DOCS)
@pytest.mark.parametrize(
    "backend", [pytest.param("keyring", marks=[pytest.mark.keyring, needs_secret_service]), "file"]
)
def test_quickstart_block_runs_verbatim(tmp_path: Path, backend: str, doc: Path) -> None:
    """What a person with only the README types: generate, add a recipient, encrypt, decrypt."""
    extra = {} if backend == "keyring" else {
        "PYTHON_KEYRING_BACKEND": FAIL_KEYRING, "PQSELFENC_PASSPHRASE": PASSPHRASE,
    }  # fmt: skip
    done = run_block("quickstart", tmp_path, doc, **extra)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("OK")
    assert "Traceback" not in done.stderr and "error" not in done.stderr
    label = "(OS keyring)" if backend == "keyring" else "(passphrase-protected file)"
    notes = [x for x in done.stderr.splitlines() if x.startswith("pqselfenc: key store ")]
    assert notes and all(x.endswith(label) for x in notes)
    fallbacks = [x for x in done.stderr.splitlines() if "no secure OS keyring" in x]
    assert len(fallbacks) == (0 if backend == "keyring" else 2)  # once per new key store
    sealed = (tmp_path / "work" / "report.txt.map").read_bytes()
    assert sealed.startswith(b"PQSESEAL")


def test_install_block_names_this_distribution() -> None:
    """The install command cannot run offline; it must at least install this project."""
    install = DOC.read_text().split("## Install", 1)[1].split("```sh\n", 1)[1]
    assert install.splitlines()[0].split("#")[0].split() == ["pip", "install", "pqselfenc"]
    assert 'name = "pqselfenc"' in (ROOT / "pyproject.toml").read_text()


def test_the_console_script_is_declared() -> None:
    from importlib.metadata import entry_points

    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("pqselfenc") == "pqselfenc.cli:main"


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["encrypt", "missing.bin", "--store", "s"], 1, "input file missing.bin does not exist"),
        (["decrypt", "missing.map", "--out", "o"], 1, "map missing.map does not exist"),
        (["decrypt", "junk.map", "--store", "s", "--out", "o"], 1, "is not a pqselfenc map"),
        (["decrypt", "trunc.map", "--store", "s", "--out", "o"], 1, "invalid DataMap: truncated"),
        (["decrypt", "trunc.map", "--store", "nowhere", "--out", "o"], 1, "no chunk store"),
        (["store", "verify", "--store", "junk.map"], 1, "is not a directory"),
        (["encrypt"], 2, "the following arguments are required"),
        (["frobnicate"], 2, "invalid choice"),
    ],
)
def test_errors_are_one_line_without_traceback(
    tmp_path: Path, argv: list[str], code: int, message: str
) -> None:
    (tmp_path / "junk.map").write_bytes(b"not a map")
    (tmp_path / "trunc.map").write_bytes(b"PQSEMAP\x00\x01\x00")
    (tmp_path / "s").mkdir()
    done = run_process(*argv, env=clean_env(tmp_path / "home"), cwd=tmp_path)
    assert done.returncode == code
    err = done.stderr.decode()
    lines = err.splitlines()
    assert "Traceback" not in err
    assert lines[0].startswith("pqselfenc: error: ") and message in lines[0], err
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("pqselfenc: hint: "))
    assert done.stdout == b""


def test_decrypt_pipes_plaintext_and_exits_zero(tmp_path: Path) -> None:
    (tmp_path / "in.bin").write_bytes(bytes(range(256)) * 40)
    env = clean_env(tmp_path / "home")
    assert run_process("encrypt", "in.bin", "--store", "s", env=env, cwd=tmp_path).returncode == 0
    done = run_process("decrypt", "in.bin.map", "--store", "s", env=env, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout == bytes(range(256)) * 40


def test_encrypt_without_recipients_loads_no_keys_layer(tmp_path: Path) -> None:
    """Start-up is part of every encrypt's wall time: without --to, the KEM, argon2, zxcvbn,
    keyring, tqdm and asyncio never load."""
    (tmp_path / "in.bin").write_bytes(os.urandom(5000))
    probe = (
        "import sys; from pqselfenc.cli import main; "
        "code = main(sys.argv[1:]); "
        "heavy = ['pqselfenc.keys', 'pqselfenc.kem', 'argon2', 'zxcvbn', 'keyring', 'tqdm', "
        "'asyncio']; "
        "print(sorted(m for m in heavy if m in sys.modules)); sys.exit(code)"
    )
    args = ["encrypt", str(tmp_path / "in.bin"), "--store", str(tmp_path / "chunks"),
            "--home", str(tmp_path / "home"), "-q"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", probe, *args],
        capture_output=True, text=True, env=clean_env(tmp_path), timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]"
