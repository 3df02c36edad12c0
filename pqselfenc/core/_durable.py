"""Durable, link-safe file I/O: the one place pqselfenc creates, replaces, appends to, wipes and
reads files, for the chunk store, the key store, the file helpers and the command line (POSIX).

What every function here keeps:

* **A name appears only over complete content.** New content goes to a temp file created in the
  target's folder (``O_CREAT | O_EXCL | O_NOFOLLOW``, mode 0600 from the first byte), which is
  fsynced, closed, and renamed over its name (or, to create only if absent, hard-linked to it);
  then the folder is fsynced. A crash leaves the old file or the new one, at most plus a temp file.
* **No link is followed inside a folder we own.** The last component of every path is opened
  with ``O_NOFOLLOW``; a folder inside a store is opened with ``O_DIRECTORY | O_NOFOLLOW``
  (``open_dir(follow=False)``) and names are resolved relative to it (``dir_fd``). A planted
  symbolic link is refused (``UnsafeFileError``), never read, written, wiped or appended through.
  A path a person names (a store root, a command-line argument) is theirs: links in its folders
  are followed, and ``follow=True`` reads follow its last component too.
* **Only regular files are read, appended to, truncated or overwritten.** A file is opened with
  ``O_NONBLOCK`` (a FIFO cannot hang the open), checked with ``fstat`` (``S_ISREG``), then put
  back in blocking mode; a FIFO, device, socket or folder is ``UnsafeFileError``.
* **Every read is bounded.** ``read_file`` takes the largest size its caller can expect and
  refuses a larger file from its ``fstat`` size, without reading it (``FileTooLargeError``).
* **A publish is never cut in two by an interrupt.** ``output_file`` renames and reports the
  new name (``on_publish``) with SIGINT and SIGTERM held (``held_signals``), so a command that
  lists what it wrote never misses a file that appeared.
* **A wipe overwrites only what is ours alone**: a regular file with one link, owned by this
  user. Anything else under the name (a link, a hard link to someone's file) is only unlinked.

Directory fsync, decided here only (``sync_dir``): a filesystem that cannot fsync a folder says
so with ``EINVAL`` (or ``ENOTSUP``/``EOPNOTSUPP``); that is ignored, as nothing more can be done
there (the rename is as durable as that filesystem makes it). Every other error (``EIO``,
``ENOSPC``, ...) is raised, so no caller reports success for a name that may not survive a crash.

Errors are ``OSError``; ``UnsafeFileError`` and ``FileTooLargeError`` are subclasses with a
readable ``strerror``. Each caller translates them into its own layer's exception.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import signal
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path
from types import FrameType
from typing import BinaryIO

from pqselfenc.core import _syncfs

__all__ = [
    "FileTooLargeError",
    "TempFile",
    "UnsafeFileError",
    "append_file",
    "check_private_directory",
    "check_replaceable",
    "create_file",
    "create_temp",
    "describe",
    "discard",
    "folder",
    "held_signals",
    "kind_of",
    "lstat_entry",
    "open_dir",
    "open_file",
    "output_file",
    "read_file",
    "replace_file",
    "replacing_mode",
    "settle",
    "settle_wave",
    "sync_dir",
    "sync_dirs",
    "wipe_file",
    "write_all",
    "write_closed",
    "write_temp",
]

PathLike = str | os.PathLike[str]
_CANNOT_SYNC_DIR = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP})
# link() fails with these where a filesystem has no hard links (EPERM on vfat, for one).
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})
_REFUSED_OPEN = frozenset({errno.ELOOP, errno.ENXIO, errno.EISDIR, errno.ENOTDIR})
_TEMP_TRIES = 100
_HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_WIPE_BLOCK = 1 << 16
_KINDS: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISREG, "regular file"),
    (stat.S_ISLNK, "symbolic link"),
    (stat.S_ISDIR, "directory"),
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
)


class UnsafeFileError(OSError):
    """A name that is not a plain file of ours: a symbolic link where none is followed, or a
    FIFO, device, socket or folder where a regular file must be."""


class FileTooLargeError(OSError):
    """A file larger than the most its reader can expect."""


def kind_of(mode: int) -> str:
    """What ``st_mode`` says a file is, in words: "regular file", "FIFO", "symbolic link"..."""
    return next((kind for test, kind in _KINDS if test(mode)), "special file")


def _unsafe(path: PathLike, mode: int, doing: str = "not a regular file") -> UnsafeFileError:
    code = errno.ELOOP if stat.S_ISLNK(mode) else errno.EINVAL
    return UnsafeFileError(code, f"is a {kind_of(mode)}, {doing}", os.fspath(path))


def describe(exc: OSError) -> str:
    """``NAME: reason`` for an error from this module (or any ``OSError``), for messages: the
    file's name only, never its folder."""
    name = Path(os.fsdecode(exc.filename)).name if exc.filename else None
    reason = exc.strerror or str(exc)
    return f"{name}: {reason}" if name else reason


