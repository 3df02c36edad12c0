"""core/_durable.py on its own: the edges its callers rely on but cannot easily reach (no hard
links on a filesystem, a file of someone else's, a FIFO with no reader, exact bounds). The
attacks through the stores and the command are in test_adversarial_files.py and
test_cli_outputs.py."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from pqselfenc.core import _durable


def test_create_file_refuses_anything_already_there(tmp_path: Path) -> None:
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "file").write_bytes(b"old")
    for name in ("dangling", "file"):
        with pytest.raises(FileExistsError):
            _durable.create_file(tmp_path / name, b"new")
    assert not (tmp_path / "nowhere").exists()
    assert (tmp_path / "file").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "file"]


def test_create_file_without_hard_links_checks_then_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")  # vfat says this

    monkeypatch.setattr(os, "link", no_links)
    _durable.create_file(tmp_path / "new", b"data", mode=0o640)
    assert (tmp_path / "new").read_bytes() == b"data"
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o640
    with pytest.raises(FileExistsError):
        _durable.create_file(tmp_path / "new", b"other")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new"]


def test_a_failed_output_leaves_nothing_and_the_old_file_intact(tmp_path: Path) -> None:
    (tmp_path / "out").write_bytes(b"old")
    with pytest.raises(RuntimeError), _durable.output_file(tmp_path / "out") as handle:
        handle.write(b"half")
        raise RuntimeError("interrupted")
    assert (tmp_path / "out").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_read_file_bound_is_exact(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 100)
    assert _durable.read_file(tmp_path / "f", limit=100) == b"x" * 100
    with pytest.raises(_durable.FileTooLargeError, match="larger than 99 bytes"):
        _durable.read_file(tmp_path / "f", limit=99)


def test_read_file_follows_a_link_only_when_asked(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")
    (tmp_path / "link").symlink_to(tmp_path / "f")
    assert _durable.read_file(tmp_path / "link", limit=10, follow=True) == b"data"
    with pytest.raises(_durable.UnsafeFileError, match="symbolic link"):
        _durable.read_file(tmp_path / "link", limit=10)


def test_append_to_a_fifo_without_a_reader_is_refused_not_blocked(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "log")
    with pytest.raises(_durable.UnsafeFileError, match="FIFO"):
        _durable.append_file(tmp_path / "log", b"line\n")


def test_append_creates_0600_and_appends(tmp_path: Path) -> None:
    _durable.append_file(tmp_path / "log", b"one\n")
    _durable.append_file(tmp_path / "log", b"two\n")
    assert (tmp_path / "log").read_bytes() == b"one\ntwo\n"
    assert stat.S_IMODE((tmp_path / "log").stat().st_mode) == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="a file of someone else's needs root to make")
def test_wipe_only_unlinks_a_file_of_someone_else(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.write_bytes(b"their bytes")
    os.chown(theirs, 54321, -1)
    keep = os.open(theirs, os.O_RDONLY)
    try:
        assert _durable.wipe_file(theirs)
        assert os.pread(keep, 100, 0) == b"their bytes"
    finally:
        os.close(keep)
    assert not theirs.exists()
    assert not _durable.wipe_file(theirs)  # nothing there any more


@pytest.mark.parametrize("code", [errno.EINVAL, errno.ENOTSUP, errno.EIO, errno.ENOSPC])
def test_sync_dir_tolerates_only_a_filesystem_that_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def fsync(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fsync)
    if code in (errno.EINVAL, errno.ENOTSUP):
        _durable.sync_dir(tmp_path)
    else:
        with pytest.raises(OSError, match=os.strerror(code)):
            _durable.sync_dir(tmp_path)


def test_check_private_directory_names_the_fix(tmp_path: Path) -> None:
    folder = tmp_path / "private"
    folder.mkdir(mode=0o700)
    _durable.check_private_directory(folder, ValueError)
    folder.chmod(0o775)
    with pytest.raises(ValueError, match=r"writable by others \(mode 0775\).*chmod 700"):
        _durable.check_private_directory(folder, ValueError)
