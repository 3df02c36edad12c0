"""File I/O of the pkcs11 backend: durable, never through a symlink, bounded reads.

Kept apart so the lead can swap it for the shared durable-I/O module: temp file created
``O_EXCL|O_NOFOLLOW`` with mode 0600, fsync, rename, fsync folder; folders opened
``O_DIRECTORY|O_NOFOLLOW`` and used as ``dir_fd``, so a symlink planted at the folder or at a file
name is never followed.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from pqselfenc.error import InvalidDataError, KeyStoreError

__all__ = ["durable_unlink", "durable_write", "folder", "make_folders", "read_regular"]


@contextmanager
def folder(path: Path, *, create: bool) -> Iterator[int]:
    """An fd of folder ``path`` (never a symlink); created 0700 if ``create``."""
    if create:
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise KeyStoreError(f"cannot create {path.name}/: {exc.strerror}") from exc
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:  # ELOOP/ENOTDIR: a symlink or a file planted where the folder goes
        raise KeyStoreError(f"{path.name}/ is not a plain folder ({exc.strerror})") from exc
    try:
        yield fd
    finally:
        os.close(fd)


def make_folders(directory: Path) -> None:
    """The store folder (as the key store does) and its ``secrets/``, both 0700."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyStoreError(f"cannot create {directory}: {exc.strerror}") from exc
    with folder(directory / "secrets", create=True):
        pass


def durable_write(dir_fd: int, name: str, data: bytes) -> None:
    """Temp file (0600, O_EXCL|O_NOFOLLOW), fsync, rename over ``name``, fsync the folder."""
    tmp = f".{name}.{os.urandom(8).hex()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)
    except OSError as exc:
        with suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise KeyStoreError(f"cannot write {name}: {exc.strerror}") from exc


def read_regular(dir_fd: int, name: str, limit: int) -> bytes:
    """Bytes of regular file ``name`` (never through a symlink, never a FIFO), at most ``limit``."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError as exc:
        why = "a symlink" if exc.errno == errno.ELOOP else exc.strerror
        raise InvalidDataError(f"{name} is not a plain file ({why}): not read") from exc
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise InvalidDataError(f"{name} is not a regular file: not read")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise InvalidDataError(f"{name} is larger than any wrapped secret")
    return data


def durable_unlink(dir_fd: int, name: str) -> bool:
    """Unlink ``name`` (a symlink itself, never its target) and fsync the folder."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise KeyStoreError(f"cannot delete {name}: {exc.strerror}") from exc
    os.fsync(dir_fd)
    return True