def lstat_entry(name: PathLike, *, dir_fd: int | None = None) -> os.stat_result | None:
    """``lstat`` of ``name`` (a link is described, never followed); None if nothing is there."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


# -- folders -----------------------------------------------------------------------------------


def open_dir(path: PathLike, *, follow: bool = True, dir_fd: int | None = None) -> int:
    """A read-only descriptor of the folder ``path``, for ``dir_fd`` arguments and ``sync_dir``.
    ``follow=False`` refuses a symbolic link as its last component (``UnsafeFileError``): the
    way to open a folder inside a store."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        return os.open(path, flags, dir_fd=dir_fd)
    except OSError as exc:
        seen = _mode_seen(path, dir_fd, follow) if exc.errno in _REFUSED_OPEN else None
        if seen is not None and not stat.S_ISDIR(seen):
            raise _unsafe(path, seen, "not a folder") from None
        raise


@contextlib.contextmanager
def folder(path: PathLike, *, follow: bool = True) -> Iterator[int]:
    """``open_dir`` for the length of a ``with`` block."""
    fd = open_dir(path, follow=follow)
    try:
        yield fd
    finally:
        os.close(fd)


def sync_dir(target: PathLike | int, *, follow: bool = True) -> None:
    """Make the creations, renames and unlinks in a folder (a path, or an open descriptor)
    durable. A filesystem that cannot fsync a folder is tolerated (module docstring)."""
    if isinstance(target, int):
        _fsync_dir(target)
        return
    fd = open_dir(target, follow=follow)
    try:
        _fsync_dir(fd)
    finally:
        os.close(fd)


