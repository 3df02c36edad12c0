"""``DirectoryChunkStore``: the embedded default, one file per chunk on a local disk.

Layout: ``ROOT/ab/abcdef…`` (64 hex digits, spread over 256 two-hex-digit folders). A write goes
to a temp file in the same folder, is fsynced, renamed over the final name and the folder is
fsynced: a crash leaves either the whole chunk or nothing under its name (a stray ``.tmp-*``
file at most, which ``__iter__`` ignores and ``clean_temp`` removes). Every read is verified.

The folder may be shared (group-writable is fine: chunks are verified on every read), so no link
is ever followed inside it: a shard folder is opened ``O_NOFOLLOW | O_DIRECTORY`` (when listing,
relative to the root's descriptor, so one swapped for a link after the listing is skipped, never
listed through) and every name is resolved relative to it; nothing is stat()ed through a link;
a read opens only a regular file (a FIFO cannot hang it) no larger than the largest chunk a
writer stores (``P.MAX_STORED_CHUNK_SIZE``). A linked shard folder is not part of the store: it
is not listed, cleaned, written or deleted through. ``core/_durable.py`` does the file work.

The engine writes a whole run through ``batch``: the same steps, but the fsyncs of many chunks
run at once on a few I/O threads while the workers go on encrypting (the kernel groups
concurrent fsyncs into one journal commit), and each folder touched is fsynced once at the end.
The order per chunk is unchanged (content durable, then renamed), and the batch only returns,
so a DataMap can only be written, once every name it made or reused is durable.

Deduplication trusts nothing it has not checked: a file already under a chunk's name is reused
only if it is a regular file of exactly the chunk's size holding exactly its bytes (one bounded
read); anything else is replaced atomically. A reused chunk stamped before the writer's session
began (``StoreLocks.session_start``) gets a new mtime (``futimens`` on the descriptor just
verified, fsynced like a write), so gc's grace period protects it; a file we may not touch is
written again instead. Locks live in ``ROOT/locks`` (``_directory_locks.py``).
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from pqselfenc.core import _durable
from pqselfenc.core import _primitives as P
from pqselfenc.core._durable import TempFile
from pqselfenc.core._locks import LockPolicy, StoreLocks
from pqselfenc.core._lockspace import StoredChunk
from pqselfenc.core._store import (
    ChunkInfo,
    ChunkStore,
    EncryptedChunk,
    short_name,
    verify_chunk,
)
from pqselfenc.core.stores._directory_locks import DirectoryLockSpace
from pqselfenc.error import ChunkNotFound, ChunkStoreError, IntegrityError

__all__ = ["DirectoryChunkStore"]

_TEMP_PREFIX = ".tmp-"
# A batch's I/O threads mostly sleep in fsync (no GIL held); files written but not yet fsynced
# and renamed are bounded, so open descriptors and dirty pages stay bounded too.
_FSYNC_THREADS = 8
_FSYNC_IN_FLIGHT = 32
# Chunks smaller than this are made durable in waves (one syncfs for many: _Batch), as their
# own fsync would cost more than their bytes; a wave holds at most this many files and bytes.
_SMALL_CHUNK = 256 << 10
_WAVE_FILES = 4096
_WAVE_BYTES = 32 << 20


class DirectoryChunkStore(ChunkStore):
    """Chunks as files under ``root`` (created if missing). ``fsync=False`` trades crash
    durability for speed; atomicity (no partial chunk under a name) holds either way.
    ``locks`` sets the timing of the store locks writers and gc share (``LockPolicy``)."""

    verifies_on_retrieve = True

    def __init__(
        self, root: str | os.PathLike[str], *, fsync: bool = True, locks: LockPolicy | None = None
    ) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self._locks = StoreLocks(DirectoryLockSpace(self), locks)
        if self.root.exists() and not self.root.is_dir():
            raise ChunkStoreError(f"{self.root} is not a directory")
        try:
            _make_root(self.root, fsync=fsync)
        except OSError as exc:
            raise ChunkStoreError(
                f"cannot create chunk store at {self.root}: {exc.strerror}"
            ) from exc
        if not self.root.is_dir():
            raise ChunkStoreError(f"{self.root} is not a directory")
        self._durable_shards: set[str] = set()  # shards whose entry in the root we made durable

    def __repr__(self) -> str:
        return f"DirectoryChunkStore({str(self.root)!r})"

    def path_of(self, info: ChunkInfo) -> Path:
        """Where the chunk named by ``info`` lives: ``ROOT/ab/abcdef…`` (hex name, sharded
        by its first two digits). The file may not exist."""
        name = info.hex_name
        return self.root / name[:2] / name

    def store(self, chunk: bytes) -> ChunkInfo:
        info = ChunkInfo.for_chunk(chunk)
        self._keep(info, chunk)
        return info

    def put_named(self, chunk: EncryptedChunk) -> None:
        """Keep a chunk the engine named without hashing it again: every read verifies it."""
        self._keep(chunk.info, chunk.content)

    def locks(self) -> StoreLocks:
        """The store's locks (``ROOT/locks``), shared by writers and gc."""
        return self._locks

    @contextlib.contextmanager
    def batch(self) -> Iterator[Callable[[EncryptedChunk], None]]:
        """The chunks of one run, fsynced together (module docstring); durable on exit.
        Holds the store's shared lock (``writing``) throughout."""
        with self.writing():
            if not self.fsync:
                yield self.put_named  # nothing to group
                return
            batch = _Batch(self)
            try:
                yield batch.put
            except BaseException:
                batch.close(commit=False)
                raise
            batch.close(commit=True)

    def _keep(self, info: ChunkInfo, chunk: bytes) -> None:
        try:
            self._write(self.path_of(info), chunk)
        except OSError as exc:
            raise self._write_error(info.name, exc) from exc

    def _write(self, path: Path, chunk: bytes) -> None:
        _make_folder(path.parent)
        with _durable.folder(path.parent, follow=False) as shard:
            temp = _place(shard, path.name, chunk, self._locks.session_start)
            assert not isinstance(temp, str)  # (only a closed placement names a temp)
            if isinstance(temp, _Found):
                temp.finish(fsync=self.fsync)  # deduplicated: verified (and refreshed)
            else:
                _durable.settle(temp, path.name, fsync=self.fsync)
            if not self.fsync:
                return
            # A chunk found here may be another writer's, its name not yet durable: the shard's
            # entry is made durable whoever wrote it, and the shard's own entry in the root
            # once per store object (whoever created the shard).
            _durable.sync_dir(shard)
        if path.parent.name not in self._durable_shards:
            _durable.sync_dir(self.root)
            self._durable_shards.add(path.parent.name)

    def _write_error(self, name: bytes, exc: OSError) -> ChunkStoreError:
        return ChunkStoreError(
            f"cannot write chunk {short_name(name)} to {self.root}: {exc.strerror}"
        )

    def retrieve(self, info: ChunkInfo) -> bytes:
        """The verified chunk. A file larger than any chunk a writer stores is
        ``IntegrityError`` (it cannot be a chunk: as for a name mismatch, replace it) and is
        never read; a link, FIFO or device under the name is ``ChunkStoreError``."""
        path, short = self.path_of(info), short_name(info.name)
        try:
            with _durable.folder(path.parent, follow=False) as shard:
                content = _durable.read_file(path.name, limit=P.MAX_STORED_CHUNK_SIZE, dir_fd=shard)
        except FileNotFoundError:
            raise ChunkNotFound(f"chunk {short} is not in {self.root}") from None
        except _durable.FileTooLargeError as exc:
            raise IntegrityError(f"chunk {short} is larger than any stored chunk") from exc
        except OSError as exc:
            raise ChunkStoreError(f"cannot read chunk {short}: {exc.strerror}") from exc
        return verify_chunk(info, content)

    def has(self, info: ChunkInfo) -> bool:
        path = self.path_of(info)
        try:
            with _durable.folder(path.parent, follow=False) as shard:
                entry = _durable.lstat_entry(path.name, dir_fd=shard)
        except OSError:
            return False  # no shard folder, or one that is not ours (a link)
        return entry is not None and stat.S_ISREG(entry.st_mode)

    def delete(self, info: ChunkInfo) -> None:
        path = self.path_of(info)
        try:
            with _durable.folder(path.parent, follow=False) as shard:
                os.unlink(path.name, dir_fd=shard)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ChunkStoreError(
                f"cannot delete chunk {short_name(info.name)}: {exc.strerror}"
            ) from exc

    def __iter__(self) -> Iterator[ChunkInfo]:
        for shard, fd in self._each_shard():
            for name in sorted(os.listdir(fd)):
                info = _info_of(name, shard)
                if info is not None:
                    yield info

    def clean_temp(self, older_than: float | None = None) -> int:
        """Remove temp files left by interrupted writes (only those with an mtime at or before
        ``older_than``, seconds since the epoch, if given); returns how many."""
        removed = 0
        for _, fd in self._each_shard():
            with contextlib.suppress(FileNotFoundError):
                removed += _clean_shard(fd, older_than)
        return removed

    def _each_shard(self) -> Iterator[tuple[str, int]]:
        """Each shard folder's name and a descriptor of it (closed when the next is given),
        opened relative to the root ``O_NOFOLLOW | O_DIRECTORY``: a name that is a link, or
        became one since the root was listed, is not part of the store and is skipped."""
        with _durable.folder(self.root) as root:
            for name in sorted(n for n in os.listdir(root) if len(n) == 2):
                try:
                    fd = _durable.open_dir(name, follow=False, dir_fd=root)
                except (FileNotFoundError, _durable.UnsafeFileError):
                    continue
                try:
                    yield name, fd
                finally:
                    os.close(fd)

    # -- for gc: stamps and careful deletes (pqselfenc.core.gc) ---------------------------------

    def stored_chunks(self) -> Iterator[StoredChunk]:
        """Every chunk file with its size and mtime (its stamp), shard by shard; a link or any
        other non-regular file under a chunk's name is not a chunk (never stat()ed through)."""
        try:
            for shard, fd in self._each_shard():
                yield from _stamped(fd, shard)
        except OSError as exc:
            raise ChunkStoreError(f"cannot list the chunks in {self.root}: {exc.strerror}") from exc

    def delete_if_older(self, info: ChunkInfo, cutoff: float) -> int | None:
        """Delete the chunk file if its mtime, read again now, is at or before ``cutoff``;
        the bytes freed, or None if it was kept (newer, not a regular file, or gone)."""
        path = self.path_of(info)
        try:
            with _durable.folder(path.parent, follow=False) as shard:
                entry = _durable.lstat_entry(path.name, dir_fd=shard)
                if entry is None or not stat.S_ISREG(entry.st_mode) or _stamp(entry) > cutoff:
                    return None
                os.unlink(path.name, dir_fd=shard)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ChunkStoreError(
                f"cannot delete chunk {short_name(info.name)}: {exc.strerror}"
            ) from exc
        return entry.st_size


