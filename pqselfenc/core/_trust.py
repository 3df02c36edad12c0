"""Is a file in a place only you (and root) can change? The answer decides whether the CLI
accepts an unsealed map from it without ``--allow-unsealed``, and whether a key store may be
opened where it is (``pqselfenc/keys/_folder.py``).

A file is in a **private place** when every step to it, resolved as the kernel resolves it
(symbolic links followed, ``..`` taken on the real path), passes these checks:

- every folder on the way, the file and every symbolic link met belong to you or to root;
- nobody else may write a folder on the way, unless it has the sticky bit (``/tmp``: others
  cannot rename or delete what belongs to you there);
- nobody else may write the file.

"Nobody else may write" is read from the mode bits and from an access control list
(``core/_acl.py``): a user other than you, root and the entry's owner, a group, or everyone
that may write, by either, is somebody else; so is a writer an ACL names in a way we cannot
tell (counted as others writing). A group is not somebody else when it has exactly one member
and that member owns the entry (a "user private group", as Debian's OpenSSH allows for
``StrictModes``): umask 002 systems make such folders. A step that cannot be examined counts as
not private.

Between this check and the read nobody else can swap the file: that is what the check says.
"""

from __future__ import annotations

import functools
import grp
import os
import pwd
import stat
from collections import deque
from pathlib import Path

from pqselfenc.core._acl import Writers, writers

__all__ = ["why_not_private"]

_MAX_LINKS = 40  # as the kernel's MAXSYMLINKS
_ROOT = 0


def why_not_private(path: Path, uid: int | None = None) -> str | None:
    """Why someone other than ``uid`` (default: you) or root could replace the file at
    ``path``, as one phrase; ``None`` when nobody else can."""
    me = os.geteuid() if uid is None else uid
    try:
        return _walk(Path(os.getcwd(), path), me)
    except OSError as exc:
        return f"{exc.filename or path} cannot be examined ({exc.strerror})"


def _walk(path: Path, me: int) -> str | None:
    todo = deque(path.parts[1:])
    here, links = "/", 0
    problem = _entry_problem(here, os.lstat(here), me, folder=True)
    while todo and problem is None:
        name = todo.popleft()
        if name == "..":
            here = os.path.dirname(here)
            continue
        step = os.path.join(here, name)
        info = os.lstat(step)
        if stat.S_ISLNK(info.st_mode):
            links += 1
            problem = _owner_problem(step, info, me) or _too_many(links)
            target = Path(os.readlink(step))
            here = "/" if target.is_absolute() else here
            todo.extendleft(reversed(target.parts[1:] if target.is_absolute() else target.parts))
            continue
        problem = _entry_problem(step, info, me, folder=bool(todo))
        here = step
    return problem


def _too_many(links: int) -> str | None:
    return "the path has too many symbolic links" if links > _MAX_LINKS else None


def _owner_problem(where: str, info: os.stat_result, me: int) -> str | None:
    if info.st_uid in (me, _ROOT):
        return None
    return f"{where} belongs to another user (uid {info.st_uid})"


def _entry_problem(where: str, info: os.stat_result, me: int, *, folder: bool) -> str | None:
    """A folder on the way (``folder``) or the file itself."""
    owner = _owner_problem(where, info, me)
    if owner is not None:
        return owner
    if folder and info.st_mode & stat.S_ISVTX:
        return None  # others may add names here, never rename or remove ours
    return _writers_problem(where, info, writers(where, info), me)


def _writers_problem(where: str, info: os.stat_result, found: Writers, me: int) -> str | None:
    if found.unknown is not None:
        return f"{where} may be writable by others: it has {found.unknown}"
    if found.everyone:
        return f"{where} is writable by everyone"
    users = sorted(found.users - {me, _ROOT, info.st_uid})
    if users:
        return f"{where} is writable by user {users[0]} (access control list)"
    for gid in sorted(found.groups):
        if group_members(gid) != {info.st_uid}:
            whose = "its group" if gid == info.st_gid else f"group {gid} (access control list)"
            return f"{where} is writable by {whose}"
    return None


@functools.cache
def group_members(gid: int) -> frozenset[int]:
    """Users in group ``gid``: those whose primary group it is, and its listed members."""
    members = {entry.pw_uid for entry in pwd.getpwall() if entry.pw_gid == gid}
    try:
        names = grp.getgrgid(gid).gr_mem
    except KeyError:
        return frozenset(members)
    for name in names:
        try:
            members.add(pwd.getpwnam(name).pw_uid)
        except KeyError:
            members.add(-1)  # a member we cannot name: not only the owner
    return frozenset(members)
