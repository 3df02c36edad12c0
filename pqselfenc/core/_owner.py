"""Who holds a store lock: the identity written into a lock object, and whether that process
is provably gone.

A lock names its host, the kernel's boot id, the pid namespace, the pid and the process's start
time. Another process can then tell a lock of a process that died on *this* machine (same host,
same boot, same pid namespace, and no process with that pid and start time) from one it simply
cannot see (another machine, another container, another boot): only the first is ``dead``.
Everything else is judged by its age alone. On systems without ``/proc`` the start time and
boot id are absent and a missing pid is all that counts, as restic does.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import time
from typing import Any

from pqselfenc.core import _durable

__all__ = ["identity", "is_dead"]

_PROC_LIMIT = 4096  # /proc/PID/stat and boot_id are far smaller


def _read_proc(path: str) -> str | None:
    try:
        return _durable.read_file(path, limit=_PROC_LIMIT, follow=True).decode("ascii", "replace")
    except OSError:
        return None


def _boot_id() -> str | None:
    text = _read_proc("/proc/sys/kernel/random/boot_id")
    return text.strip() if text else None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def process_start(pid: int) -> int | None:
    """The start time (clock ticks since boot) of process ``pid``, None if unknown or gone."""
    text = _read_proc(f"/proc/{pid}/stat")
    if not text or ")" not in text:
        return None
    fields = text.rpartition(")")[2].split()  # after "(comm)", which may hold spaces
    try:
        return int(fields[19])  # field 22 of stat(5); fields[0] is field 3
    except (IndexError, ValueError):
        return None


def _user() -> str | None:
    with contextlib.suppress(Exception):  # no passwd entry, no LOGNAME: not worth failing over
        return getpass.getuser()
    return None


def identity() -> dict[str, Any]:
    """This process, as a lock object records it (nothing secret: what ``ps`` shows). The host
    is ``uname``'s node name, what ``gethostname`` returns (no ``socket`` import: start-up)."""
    pid = os.getpid()
    return {
        "host": os.uname().nodename,
        "boot": _boot_id(),
        "pidns": _pid_namespace(),
        "pid": pid,
        "pid_start": process_start(pid),
        "user": _user(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _alive(pid: int, start: object) -> bool:
    """Unless provably gone: no process ``pid``, or one with another start time (a reused
    pid). A start time that cannot be read (``/proc`` mounted with ``hidepid``, another
    user's process) proves nothing: alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass  # exists, owned by someone else
    now = process_start(pid) if isinstance(start, int) else None
    return now is None or now == start


def is_dead(body: dict[str, Any]) -> bool:
    """Whether the process that wrote lock ``body`` is provably gone: it ran on this host, in
    this boot and this pid namespace, and no such process runs now. Unknown means alive."""
    pid = body.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    here = identity()
    for key in ("host", "boot", "pidns"):
        if body.get(key) != here[key]:
            return False
    if here["boot"] is None and here["pidns"] is None:
        return False  # no /proc: cannot tell this machine's processes apart from others'
    return not _alive(pid, body.get("pid_start"))