def _make_root(root: Path, *, fsync: bool) -> None:
    """Create the store's root and any missing parents; with ``fsync`` each new folder's entry
    is made durable in its parent (a map must never outlive the folders its chunks are in)."""
    missing = [p for p in (root, *root.parents) if not p.exists()][::-1]
    root.mkdir(parents=True, exist_ok=True)
    if fsync:
        for folder in missing:
            _durable.sync_dir(folder.parent)


def _make_folder(folder: Path) -> bool:
    """Create a shard folder if missing; True when this call created it."""
    try:
        folder.mkdir()
    except FileExistsError:
        return False
    return True


def _stamp(entry: os.stat_result) -> float:
    return entry.st_mtime_ns / 1e9


class _Found:
    """A verified chunk file already under its name (its mtime refreshed when it was stamped
    before this session): fsync it and close it. The fsync makes the new stamp survive a crash
    as the map will, and the bytes too: the file may be another writer's whose batch has not
    made it durable yet (or one that writes with ``fsync=False``)."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle

    def finish(self, *, fsync: bool) -> None:
        try:
            if fsync:
                os.fsync(self.handle.fileno())
        finally:
            self.handle.close()


def _place(
    shard: int, name: str, chunk: bytes, since: float | None, *, closed: bool = False
) -> TempFile | str | _Found:
    """How ``chunk`` gets under ``name`` in the shard folder ``shard``: a temp file holding it
    (open, not yet fsynced; with ``closed``, written and closed: its name) to rename over the
    name when nothing verified is there; the ``_Found`` file when the chunk is there, its stamp
    refreshed when older than ``since`` (None: always refresh). Anything else under the name (a
    link, a FIFO, other bytes) is not this chunk: the rename replaces it."""
    found = _verified(shard, name, chunk)
    if found is None:
        return _new_temp(shard, chunk, closed)
    try:
        if since is not None and _stamp(os.fstat(found.fileno())) >= since:
            return _Found(found)  # stamped within this session already
        os.utime(found.fileno())  # futimens: the very file just verified, never a link
    except PermissionError:
        found.close()  # not ours to touch (another user's 0600 file): write it again
        return _new_temp(shard, chunk, closed)
    except BaseException:
        found.close()
        raise
    return _Found(found)


def _new_temp(shard: int, chunk: bytes, closed: bool) -> TempFile | str:
    if closed:
        return _durable.write_closed(shard, chunk, prefix=_TEMP_PREFIX)
    return _durable.write_temp(shard, chunk, prefix=_TEMP_PREFIX)


def _verified(shard: int, name: str, chunk: bytes) -> BinaryIO | None:
    """The regular file under ``name``, open, if it holds exactly ``chunk`` (read at most one
    byte more than the chunk); None if nothing, or anything else, is there."""
    try:
        handle = _durable.open_file(name, dir_fd=shard)
    except (FileNotFoundError, _durable.UnsafeFileError):
        return None
    try:
        if os.fstat(handle.fileno()).st_size == len(chunk) and handle.read(len(chunk) + 1) == chunk:
            return handle
    except BaseException:
        handle.close()
        raise
    handle.close()
    return None


def _stamped(shard: int, prefix: str) -> list[StoredChunk]:
    """The chunk files in one open shard folder, each with size and mtime."""
    found = []
    with os.scandir(shard) as entries:
        for entry in entries:
            info = _info_of(entry.name, prefix)
            if info is None:
                continue
            with contextlib.suppress(FileNotFoundError):
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    found.append(StoredChunk(info, st.st_size, _stamp(st)))
    return found


def _clean_shard(shard: int, older_than: float | None = None) -> int:
    removed = 0
    for name in os.listdir(shard):
        if name.startswith(_TEMP_PREFIX):
            with contextlib.suppress(FileNotFoundError):
                entry = _durable.lstat_entry(name, dir_fd=shard)
                if older_than is not None and (entry is None or _stamp(entry) > older_than):
                    continue
                os.unlink(name, dir_fd=shard)
                removed += 1
    return removed


class _Batch:
    """The chunks of one engine run (see the module docstring). ``put`` runs on the workers.
    A small chunk (below ``_SMALL_CHUNK``) is written to a closed temp file and joins the
    current *wave*: when the wave is full (``_WAVE_FILES``, ``_WAVE_BYTES``) or the batch
    closes, its content is made durable at once (``_durable.settle_wave``: one ``syncfs``
    where trusted) and then every file of it renamed. A larger chunk is fsynced and renamed at
    once on the I/O threads, overlapping the encryption, and a dedup hit is fsynced there (its
    bytes may be another writer's, not yet durable). ``close`` waits for all of it, then makes
    every folder the run wrote to or deduplicated into durable once (so a name another writer
    renamed but did not yet fsync is durable too), and the root (whoever made the shards).
    Each shard folder is created (if missing) and opened once per batch. The first failure is
    raised by the next ``put`` and by ``close``."""

    def __init__(self, store: DirectoryChunkStore) -> None:
        self.store = store
        self.since = store.locks().session_start
        self.names: set[bytes] = set()
        self.shards: dict[str, int] = {}  # shard folder name -> its descriptor (no link)
        self.lock = threading.Lock()
        self.room = threading.BoundedSemaphore(_FSYNC_IN_FLIGHT)
        self.wave: list[tuple[int, str, str]] = []
        self.wave_bytes = 0
        self.pending: list[Future[None]] = []
        self.failure: ChunkStoreError | None = None

    def put(self, chunk: EncryptedChunk) -> None:
        final = chunk.info.hex_name
        try:
            with self.lock:
                self._check()
                if chunk.name in self.names:
                    return  # deduplicated within the batch
                self.names.add(chunk.name)
                shard = self._shard(final[:2])
            temp = _place(shard, final, chunk.content, self.since, closed=_is_small(chunk))
        except OSError as exc:
            raise self._fail(chunk.name, exc) from exc
        if isinstance(temp, str):
            self._join_wave((shard, temp, final), len(chunk.content))
            return
        self.room.acquire()
        with self.lock:
            self.pending.append(_io_pool().submit(self._settle, chunk.name, temp, final))

    def _shard(self, name: str) -> int:
        """The descriptor of shard folder ``name``, created and opened on first use (lock held)."""
        fd = self.shards.get(name)
        if fd is None:
            _make_folder(self.store.root / name)
            fd = self.shards[name] = _durable.open_dir(self.store.root / name, follow=False)
        return fd

    def _join_wave(self, item: tuple[int, str, str], size: int) -> None:
        with self.lock:
            self.wave.append(item)
            self.wave_bytes += size
            if len(self.wave) < _WAVE_FILES and self.wave_bytes < _WAVE_BYTES:
                return
            wave, self.wave, self.wave_bytes = self.wave, [], 0
            self.pending.append(_io_pool().submit(self._settle_wave, wave))

    def _settle_wave(self, wave: list[tuple[int, str, str]]) -> None:
        try:
            _durable.settle_wave(wave)
        except OSError as exc:
            raise self._fail(bytes.fromhex(wave[0][2]), exc) from exc

    def _settle(self, name: bytes, temp: TempFile | _Found, final: str) -> None:
        try:
            if isinstance(temp, _Found):
                temp.finish(fsync=True)  # a dedup hit: its bytes and stamp made durable
            else:
                _durable.settle(temp, final, fsync=True)
        except OSError as exc:
            raise self._fail(name, exc) from exc
        finally:
            self.room.release()

    def _fail(self, name: bytes, exc: OSError) -> ChunkStoreError:
        error = self.store._write_error(name, exc)
        with self.lock:
            if self.failure is None:
                self.failure = error
        return error

    def _check(self) -> None:
        if self.failure is not None:
            raise self.failure

    def close(self, *, commit: bool) -> None:
        """Wait for every queued chunk; with ``commit``, make the names durable or raise.
        Without it (or after a failure) the last wave's temp files are removed, not renamed."""
        wave, self.wave = self.wave, []
        if wave and commit and self.failure is None:
            self.pending.append(_io_pool().submit(self._settle_wave, wave))
        else:
            _remove_wave(wave)
        # wait; an OSError is recorded in self.failure, anything else is raised as it is
        errors = [e for e in (f.exception() for f in self.pending) if e is not None]
        try:  # (an interrupt while waiting leaves the folders open: a task may still use them)
            if commit:
                self._check()
                if errors:
                    raise errors[0]
                self._sync_folders()
        finally:
            for fd in self.shards.values():
                os.close(fd)
            self.shards = {}

    def _sync_folders(self) -> None:
        try:
            _durable.sync_dirs(self.shards.values())
            if self.shards:  # a shard another writer made may not be durable in the root yet
                _durable.sync_dir(self.store.root)
        except OSError as exc:
            raise ChunkStoreError(
                f"cannot make the chunks in {self.store.root} durable: {exc.strerror}"
            ) from exc


def _is_small(chunk: EncryptedChunk) -> bool:
    return len(chunk.content) < _SMALL_CHUNK


def _remove_wave(wave: list[tuple[int, str, str]]) -> None:
    for dir_fd, temp, _ in wave:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)


_pool_lock = threading.Lock()
_pools: list[ThreadPoolExecutor] = []


def _io_pool() -> ThreadPoolExecutor:
    """The process's ``_FSYNC_THREADS`` I/O threads for batches (created on first use), shared
    by every batch: no batch starts threads of its own. Its tasks (a chunk's fsync and rename,
    a wave) wait only for ``core/_syncfs.py``'s own pool, never for tasks of this one."""
    with _pool_lock:
        if not _pools:
            _pools.append(ThreadPoolExecutor(_FSYNC_THREADS, thread_name_prefix="pqselfenc-io"))
        return _pools[0]


def _info_of(file_name: str, folder: str) -> ChunkInfo | None:
    if len(file_name) != 64 or not file_name.startswith(folder):
        return None
    try:
        return ChunkInfo(name=bytes.fromhex(file_name))
    except ValueError:
        return None
