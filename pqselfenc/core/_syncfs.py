"""Many new files made durable in one wave: ``syncfs(2)`` where it is trusted, else ``fsync`` of
each file on a few threads. ``core/_durable.py`` (``sync_files``, ``settle_many``) calls it.

Why a wave: each ``fsync`` of a small new file costs a journal commit; a thousand 1-4 KiB files
fsynced one by one took 4-6 s here, on 8 threads (the kernel groups concurrent commits) 0.7 s,
and written all, then one ``syncfs``, then renamed all, then one more ``syncfs``, 0.2 s.

What ``syncfs(fd)`` guarantees. It writes back every dirty page and inode of the filesystem that
holds ``fd`` and waits for them (``sync_filesystem``: ``writeback_inodes_sb``,
``sync_inodes_sb``, then the filesystem's ``sync_fs(wait=1)``): on ext4 that forces a journal
commit and flushes the device cache (as ``fsync`` does), on xfs a synchronous log force, on
btrfs a transaction commit; tmpfs has nothing to write back (its files never survive a power
cut, whatever ``fsync`` says). So every byte written to any file of that filesystem *before the
call began* is as durable afterwards as an ``fsync`` of that file would have made it, and the
names renamed before a ``syncfs`` are as durable as a folder ``fsync`` makes them.

When it is trusted, and only then:

* **Linux 5.8 or later.** Before 5.8 ``syncfs`` returned 0 even when writeback failed (an
  ``EIO`` would be lost, and a map written over chunks that never reached the disk); since 5.8
  it reports any writeback error on the filesystem since the descriptor was opened (the
  superblock's ``errseq``). The descriptors passed are folder descriptors; one opened after a
  file of the wave was written could miss an error in that window, but the store's batch ends
  with a ``syncfs`` on the shard descriptors it opened before writing anything into them, so
  such an error still fails the batch and no map names the chunk (an error on another file of
  the filesystem is seen too: the wave then fails, the safe side).
* **A filesystem known to implement it** (``fstatfs`` type): ext4, xfs, btrfs, tmpfs. Elsewhere
  ``syncfs`` may be weaker than ``fsync`` (a FUSE filesystem without ``FUSE_SYNCFS`` only hands
  its pages to the daemon; a network filesystem may or may not commit), so every file there is
  fsynced on the descriptor that wrote it, before it is closed (``_durable.write_closed``: a
  file reopened to be fsynced could have lost a write error with its evicted inode).

Cost on a shared filesystem: ``syncfs`` also writes back what *other* processes left dirty on
it, so one call can take as long as their backlog. A wave is therefore bounded by its callers
(a store batch, a group of maps), and ``fsync`` remains the path for large chunks, whose fsync
costs less than their own bytes.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["FSYNC_THREADS", "io_pool", "run_all", "sync_waves", "trusted"]

FSYNC_THREADS = 8
MIN_KERNEL = (5, 8)  # syncfs reports writeback errors from here on
# fstatfs f_type magic numbers (linux/magic.h) of the filesystems whose syncfs is a full sync
TRUSTED_FILESYSTEMS = {
    0xEF53: "ext2/3/4",
    0x58465342: "xfs",
    0x9123683E: "btrfs",
    0x01021994: "tmpfs",
}

_lock = threading.Lock()
_state: dict[str, Any] = {}  # "libc": the C library (ctypes, loaded on first use), "pool"


def _libc() -> Any:
    with _lock:
        if "libc" not in _state:
            import ctypes  # only a writer that settles a wave pays for it

            lib = ctypes.CDLL(None, use_errno=True)
            _state["libc"] = lib if hasattr(lib, "syncfs") and hasattr(lib, "fstatfs") else None
            _state["ctypes"] = ctypes
        return _state["libc"]


def _kernel_reports_errors() -> bool:
    if os.uname().sysname != "Linux":
        return False
    try:
        major, minor = (int(part) for part in os.uname().release.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= MIN_KERNEL


def _filesystem_type(fd: int) -> int | None:
    libc = _libc()
    if libc is None:
        return None
    ctypes = _state["ctypes"]
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
    if libc.fstatfs(fd, buf) != 0:
        return None
    return int(ctypes.c_long.from_buffer(buf).value) & 0xFFFFFFFF  # f_type comes first


def trusted(fd: int) -> bool:
    """Whether ``syncfs`` on the filesystem of ``fd`` is a full sync here (module docstring).
    Asked of the filesystem every time (one ``fstatfs``): a device number is reused once its
    filesystem is unmounted, so a verdict cached by it could call a FUSE or NFS mount that
    took the number trusted."""
    return _kernel_reports_errors() and _filesystem_type(fd) in TRUSTED_FILESYSTEMS


def _syncfs(fd: int) -> None:
    libc = _libc()
    if libc.syncfs(fd) != 0:
        code = _state["ctypes"].get_errno() or errno.EIO
        raise OSError(code, os.strerror(code))


def io_pool() -> ThreadPoolExecutor:
    """The process's pool of ``FSYNC_THREADS`` threads for fsyncs (created on first use):
    shared by every wave, so no wave starts threads of its own. Its tasks never wait for
    other tasks of the pool."""
    with _lock:
        pool = _state.get("pool")
        if pool is None:
            pool = _state["pool"] = ThreadPoolExecutor(
                FSYNC_THREADS, thread_name_prefix="pqselfenc-fsync"
            )
        return pool


def run_all(calls: Sequence[Callable[[], object]]) -> None:
    """Run every call (fsyncs), up to ``FSYNC_THREADS`` at once on ``io_pool`` (inline when
    there is one); the first error is raised after all have finished."""
    if len(calls) <= 1:
        for call in calls:
            call()
        return
    futures = [io_pool().submit(call) for call in calls]
    errors = [e for e in (f.exception() for f in futures) if e is not None]
    if errors:
        raise errors[0]


def sync_waves(fds: Iterable[int]) -> list[int]:
    """One ``syncfs`` per filesystem among ``fds`` where it is trusted; returns the
    descriptors it did not cover (on other filesystems), for the caller to fsync."""
    done: set[int] = set()
    left: list[int] = []
    for fd in fds:
        dev = os.fstat(fd).st_dev
        if dev in done:
            continue
        if trusted(fd):
            _syncfs(fd)
            done.add(dev)
        else:
            left.append(fd)
    return left
