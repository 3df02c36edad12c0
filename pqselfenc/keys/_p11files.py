"""File I/O of the pkcs11 backend, through the one durable-I/O module (``core/_durable.py``):
temp file created ``O_EXCL|O_NOFOLLOW`` with mode 0600, fsync, rename, fsync folder; the
``secrets/`` folder opened ``O_DIRECTORY|O_NOFOLLOW`` and used as ``dir_fd``, so a symlink planted
at the folder or at a file name is never followed; reads bounded, regular files only. This module
only turns ``_durable``'s ``OSError``s into the key store's errors.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pqselfenc.core import _durable
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
        fd = _durable.open_dir(path, follow=False)
    except FileNotFoundError:
        raise
    except OSError as exc:  # a symlink or a file planted where the folder goes
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
    """``name`` in the folder ``dir_fd`` atomically replaced by ``data`` (``_durable``)."""
    try:
        _durable.check_replaceable(name, dir_fd=dir_fd)
        temp = _durable.write_temp(dir_fd, data, prefix=f".{name}.", suffix=".tmp")
        _durable.settle(temp, name)
        _durable.sync_dir(dir_fd)
    except OSError as exc:
        raise KeyStoreError(f"cannot write {name}: {_durable.describe(exc)}") from exc


def read_regular(dir_fd: int, name: str, limit: int) -> bytes:
    """Bytes of regular file ``name`` (never through a symlink, never a FIFO), at most ``limit``."""
    try:
        return _durable.read_file(name, limit=limit, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except _durable.FileTooLargeError as exc:
        raise InvalidDataError(f"{name} is larger than any wrapped secret") from exc
    except OSError as exc:
        why = "a symlink" if exc.errno == errno.ELOOP else "not a regular file"
        raise InvalidDataError(f"{name} is not a plain file ({why}): not read") from exc


def durable_unlink(dir_fd: int, name: str) -> bool:
    """Unlink ``name`` (a symlink itself, never its target) and fsync the folder."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise KeyStoreError(f"cannot delete {name}: {exc.strerror}") from exc
    try:
        _durable.sync_dir(dir_fd)
    except OSError as exc:
        raise KeyStoreError(f"cannot delete {name}: {_durable.describe(exc)}") from exc
    return True
