"""Who besides its owner may write a file or folder: its mode bits, or its access control list.

Mode bits are not the whole answer where a filesystem keeps an ACL: after
``setfacl -m u:bob:rw f``, bob may write ``f`` while ``ls -l`` shows only that the group class
(then the ACL's mask) may. ``writers`` reads what Linux shows of an entry's permissions and says
who may write it besides its owner:

* **no ACL**: the mode bits (group, others);
* **a POSIX ACL** (``system.posix_acl_access``: ext4, xfs, btrfs, tmpfs, ...), parsed strictly;
  it replaces the mode's group bits (which then show the mask): a named user, a named group or
  the owning group writes when its entry and the mask both allow it, others by their entry;
* **an NFSv4 ACL** (``system.nfs4_acl``, ZFS's ``system.nfs4_acl_xdr``), parsed strictly, on top
  of the mode bits: each ALLOW entry that grants a way to change content or names (write,
  append, add or delete an entry, delete, change the ACL or the owner) adds its principal.
  DENY entries are never trusted to take a grant back; ``OWNER@`` is the owner, ``GROUP@`` the
  owning group, ``EVERYONE@`` everyone, a numeric id that user or group; any other principal
  (``alice@example.org``, ``NETWORK@``) is one we cannot name;
* **any other ACL** (another ``system.*acl*`` attribute): one we cannot read.

What cannot be named or read is ``Writers.unknown``: callers count it as others writing. A
default ACL (``system.posix_acl_default``) grants nothing on the folder itself, only on what is
created in it later (each new entry then has its own access ACL, examined in its turn), so it is
not a writer. A filesystem without extended attributes (``ENOTSUP``) has no ACL: the mode bits
are the answer. Where Python has no ``os.listxattr`` (not Linux) only the mode bits are read.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from dataclasses import dataclass

__all__ = ["Writers", "nfs4_writers", "posix_writers", "writers"]

POSIX_ACCESS = "system.posix_acl_access"
POSIX_DEFAULT = "system.posix_acl_default"
NFS4_NAMES = frozenset({"system.nfs4_acl", "system.nfs4_acl_xdr"})
_NO_XATTRS = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP})
_GONE = frozenset({errno.ENODATA, errno.ENOENT})

# POSIX ACL xattr (linux/posix_acl_xattr.h): u32 version 2, then (u16 tag, u16 perm, u32 id)
# entries, little-endian; perm bits r=4 w=2 x=1.
_POSIX_VERSION = struct.Struct("<I")
_POSIX_ENTRY = struct.Struct("<HHI")
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_POSIX_WRITE = 0o2

# NFSv4 ACL (RFC 7530 nfsace4, XDR big-endian): u32 count, then per entry u32 type, u32 flag,
# u32 access mask, and the principal as u32 length + bytes padded to 4.
_U32 = struct.Struct(">I")
_ACE = struct.Struct(">III")
ACE4_ALLOW = 0
ACE4_INHERIT_ONLY = 0x8
ACE4_IDENTIFIER_GROUP = 0x40
# Write data or add a file, append or add a folder, delete a child, delete, write ACL, owner.
ACE4_CHANGE = 0x2 | 0x4 | 0x40 | 0x10000 | 0x40000 | 0x80000


@dataclass(frozen=True)
class Writers:
    """Who besides the owner may write an entry: ``users`` and ``groups`` by id, ``everyone``,
    and ``unknown``: why some writer cannot be named (an ACL we cannot read, or a grant to a
    principal that is no uid or gid), None when every writer is named here."""

    users: frozenset[int] = frozenset()
    groups: frozenset[int] = frozenset()
    everyone: bool = False
    unknown: str | None = None

    def __or__(self, other: Writers) -> Writers:
        return Writers(self.users | other.users, self.groups | other.groups,
                       self.everyone or other.everyone, self.unknown or other.unknown)  # fmt: skip


def writers(path: str, info: os.stat_result) -> Writers:
    """Who besides its owner may write the entry ``path`` (not followed if a link), whose
    ``lstat`` is ``info``. ``OSError`` if its attributes cannot be read."""
    acls = _acls(path)
    if POSIX_ACCESS in acls:  # it replaces the mode's group bits (they show its mask)
        return _others(acls, info, posix_writers(acls.pop(POSIX_ACCESS), info))
    return _others(acls, info, _mode_writers(info))


def _mode_writers(info: os.stat_result) -> Writers:
    group = frozenset({info.st_gid}) if info.st_mode & stat.S_IWGRP else frozenset()
    return Writers(groups=group, everyone=bool(info.st_mode & stat.S_IWOTH))


def _others(acls: dict[str, bytes], info: os.stat_result, found: Writers) -> Writers:
    """``found`` with the writers of every ACL but a POSIX access ACL."""
    for name, raw in sorted(acls.items()):
        found |= nfs4_writers(raw, info) if name in NFS4_NAMES else Writers(
            unknown=f"an access control list pqselfenc cannot read ({name})")  # fmt: skip
    return found


def _acls(path: str) -> dict[str, bytes]:
    """The ACL attributes of ``path`` by name (a default ACL is none: module docstring)."""
    listxattr = getattr(os, "listxattr", None)
    if listxattr is None:
        return {}
    try:
        names = listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _NO_XATTRS:
            return {}
        raise
    found = {}
    for name in names:
        if _is_acl(name):
            try:
                found[name] = os.getxattr(path, name, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in _GONE:
                    raise
    return found


def _is_acl(name: str) -> bool:
    return name.startswith("system.") and "acl" in name.lower() and name != POSIX_DEFAULT


def posix_writers(raw: bytes, info: os.stat_result) -> Writers:
    """The writers a POSIX access ACL (its xattr bytes) names, besides the owner."""
    entries = _posix_entries(raw)
    if entries is None:
        return Writers(unknown="an access control list that does not parse")
    mask = next((perm for tag, perm, _ in entries if tag == MASK), 0o7)
    users = {uid for tag, perm, uid in entries if tag == USER and perm & mask & _POSIX_WRITE}
    groups = {gid for tag, perm, gid in entries if tag == GROUP and perm & mask & _POSIX_WRITE}
    if any(tag == GROUP_OBJ and perm & mask & _POSIX_WRITE for tag, perm, _ in entries):
        groups.add(info.st_gid)
    everyone = any(tag == OTHER and perm & _POSIX_WRITE for tag, perm, _ in entries)
    return Writers(frozenset(users), frozenset(groups), everyone)


def _posix_entries(raw: bytes) -> list[tuple[int, int, int]] | None:
    """The entries of a well-formed POSIX ACL (as the kernel accepts them), else None."""
    if len(raw) < 4 or (len(raw) - 4) % _POSIX_ENTRY.size:
        return None
    if _POSIX_VERSION.unpack_from(raw)[0] != 2:
        return None
    entries = list(_POSIX_ENTRY.iter_unpack(raw[4:]))
    tags = [tag for tag, _, _ in entries]
    if any(tag not in (USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER) for tag in tags):
        return None
    once = all(tags.count(tag) == 1 for tag in (USER_OBJ, GROUP_OBJ, OTHER))
    masks, named = tags.count(MASK), USER in tags or GROUP in tags
    if not once or masks > 1 or (named and not masks):
        return None
    return entries


def nfs4_writers(raw: bytes, info: os.stat_result) -> Writers:
    """The writers an NFSv4 ACL (its XDR bytes) names, besides the owner."""
    try:
        aces = _nfs4_aces(raw)
    except (struct.error, ValueError):
        return Writers(unknown="an NFSv4 access control list that does not parse")
    found = Writers()
    for kind, flag, access, who in aces:
        if kind == ACE4_ALLOW and access & ACE4_CHANGE and not flag & ACE4_INHERIT_ONLY:
            found |= _principal(who, bool(flag & ACE4_IDENTIFIER_GROUP), info)
    return found


def _nfs4_aces(raw: bytes) -> list[tuple[int, int, int, str]]:
    (count,) = _U32.unpack_from(raw, 0)
    pos, aces = _U32.size, []
    for _ in range(count):
        kind, flag, access = _ACE.unpack_from(raw, pos)
        (size,) = _U32.unpack_from(raw, pos + _ACE.size)
        start = pos + _ACE.size + _U32.size
        if start + size > len(raw):
            raise ValueError("principal past the end")
        aces.append((kind, flag, access, raw[start : start + size].decode("utf-8")))
        pos = start + (size + 3) // 4 * 4
    if pos != len(raw):
        raise ValueError("trailing bytes")
    return aces


def _principal(who: str, group: bool, info: os.stat_result) -> Writers:
    if who == "OWNER@":
        return Writers()
    if who == "GROUP@":
        return Writers(groups=frozenset({info.st_gid}))
    if who == "EVERYONE@":
        return Writers(everyone=True)
    if who.isascii() and who.isdigit():
        ids = frozenset({int(who)})
        return Writers(groups=ids) if group else Writers(users=ids)
    return Writers(unknown=f"an NFSv4 access control list grants {who!r}")
