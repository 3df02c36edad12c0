"""What the command writes over and reads from: --force keeps the stricter mode and never
replaces a FIFO, device or socket (checked before any work and again at publish time), links
are replaced, never written through, inputs are bounded regular files (a FIFO or /dev/zero as a
map ends promptly with one error line), and a folder fsync error is reported, not swallowed.

Attacks go through the command (``main``, or the real console script where a broken build
would hang or exhaust memory); the guarantees come from ``core/_durable.py``.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from _cli_helpers import Result, run

from pqselfenc.cli import _encrypt
from pqselfenc.core import _durable
from pqselfenc.core import _primitives as P

CHUNK = 64
SECRET_TEXT = b"four years of thesis\n"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PQSELFENC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PQSELFENC_STORE", raising=False)
    monkeypatch.chdir(tmp_path)


def encrypt(capsys: pytest.CaptureFixture[str], *args: str | Path) -> Result:
    return run(capsys, "encrypt", *args, "--store", "chunks", "--chunk-size", str(CHUNK))


def decrypt(capsys: pytest.CaptureFixture[str], *args: str | Path) -> Result:
    return run(capsys, "decrypt", *args, "--store", "chunks")


@pytest.fixture
def encrypted(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> bytes:
    """in.bin encrypted into ./chunks with its unsealed map in.map; the plaintext."""
    data = os.urandom(1000)
    (tmp_path / "in.bin").write_bytes(data)
    assert encrypt(capsys, "in.bin", "--out", "in.map").code == 0
    return data


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# -- --force over what is there ----------------------------------------------------------------


def test_force_keeps_the_mode_of_a_private_file_it_replaces(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, encrypted: bytes
) -> None:
    out = tmp_path / "out.bin"
    out.write_bytes(b"old")
    out.chmod(0o600)
    assert decrypt(capsys, "in.map", "--out", "out.bin", "--force").code == 0
    assert out.read_bytes() == encrypted
    assert mode_of(out) == 0o600  # was 0644 (the default mode) before


def test_force_never_loosens_a_secret_output(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, encrypted: bytes
) -> None:
    (tmp_path / "again.map").write_bytes(b"old")
    (tmp_path / "again.map").chmod(0o644)
    assert encrypt(capsys, "in.bin", "--out", "again.map", "--force").code == 0
    assert mode_of(tmp_path / "again.map") == 0o600  # an unsealed map stays 0600


@pytest.mark.parametrize("command", ["encrypt", "decrypt"])
def test_force_refuses_a_fifo_before_any_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    (tmp_path / "in.bin").write_bytes(os.urandom(1000))
    if command == "decrypt":
        (tmp_path / "in.map").write_bytes(b"not even a map: never read")
    os.mkfifo(tmp_path / "pipe")
    source = "in.bin" if command == "encrypt" else "in.map"
    result = run(capsys, command, source, "--out", "pipe", "--force", "--store", "chunks")
    assert result.error_line() == "pipe is a FIFO, refusing to replace it"
    assert "--out -" in result.err  # the hint says how to write into a pipe
    assert stat.S_ISFIFO((tmp_path / "pipe").lstat().st_mode)
    assert not (tmp_path / "chunks").exists()  # refused before any work


def test_a_fifo_appearing_during_the_work_is_refused_at_publish(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    encrypted: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = _encrypt._decrypt_into

    def racing(*args: object) -> int:
        written = real(*args)  # type: ignore[arg-type]
        os.mkfifo(tmp_path / "out.bin")  # someone plants a FIFO while we decrypt
        return written

    monkeypatch.setattr(_encrypt, "_decrypt_into", racing)
    result = decrypt(capsys, "in.map", "--out", "out.bin", "--force")
    assert result.error_line() == "out.bin is a FIFO, refusing to replace it"
    assert stat.S_ISFIFO((tmp_path / "out.bin").lstat().st_mode)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_force_replaces_a_link_and_never_writes_through_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, encrypted: bytes
) -> None:
    victim = tmp_path / "thesis.tex"
    victim.write_bytes(SECRET_TEXT)
    (tmp_path / "out.bin").symlink_to(victim)
    assert decrypt(capsys, "in.map", "--out", "out.bin").code == 1  # exists: needs --force
    assert decrypt(capsys, "in.map", "--out", "out.bin", "--force").code == 0
    assert victim.read_bytes() == SECRET_TEXT
    assert stat.S_ISREG((tmp_path / "out.bin").lstat().st_mode)
    assert (tmp_path / "out.bin").read_bytes() == encrypted


def test_a_link_under_the_temp_name_is_never_opened(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    encrypted: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Temp names are random, but even a guessed one is created O_EXCL|O_NOFOLLOW: a link
    planted there is skipped, never written through (a guard: mkstemp was safe before too)."""
    victim = tmp_path / "thesis.tex"
    victim.write_bytes(SECRET_TEXT)
    tokens = iter(["guessed", "fresh"])
    monkeypatch.setattr(_durable, "_token", lambda: next(tokens))
    (tmp_path / ".pqselfenc-tmp-guessed").symlink_to(victim)
    assert decrypt(capsys, "in.map", "--out", "out.bin").code == 0
    assert victim.read_bytes() == SECRET_TEXT
    assert (tmp_path / "out.bin").read_bytes() == encrypted