def _fsync_dir(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _CANNOT_SYNC_DIR:
            raise


def check_private_directory(
    path: PathLike, error: Callable[[str], Exception], *, subfolders: Iterable[str] = ()
) -> None:
    """Refuse, with ``error(message)``, a folder others could plant files or links in: ``path``
    (the caller named it: links in it are followed) and each of ``subfolders`` that exists
    (never a link) must be folders owned by this user that nobody else can write to."""
    path = Path(path)
    _check_private(path, os.stat(path), error)
    for name in subfolders:
        entry = lstat_entry(path / name)
        if entry is not None:
            _check_private(path / name, entry, error)


def _check_private(path: Path, st: os.stat_result, error: Callable[[str], Exception]) -> None:
    if not stat.S_ISDIR(st.st_mode):
        raise error(f"{path} is a {kind_of(st.st_mode)}, not a folder; move it out of the way")
    if st.st_uid != os.geteuid():
        raise error(f"{path} belongs to uid {st.st_uid}, not to this user "
                    f"(uid {os.geteuid()}): its owner could plant files or links in it; "
                    "use a folder of your own")  # fmt: skip
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        mode = stat.S_IMODE(st.st_mode)
        raise error(f"{path} is writable by others (mode {mode:04o}), who could plant files or "
                    f"links in it; make it private: chmod 700 {path}")  # fmt: skip


# -- building blocks: temp file, settle --------------------------------------------------------


class TempFile:
    """A new file not yet under its final name: the descriptor of its folder (its own copy), its
    own descriptor, and its name in that folder. ``settle`` or ``discard`` it exactly once."""

    __slots__ = ("dir_fd", "fd", "name")

    def __init__(self, dir_fd: int, fd: int, name: str) -> None:
        self.dir_fd, self.fd, self.name = dir_fd, fd, name

    def __repr__(self) -> str:
        return f"TempFile({self.name!r})"


def _token() -> str:
    return secrets.token_hex(8)


def create_temp(dir_fd: int, *, prefix: str, suffix: str = "", mode: int = 0o600) -> TempFile:
    """A new empty file in the folder ``dir_fd`` (duplicated: the caller keeps its own), named
    ``prefix + random + suffix`` and created exclusively with ``mode``: a name already there,
    link or not, is never opened; another is tried."""
    own = os.dup(dir_fd)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        for _ in range(_TEMP_TRIES):
            name = f"{prefix}{_token()}{suffix}"
            with contextlib.suppress(FileExistsError):
                return TempFile(own, os.open(name, flags, mode, dir_fd=own), name)
        raise FileExistsError(errno.EEXIST, "no free temp file name", prefix)
    except BaseException:
        os.close(own)
        raise


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write every byte of ``data`` to ``fd`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_temp(
    dir_fd: int, data: bytes | memoryview, *, prefix: str, suffix: str = "", mode: int = 0o600
) -> TempFile:
    """``create_temp`` holding ``data``, still open and not yet fsynced."""
    temp = create_temp(dir_fd, prefix=prefix, suffix=suffix, mode=mode)
    try:
        write_all(temp.fd, data)
    except BaseException:
        discard(temp)
        raise
    return temp


def settle(temp: TempFile, name: str, *, fsync: bool = True, exclusive: bool = False) -> None:
    """Give ``temp`` its final ``name`` in its folder: fsync (if asked) and close it, then rename
    it over ``name`` (a link there is replaced, never followed), or with ``exclusive`` hard-link
    it to ``name`` only if nothing is there (``FileExistsError``). A name so only ever appears
    over complete, durable content. ``temp`` is consumed (removed on failure); the folder is
    not fsynced here: call ``sync_dir`` once per folder (a batch does it once for many)."""
    try:
        if fsync:
            os.fsync(temp.fd)
        os.close(temp.fd)
        temp.fd = -1
        if exclusive:
            _link_new(temp, name)
        else:
            os.replace(temp.name, name, src_dir_fd=temp.dir_fd, dst_dir_fd=temp.dir_fd)
    except BaseException:
        discard(temp)
        raise
    os.close(temp.dir_fd)
    temp.dir_fd = -1


def _link_new(temp: TempFile, name: str) -> None:
    """Atomic create-only-if-absent: link(2) fails on any existing name, link or not."""
    d = temp.dir_fd
    try:
        os.link(temp.name, name, src_dir_fd=d, dst_dir_fd=d, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        # No hard links on this filesystem: check, then rename (a racing writer may lose).
        if lstat_entry(name, dir_fd=d) is not None:
            raise FileExistsError(errno.EEXIST, "File exists", name) from None
        os.replace(temp.name, name, src_dir_fd=d, dst_dir_fd=d)
        return
    with contextlib.suppress(OSError):  # published; a stray temp name is harmless
        os.unlink(temp.name, dir_fd=d)


def write_closed(
    dir_fd: int, data: bytes | memoryview, *, prefix: str, suffix: str = "", mode: int = 0o600
) -> str:
    """A new temp file in the folder ``dir_fd`` holding ``data`` with ``mode``, written and
    closed, its name, for ``settle_wave`` (which keeps no descriptor per file, so a wave of
    thousands of files holds none open). Durable already where ``syncfs`` is not trusted (the
    wave then only checks), not yet where it is (the wave's ``syncfs`` makes it so)."""
    temp = write_temp(dir_fd, data, prefix=prefix, suffix=suffix)
    try:
        if mode != 0o600:
            os.fchmod(temp.fd, mode)
        if not _syncfs.trusted(dir_fd):
            # No syncfs wave will cover it: fsync while this descriptor is open, so a write
            # error cannot be lost with the inode between close and the wave's fsync.
            os.fsync(temp.fd)
        os.close(temp.fd)
        temp.fd = -1
    except BaseException:
        discard(temp)
        raise
    os.close(temp.dir_fd)
    return temp.name


def settle_wave(
    items: Sequence[tuple[int, str, str]], *, exclusive: bool = False, keep_special: bool = False,
    on_publish: Callable[[int], object] | None = None,
) -> None:  # fmt: skip
    """``settle`` for many files of ``write_closed`` at once: each item is (folder descriptor,
    temp name, final name). Their content is made durable in one wave (one ``syncfs`` per
    filesystem where it is trusted; elsewhere ``write_closed`` fsynced each file), then
    each is renamed over (``exclusive``: linked to) its name, so every name still appears only
    over durable content. ``keep_special``: a FIFO, device, socket or folder under a final name
    is ``UnsafeFileError`` (``check_replaceable``), never replaced. Every temp is consumed: on
    a failure those not yet settled are removed. Folders are not fsynced: ``sync_dirs``.

    ``on_publish(i)``, if given, runs right after item ``i`` is renamed, and the two run with
    SIGINT and SIGTERM held (``held_signals``, as in ``output_file``): an interrupt is raised
    only after both, and the items after it are then removed, never published."""
    try:  # where syncfs is not trusted, write_closed fsynced each file before closing it
        _syncfs.sync_waves(dict.fromkeys(fd for fd, _, _ in items))
    except BaseException:
        _remove_temps(items)
        raise
    for i, item in enumerate(items):
        try:
            with held_signals() if on_publish is not None else contextlib.nullcontext():
                _publish_temp(item, exclusive=exclusive, keep_special=keep_special)
                if on_publish is not None:
                    on_publish(i)
        except BaseException:
            _remove_temps(items[i:])  # item i's temp is already gone if it was published
            raise


def _publish_temp(item: tuple[int, str, str], *, exclusive: bool, keep_special: bool) -> None:
    """Rename (``exclusive``: link) one durable temp file of ``settle_wave`` to its name."""
    dir_fd, temp, name = item
    if keep_special:
        check_replaceable(name, dir_fd=dir_fd)
    if exclusive:
        _link_new(TempFile(dir_fd, -1, temp), name)
    else:
        os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def _remove_temps(items: Sequence[tuple[int, str, str]]) -> None:
    for dir_fd, temp, _ in items:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)


def sync_dirs(dir_fds: Iterable[int]) -> None:
    """``sync_dir`` for many folders at once: one ``syncfs`` per filesystem where it is
    trusted, else an fsync of each folder (a folder that cannot be fsynced is tolerated)."""
    _syncfs.run_all([partial(_fsync_dir, fd) for fd in _syncfs.sync_waves(dict.fromkeys(dir_fds))])


def discard(temp: TempFile) -> None:
    """Close and remove a temp file that will not be settled (never raises)."""
    if temp.fd >= 0:
        with contextlib.suppress(OSError):
            os.close(temp.fd)
    if temp.dir_fd >= 0:
        with contextlib.suppress(OSError):
            os.unlink(temp.name, dir_fd=temp.dir_fd)
        with contextlib.suppress(OSError):
            os.close(temp.dir_fd)
    temp.fd = temp.dir_fd = -1


# -- publishing and interrupts -----------------------------------------------------------------


@contextlib.contextmanager
def held_signals() -> Iterator[None]:
    """SIGINT and SIGTERM held back for a short block of the main thread (where Python runs
    signal handlers, whichever thread the kernel picked): one that arrives meanwhile is handed
    to the handler it would have reached as the block ends, so a publish and the record of it
    happen both or neither. Elsewhere, or for a signal set to be ignored, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[tuple[int, FrameType | None]] = []
    old = {signum: signal.getsignal(signum) for signum in _HELD_SIGNALS}
    try:
        for signum, handler in old.items():
            if handler not in (signal.SIG_IGN, None):
                signal.signal(signum, lambda n, f: caught.append((n, f)))
        yield
    finally:
        for signum, handler in old.items():
            if handler is not None:
                signal.signal(signum, handler)
        if caught:
            first, frame = caught[0]
            _deliver(old[signal.Signals(first)], first, frame)


def _deliver(handler: object, signum: int, frame: FrameType | None) -> None:
    """Hand a held signal to the handler it would have reached (the default action: raise it
    again, now that the default is back)."""
    if callable(handler):
        handler(signum, frame)
    elif handler == signal.SIG_DFL:
        signal.raise_signal(signum)


# -- whole files: create, replace, append, wipe ------------------------------------------------


def check_replaceable(name: PathLike, *, dir_fd: int | None = None) -> os.stat_result | None:
    """What is under ``name`` now (None if nothing), if a write may replace it: a regular file or
    a symbolic link (replaced itself). A FIFO, device, socket or folder is ``UnsafeFileError``:
    data meant for a pipe or a device must never land in a file instead."""
    entry = lstat_entry(name, dir_fd=dir_fd)
    if entry is not None and not (stat.S_ISREG(entry.st_mode) or stat.S_ISLNK(entry.st_mode)):
        raise _unsafe(name, entry.st_mode, "refusing to replace it")
    return entry


def replacing_mode(mode: int, old: os.stat_result | None) -> int:
    """The mode of a file written over ``old`` (what ``check_replaceable`` found there): the
    stricter of ``mode`` and a replaced regular file's permission bits, so a 0600 file never
    comes back 0644. Every writer that replaces an output (here, ``pqselfenc.distributed``)
    applies this one rule."""
    if old is not None and stat.S_ISREG(old.st_mode):
        return mode & stat.S_IMODE(old.st_mode)
    return mode


@contextlib.contextmanager
def output_file(
    path: PathLike, *, mode: int = 0o600, replace: bool = True, prefix: str | None = None,
    on_publish: Callable[[], object] | None = None,
) -> Iterator[BinaryIO]:  # fmt: skip
    """A file object whose content becomes ``path`` only if the block succeeds (atomic
    replacement, or with ``replace=False`` atomic creation: ``FileExistsError`` if anything is
    there); on any failure nothing is left and ``path`` is untouched.

    The temp file (``prefix`` + random, default ``.NAME.`` + random + ``.tmp``) is 0600 until it
    is complete, then gets ``mode``; replacing a regular file keeps the stricter of ``mode`` and
    its permission bits (a 0600 file never comes back 0644). ``check_replaceable`` runs at
    publish time. Then the folder is fsynced.

    The rename and ``on_publish()`` (if given) run with SIGINT and SIGTERM held
    (``held_signals``): an interrupt there is raised after both, so whoever records what was
    published through ``on_publish`` never misses a file that appeared, nor counts one that
    did not. (Only then is an interrupt raised, or an error in the folder's fsync.)
    """
    path = Path(path)
    suffix = ".tmp" if prefix is None else ""
    with folder(path.parent) as dir_fd:
        temp = create_temp(dir_fd, prefix=prefix or f".{path.name}.", suffix=suffix)
        try:
            with os.fdopen(temp.fd, "wb", closefd=False) as handle:
                yield handle
            old = check_replaceable(path.name, dir_fd=dir_fd)
            os.fchmod(temp.fd, replacing_mode(mode, old) if replace else mode)
        except BaseException:
            discard(temp)
            raise
        with held_signals():
            settle(temp, path.name, exclusive=not replace)
            if on_publish is not None:
                on_publish()
        sync_dir(dir_fd)


def replace_file(path: PathLike, data: bytes, *, mode: int = 0o600) -> None:
    """Atomically replace (or create) ``path`` with ``data``: see ``output_file``."""
    with output_file(path, mode=mode) as handle:
        handle.write(data)


def create_file(path: PathLike, data: bytes, *, mode: int = 0o600) -> None:
    """Atomically create ``path`` with ``data`` only if nothing is there (``FileExistsError``)."""
    with output_file(path, mode=mode, replace=False) as handle:
        handle.write(data)


def append_file(path: PathLike, data: bytes, *, mode: int = 0o600) -> None:
    """Append ``data`` to the regular file ``path`` (created with ``mode`` if absent) and fsync
    it; the folder too when the file was empty (it may be new). A link or special file under
    ``path`` is refused before a byte is written."""
    fd, st = _open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode=mode)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if st.st_size == 0:
        sync_dir(Path(path).parent)


def wipe_file(path: PathLike) -> bool:
    """Remove ``path``: overwritten with zeros and fsynced first when it is ours alone (a regular
    file with one link, owned by this user), only unlinked otherwise, so the target of a link or
    a hard link is never touched; then the folder is fsynced. False if nothing was there.

    Overwriting is best effort: copy-on-write filesystems, SSD wear levelling, snapshots and
    backups may keep the old bytes (threat-model/keys.md says what destroy really guarantees).
    """
    path = Path(path)
    with folder(path.parent) as dir_fd:
        entry = lstat_entry(path.name, dir_fd=dir_fd)
        if entry is None:
            return False
        if _ours_alone(entry):
            with contextlib.suppress(FileNotFoundError, UnsafeFileError):
                _overwrite(path.name, dir_fd, entry)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path.name, dir_fd=dir_fd)
        sync_dir(dir_fd)
    return True


def _ours_alone(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_uid == os.geteuid()


def _overwrite(name: str, dir_fd: int, seen: os.stat_result) -> None:
    fd, st = _open_regular(name, os.O_WRONLY, dir_fd=dir_fd)
    try:
        if not _ours_alone(st) or (st.st_dev, st.st_ino) != (seen.st_dev, seen.st_ino):
            return  # swapped since we looked: not ours to overwrite
        zeros, left = memoryview(bytes(min(st.st_size, _WIPE_BLOCK))), st.st_size
        while left > 0:
            left -= os.write(fd, zeros[:left])
        os.fsync(fd)
    finally:
        os.close(fd)


# -- reads -------------------------------------------------------------------------------------


def _open_regular(
    path: PathLike, flags: int, *, mode: int = 0o600, follow: bool = False,
    dir_fd: int | None = None,
) -> tuple[int, os.stat_result]:  # fmt: skip
    """``path`` opened with ``flags`` if it is a regular file (a link only with ``follow``),
    in blocking mode, with its ``fstat``."""
    flags |= os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags, mode, dir_fd=dir_fd)
    except OSError as exc:
        seen = _mode_seen(path, dir_fd, follow) if exc.errno in _REFUSED_OPEN else None
        if seen is not None and not stat.S_ISREG(seen):
            raise _unsafe(path, seen) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _unsafe(path, st.st_mode)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _mode_seen(path: PathLike, dir_fd: int | None, follow: bool) -> int | None:
    """What an open that failed found under ``path``, to name it in the error (None: unknown)."""
    try:
        return os.stat(path, dir_fd=dir_fd, follow_symlinks=follow).st_mode
    except OSError:
        return None


def open_file(
    path: PathLike, *, follow: bool = False, dir_fd: int | None = None, writable: bool = False
) -> BinaryIO:
    """The regular file ``path`` as a buffered file object, for reading (``writable``: reading
    and writing, e.g. to truncate). ``UnsafeFileError`` for a link (unless ``follow``) or a
    special file, ``FileNotFoundError`` if absent. The caller bounds what it reads."""
    fd, _ = _open_regular(path, os.O_RDWR if writable else os.O_RDONLY, follow=follow,
                          dir_fd=dir_fd)  # fmt: skip
    return os.fdopen(fd, "r+b" if writable else "rb")


def read_file(
    path: PathLike, *, limit: int, follow: bool = False, dir_fd: int | None = None
) -> bytes:
    """The bytes of the regular file ``path`` (see ``open_file``), refusing a file larger than
    ``limit`` bytes (``FileTooLargeError``) from its size alone, or if it grows past it."""
    fd, st = _open_regular(path, os.O_RDONLY, follow=follow, dir_fd=dir_fd)
    try:
        if st.st_size > limit:
            raise _too_large(path, limit)
        return _read_bounded(fd, st.st_size, limit, path)
    finally:
        os.close(fd)


def _read_bounded(fd: int, size: int, limit: int, path: PathLike) -> bytes:
    """Everything up to EOF (normally one read of ``size`` bytes and one that finds EOF)."""
    parts: list[bytes] = []
    total, want = 0, size + 1
    while piece := os.read(fd, min(want, limit + 1 - total)):
        parts.append(piece)
        total += len(piece)
        if total > limit:
            raise _too_large(path, limit)
        want = max(size - total + 1, _WIPE_BLOCK)
    return b"".join(parts)


def _too_large(path: PathLike, limit: int) -> FileTooLargeError:
    return FileTooLargeError(errno.EFBIG, f"is larger than {limit} bytes", os.fspath(path))
