"""Durable file writes: temp file, fsync, rename, fsync folder; and best-effort wiping."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pqselfenc.error import KeyStoreError

__all__ = ["atomic_write", "fsync_dir", "wipe_file"]


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so a crash leaves the old or the new file, never a mix.

    The temp file is created with ``mode`` (0600 by default) from the start, so the secret or
    metadata is never readable by others, not even for a moment.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise KeyStoreError(f"cannot write {path.name}: {exc.strerror}") from exc


def wipe_file(path: Path) -> bool:
    """Overwrite ``path`` with zeros, fsync, unlink, fsync the folder; False if it was absent.

    Overwriting is best effort: copy-on-write filesystems, SSD wear levelling, snapshots and
    backups may keep the old bytes (threat-model/keys.md says what destroy really guarantees).
    """
    try:
        size = path.stat().st_size
        with path.open("r+b") as fh:
            fh.write(bytes(size))
            fh.flush()
            os.fsync(fh.fileno())
        path.unlink()
        fsync_dir(path.parent)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise KeyStoreError(f"cannot wipe {path.name}: {exc.strerror}") from exc
    return True