# -- folder fsync: one policy ------------------------------------------------------------------


@pytest.mark.parametrize(("code", "exit_code"), [(errno.EIO, 1), (errno.EINVAL, 0)])
def test_a_folder_fsync_error_is_reported_unless_the_filesystem_cannot(
    capsys: pytest.CaptureFixture[str],
    encrypted: bytes,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
    exit_code: int,
) -> None:
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(code, os.strerror(code))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    result = decrypt(capsys, "in.map", "--out", "out.bin")
    assert result.code == exit_code, result
    if exit_code:
        assert os.strerror(code) in result.error_line()


# -- inputs ------------------------------------------------------------------------------------


def run_cli(tmp_path: Path, *argv: str, memory: int = 1 << 30) -> subprocess.CompletedProcess[str]:
    """The command in a child with ``memory`` bytes of address space; fails the test if it
    hangs."""
    code = (
        f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({memory}, {memory}))\n"
        "from pqselfenc.cli import main; raise SystemExit(main())"
    )
    env = dict(os.environ, PQSELFENC_HOME=str(tmp_path / "home"))
    try:
        return subprocess.run(
            [sys.executable, "-c", code, *argv], cwd=tmp_path, env=env,
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("the command still runs after 30 s: it hangs")


@pytest.mark.parametrize("command", ["decrypt", "verify"])
def test_a_fifo_planted_as_a_chunk_ends_decrypt_and_verify_promptly(
    tmp_path: Path, encrypted: bytes, command: str
) -> None:
    chunk = next(p for p in (tmp_path / "chunks").glob("??/*") if len(p.name) == 64)
    chunk.unlink()
    os.mkfifo(chunk)
    argv = ["decrypt", "in.map", "--out", "o"] if command == "decrypt" else ["store", "verify"]
    proc = run_cli(tmp_path, *argv, "--store", "chunks")
    assert proc.returncode == 1, proc.stderr
    said = proc.stderr + proc.stdout
    assert f"cannot read chunk {chunk.name[:8]}: is a FIFO, not a regular file" in said
    assert not (tmp_path / "o").exists()


def test_a_fifo_given_as_the_map_ends_promptly(tmp_path: Path, encrypted: bytes) -> None:
    os.mkfifo(tmp_path / "pipe.map")
    proc = run_cli(tmp_path, "decrypt", "pipe.map", "--store", "chunks", "--out", "o")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("pqselfenc: error: map pipe.map is a FIFO, not a regular file")


def test_a_map_linked_to_dev_zero_is_refused_unread(tmp_path: Path, encrypted: bytes) -> None:
    (tmp_path / "zero.map").symlink_to("/dev/zero")
    proc = run_cli(tmp_path, "decrypt", "zero.map", "--store", "chunks", "--out", "o")
    assert proc.returncode == 1, proc.stderr
    assert "zero.map is a character device, not a regular file" in proc.stderr


@pytest.mark.parametrize("head", [P.MAP_MAGIC, b""], ids=["binary", "neither"])
def test_a_map_larger_than_any_map_is_refused_unread(
    tmp_path: Path, encrypted: bytes, head: bytes
) -> None:
    with open(tmp_path / "huge.map", "wb") as fh:
        fh.write(head)
        fh.truncate(P.MAX_MAP_FILE_SIZE + 1)  # sparse
    proc = run_cli(tmp_path, "decrypt", "huge.map", "--store", "chunks", "--out", "o",
                   memory=512 << 20)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    if head:  # a binary or sealed map is read up to the largest map
        assert f"huge.map is larger than {P.MAX_MAP_FILE_SIZE} bytes" in proc.stderr
    else:  # anything else only up to the largest JSON map
        assert f"larger than any JSON map ({P.MAX_MAP_JSON_SIZE} bytes)" in proc.stderr


def test_a_passphrase_file_linked_to_dev_zero_is_too_large_not_memory_error(
    tmp_path: Path,
) -> None:
    """A passphrase file may be a pipe (``<(pass show x)``), so it is not held to regular
    files; its read is bounded instead."""
    (tmp_path / "zero").symlink_to("/dev/zero")
    proc = run_cli(tmp_path, "keys", "generate", "alice", "--backend", "file",
                   "--passphrase-file", "zero")  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "passphrase file zero is too large" in proc.stderr
