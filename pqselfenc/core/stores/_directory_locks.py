"""The directory store's ``LockSpace``: lock files in ``ROOT/locks``, session records in
``ROOT/locks/ended``, stamps from file mtimes (the filesystem's clock, shared by every machine
that mounts it).

A lock is created as a temp file (``.tmp-*``) whose ``fstat`` mtime is the session's start,
written and hard-linked to its name (create-only: ``link`` fails on any existing name), then
the folder is fsynced: the name survives a crash, and goes stale if its holder does (a body
lost in the crash leaves an unreadable lock, which counts all the same). Refreshing is
``utime`` on the name without following a link (a removed lock is not recreated). A session
ends by stamping the lock now and renaming it into ``ended/START-ID`` (its mtime is the end),
then ``ended`` is fsynced: after a crash the record is there, and at worst the lock too
(stale: safe). Neither folder is ever followed through a link. Two fsyncs per session.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pqselfenc.core import _durable
from pqselfenc.core._lockspace import (
    LOCK_BODY_LIMIT,
    EndedSession,
    LockEntry,
    LockSpace,
    StoredChunk,
    parse_ended,
    parse_lock_name,
)
from pqselfenc.core._store import ChunkInfo
from pqselfenc.error import ChunkStoreError

if TYPE_CHECKING:
    from pqselfenc.core.stores.directory import DirectoryChunkStore

__all__ = ["DirectoryLockSpace"]

LOCKS, ENDED = "locks", "ended"
_TEMP_PREFIX = ".tmp-"


def _stamp(entry: os.stat_result) -> float:
    return entry.st_mtime_ns / 1e9


class DirectoryLockSpace(LockSpace):
    """Locks and session records of one ``DirectoryChunkStore`` (module docstring)."""

    clock_slack = 1.0  # one clock, but a wall clock: NTP may step it back a little

    def __init__(self, store: DirectoryChunkStore) -> None:
        self.store = store

    def __repr__(self) -> str:
        return f"DirectoryLockSpace({str(self.folder)!r})"

    @property
    def folder(self) -> Path:
        """``ROOT/locks``."""
        return self.store.root / LOCKS

    # -- folders ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _open(self, *, create: bool, ended: bool = False) -> Iterator[int | None]:
        """A descriptor of ``locks`` (or ``locks/ended``), made if ``create``; None if absent."""
        fd = self._descriptor(create, ended)
        if fd is None:
            yield None
            return
        try:
            yield fd
        finally:
            os.close(fd)

    def _descriptor(self, create: bool, ended: bool) -> int | None:
        try:
            if create:
                self._make(self.folder, self.store.root)
                if ended:
                    self._make(self.folder / ENDED, self.folder)
            return _durable.open_dir(self.folder / ENDED if ended else self.folder, follow=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._error("open", exc) from exc

    def _make(self, folder: Path, parent: Path) -> None:
        try:
            folder.mkdir()
        except FileExistsError:
            return
        if self.store.fsync:
            _durable.sync_dir(parent)

    def _error(self, doing: str, exc: OSError) -> ChunkStoreError:
        return ChunkStoreError(
            f"cannot {doing} a lock in {self.folder}: {_durable.describe(exc)}"
        )

    def _sync(self, fd: int) -> None:
        if self.store.fsync:
            _durable.sync_dir(fd)

    # -- lock objects ----------------------------------------------------------------------------

    def create(self, name: str, body: Callable[[float | None], bytes]) -> float:
        with self._open(create=True) as fd:
            assert fd is not None
            try:
                temp = _durable.create_temp(fd, prefix=_TEMP_PREFIX)
                try:
                    start = _stamp(os.fstat(temp.fd))
                    _durable.write_all(temp.fd, body(start))
                except BaseException:
                    _durable.discard(temp)
                    raise
                # name and body must survive a crash (its writer's chunks stay protected, from
                # the start the body holds), so both are fsynced; a body lost all the same (a
                # disk that lies) makes the lock unreadable: its session then protects all
                _durable.settle(temp, name, fsync=True, exclusive=True)
                self._sync(fd)
            except OSError as exc:
                raise self._error("create", exc) from exc
        return start

    def entries(self) -> list[LockEntry]:
        with self._open(create=False) as fd:
            if fd is None:
                return []
            try:
                return [e for n in os.listdir(fd) if (e := self._entry(fd, n)) is not None]
            except OSError as exc:
                raise self._error("list", exc) from exc

    @staticmethod
    def _entry(fd: int, name: str) -> LockEntry | None:
        if parse_lock_name(name) is None:
            return None  # a temp file, the ended folder, or not ours
        entry = _durable.lstat_entry(name, dir_fd=fd)
        return None if entry is None else LockEntry(name, _stamp(entry))

    def read(self, name: str) -> bytes | None:
        with self._open(create=False) as fd:
            if fd is None:
                return None
            try:
                return _durable.read_file(name, limit=LOCK_BODY_LIMIT, dir_fd=fd)
            except FileNotFoundError:
                return None
            except (_durable.UnsafeFileError, _durable.FileTooLargeError):
                return b""  # something under a lock's name that is not one: unreadable
            except OSError as exc:
                raise self._error("read", exc) from exc

    def refresh(self, name: str) -> bool:
        with self._open(create=False) as fd:
            if fd is None:
                return False
            try:
                os.utime(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise self._error("refresh", exc) from exc
        return True

    def remove(self, name: str) -> None:
        with self._open(create=False) as fd:
            if fd is not None:
                self._unlink(fd, name)

    def _unlink(self, fd: int, name: str) -> None:
        try:
            os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._error("remove", exc) from exc

    # -- session records -------------------------------------------------------------------------

    def end(self, name: str, record: str) -> None:
        with self._open(create=True, ended=True) as ended, self._open(create=False) as fd:
            assert ended is not None and fd is not None
            try:
                self._move(fd, name, ended, record)
                self._sync(ended)  # the record is durable: the lock may come back in a crash,
            except OSError as exc:  # stale then, which is safe; never the other way round
                raise self._error("end", exc) from exc

    def _move(self, fd: int, name: str, ended: int, record: str) -> None:
        """Stamp the lock now and rename it to the record; a missing lock gets a new record."""
        try:
            os.utime(name, dir_fd=fd, follow_symlinks=False)
            os.rename(name, record, src_dir_fd=fd, dst_dir_fd=ended)
        except FileNotFoundError:
            temp = _durable.write_temp(ended, b"", prefix=_TEMP_PREFIX)
            _durable.settle(temp, record, fsync=self.store.fsync)

    def ended(self) -> list[EndedSession]:
        with self._open(create=False, ended=True) as fd:
            if fd is None:
                return []
            try:
                found = ((n, _durable.lstat_entry(n, dir_fd=fd)) for n in os.listdir(fd))
                sessions = (parse_ended(n, _stamp(e)) for n, e in found if e is not None)
                return [s for s in sessions if s is not None]
            except OSError as exc:
                raise self._error("list", exc) from exc

    def forget(self, record: str) -> None:
        with self._open(create=False, ended=True) as fd:
            if fd is not None:
                self._unlink(fd, record)

    def now(self) -> float:
        """The mtime of a new file in ``locks`` (removed at once); the local clock where the
        store cannot be written (a read-only copy: only reports read the time then)."""
        try:
            with self._open(create=True) as fd:
                assert fd is not None
                temp = _durable.create_temp(fd, prefix=_TEMP_PREFIX)
                try:
                    return _stamp(os.fstat(temp.fd))
                finally:
                    _durable.discard(temp)
        except (OSError, ChunkStoreError):
            return time.time()

    # -- chunks ----------------------------------------------------------------------------------

    def chunks(self) -> Iterator[StoredChunk]:
        return self.store.stored_chunks()

    def delete_if_older(self, info: ChunkInfo, cutoff: float) -> int | None:
        return self.store.delete_if_older(info, cutoff)

    def sweep(self, cutoff: float) -> int:
        """Temp files of interrupted chunk writes and lock creations, if old enough."""
        removed = self.store.clean_temp(older_than=cutoff)
        with self._open(create=False) as fd:
            if fd is None:
                return removed
            for name in os.listdir(fd):
                entry = _durable.lstat_entry(name, dir_fd=fd)
                if name.startswith(_TEMP_PREFIX) and entry is not None and _old(entry, cutoff):
                    self._unlink(fd, name)
                    removed += 1
        return removed


def _old(entry: os.stat_result, cutoff: float) -> bool:
    return not stat.S_ISDIR(entry.st_mode) and _stamp(entry) <= cutoff
