"""The "private place" rule against access control lists (review #1, finding 4).

An unsealed map is accepted by default only from a place nobody else can change
(docs/cli.md, "Which maps are accepted"). ``setfacl -m u:bob:rw m.map`` lets bob rewrite the map
while its mode bits show only a group class (then the ACL's mask) that may write: the check read
mode bits alone and accepted the map bob had rewritten. ACLs are written here as the kernel
stores them (``system.posix_acl_access``); as root, a child acting as that other user shows the
kernel really grants (or denies) what the parser reads."""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from _cli_helpers import Result, run

from pqselfenc.core import _acl, _trust
from pqselfenc.core._acl import GROUP, GROUP_OBJ, MASK, OTHER, USER, USER_OBJ, Writers

OTHER_UID = 4242
OTHER_GID = 4343
ROOT = os.geteuid() == 0


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PQSELFENC_STORE", raising=False)


def posix_acl(*entries: tuple[int, int, int]) -> bytes:
    """A POSIX ACL xattr: version 2, then (tag, perm, id) entries in the kernel's order."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def acl(
    *named: tuple[int, int, int], mask: int | None = 0o6, group: int = 0o4, owner: int = 0o6
) -> bytes:
    """``owner``, owning group ``group``, ``named`` user/group entries, the mask, others r."""
    none = 0xFFFFFFFF
    masked = () if mask is None else ((MASK, mask, none),)
    users = sorted(e for e in named if e[0] == USER)
    groups = sorted(e for e in named if e[0] == GROUP)
    return posix_acl((USER_OBJ, owner, none), *users, (GROUP_OBJ, group, none), *groups,
                     *masked, (OTHER, 0o4, none))  # fmt: skip


def set_acl(path: Path, raw: bytes, *, default: bool = False) -> None:
    name = "system.posix_acl_default" if default else "system.posix_acl_access"
    os.setxattr(path, name, raw, follow_symlinks=False)


def unsealed_map(capsys: pytest.CaptureFixture[str], folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "f").write_bytes(os.urandom(3000))
    done = run(capsys, "encrypt", folder / "f", "--store", "chunks", "--out", folder / "f.map")
    assert done.code == 0, done.err
    return folder / "f.map"


def decrypt(capsys: pytest.CaptureFixture[str], path: Path, *extra: str) -> Result:
    return run(capsys, "decrypt", path, "--store", "chunks", "--out", "out", "--force", *extra)


def as_other_user_can_write(path: Path) -> bool:
    """Whether the kernel lets OTHER_UID open ``path`` for writing (root only: the child opens
    the folder first, then drops to that user; only the file's own permissions then count)."""
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            os.setgroups([])
            os.setgid(OTHER_GID)
            os.setuid(OTHER_UID)
            os.close(os.open(path.name, os.O_WRONLY, dir_fd=folder))
            os._exit(0)
        except PermissionError:
            os._exit(1)
        except BaseException:
            os._exit(2)
    os.close(folder)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, 1)
    return code == 0


# -- maps: the review's case and its variants ----------------------------------------------------


def test_a_map_another_user_may_write_through_an_acl_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The review's repro: owning group r, mask rw, user 4242 rw. Mode 0664 (the group class
    shows the mask) with a one-member group passed as a user private group."""
    path = unsealed_map(capsys, tmp_path / "share")
    (tmp_path / "share").chmod(0o711)  # the other user may reach the file, not list or add
    set_acl(path, acl((USER, 0o6, OTHER_UID)))
    refused = decrypt(capsys, path)
    assert refused.code == 1
    assert f"{path} is writable by user {OTHER_UID} (access control list)" in refused.error_line()
    assert decrypt(capsys, path, "--allow-unsealed").code == 0
    if ROOT:
        assert as_other_user_can_write(path)


def test_an_acl_whose_mask_takes_write_away_is_private(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Named entries count only through the mask: ``u:4242:rw`` under mask ``r`` cannot write
    (a default ACL inherited by a 0600 file looks like this)."""
    path = unsealed_map(capsys, tmp_path / "share")
    (tmp_path / "share").chmod(0o711)
    set_acl(path, acl((USER, 0o6, OTHER_UID), (GROUP, 0o6, OTHER_GID), mask=0o4))
    assert decrypt(capsys, path).code == 0
    if ROOT:
        assert not as_other_user_can_write(path)


def test_a_folder_on_the_way_with_an_acl_is_not_private_unless_sticky(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = unsealed_map(capsys, tmp_path / "share")
    set_acl(tmp_path / "share", acl((USER, 0o7, OTHER_UID), mask=0o7, owner=0o7, group=0o5))
    refused = decrypt(capsys, path).error_line()
    assert f"{tmp_path / 'share'} is writable by user {OTHER_UID} (access control list)" in refused
    (tmp_path / "share").chmod(0o1770)  # chmod keeps the named entries, sets the mask to rwx
    assert decrypt(capsys, path).code == 0  # sticky: they may add names, never rename ours


def test_acl_groups_follow_the_user_private_group_rule(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = unsealed_map(capsys, tmp_path / "share")
    me = path.stat().st_uid
    set_acl(path, acl((GROUP, 0o6, OTHER_GID)))
    monkeypatch.setattr(_trust, "group_members", lambda gid: frozenset({me}))
    assert _trust.why_not_private(path) is None
    monkeypatch.setattr(_trust, "group_members", lambda gid: frozenset({me, OTHER_UID}))
    assert _trust.why_not_private(path) == (
        f"{path} is writable by group {OTHER_GID} (access control list)"
    )
    set_acl(path, acl(group=0o6))  # the owning group itself, through the ACL
    assert _trust.why_not_private(path) == f"{path} is writable by its group"
    set_acl(path, acl(group=0o6, mask=0o4))  # ... unless the mask takes write away
    assert _trust.why_not_private(path) is None


def test_a_default_acl_grants_nothing_on_the_folder_itself(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A default ACL says what entries made later get; a map written there (mode 0600) gets
    ``u:4242:rw`` under a mask of nothing, so it stays private."""
    folder = tmp_path / "share"
    folder.mkdir()
    set_acl(folder, acl((USER, 0o7, OTHER_UID), mask=0o7, owner=0o7), default=True)
    path = unsealed_map(capsys, folder)
    assert "system.posix_acl_access" in os.listxattr(path)  # inherited, masked to nothing
    assert decrypt(capsys, path).code == 0
    if ROOT:
        folder.chmod(0o711)
        assert not as_other_user_can_write(path)


def _fake_xattrs(
    monkeypatch: pytest.MonkeyPatch, target: Path, names: list[str], read: Callable[[str], bytes]
) -> None:
    """``target`` shows the extended attributes ``names`` (read with ``read``); others none."""
    real_list, real_get = os.listxattr, os.getxattr

    def listxattr(path: str, follow_symlinks: bool = True) -> list[str]:
        return names if path == str(target) else real_list(path, follow_symlinks=follow_symlinks)

    def getxattr(path: str, name: str, follow_symlinks: bool = True) -> bytes:
        if path == str(target):
            return read(name)
        return real_get(path, name, follow_symlinks=follow_symlinks)

    monkeypatch.setattr(os, "listxattr", listxattr)
    monkeypatch.setattr(os, "getxattr", getxattr)


def test_an_acl_that_cannot_be_read_is_not_private(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = unsealed_map(capsys, tmp_path / "share")
    _fake_xattrs(monkeypatch, path, ["user.note", "system.richacl"], lambda name: b"\0" * 8)
    assert _trust.why_not_private(path) == (
        f"{path} may be writable by others: it has an access control list pqselfenc cannot "
        "read (system.richacl)"
    )
    assert decrypt(capsys, path).code == 1
    _fake_xattrs(monkeypatch, path, ["system.posix_acl_access"], lambda name: b"\x02\0\0\0\x01")
    assert "an access control list that does not parse" in str(_trust.why_not_private(path))


def test_without_extended_attributes_the_mode_bits_decide(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filesystem without xattrs (``ENOTSUP``) has no ACL; any other failure to read them
    is a step that cannot be examined."""
    path = unsealed_map(capsys, tmp_path / "share")
    failure = errno.ENOTSUP

    def listxattr(where: str, follow_symlinks: bool = True) -> list[str]:
        raise OSError(failure, os.strerror(failure), where)

    monkeypatch.setattr(os, "listxattr", listxattr)
    assert decrypt(capsys, path).code == 0
    path.chmod(0o606)
    assert "is writable by everyone" in decrypt(capsys, path).error_line()
    path.chmod(0o600)
    failure = errno.EIO
    assert "cannot be examined" in decrypt(capsys, path).error_line()


# -- the parsers ---------------------------------------------------------------------------------


def _stat(gid: int = 100) -> os.stat_result:
    return os.stat_result((0o100600, 1, 1, 1, 1000, gid, 0, 0, 0, 0))


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        struct.pack("<I", 1) + acl()[4:],  # version 1
        acl() + b"\0",  # not whole entries
        acl((USER, 6, 7), mask=None),  # a named entry needs a mask
        posix_acl((USER_OBJ, 6, 0), (USER_OBJ, 6, 0), (GROUP_OBJ, 4, 0), (OTHER, 4, 0)),
        posix_acl((USER_OBJ, 6, 0), (GROUP_OBJ, 4, 0), (0x40, 6, 0), (OTHER, 4, 0)),
        posix_acl((USER_OBJ, 6, 0), (GROUP_OBJ, 4, 0)),  # no OTHER
    ],
    ids=["empty", "version", "partial", "no-mask", "twice", "unknown-tag", "no-other"],
)
def test_a_posix_acl_is_parsed_strictly(raw: bytes) -> None:
    assert _acl.posix_writers(raw, _stat()).unknown == "an access control list that does not parse"


def test_posix_acl_writers() -> None:
    found = _acl.posix_writers(acl((USER, 6, 7), (USER, 4, 8), (GROUP, 2, 9)), _stat(gid=5))
    assert found == Writers(users=frozenset({7}), groups=frozenset({9}))
    assert _acl.posix_writers(acl(group=6, mask=None), _stat(gid=5)).groups == {5}
    assert _acl.posix_writers(posix_acl((USER_OBJ, 7, 0), (GROUP_OBJ, 0, 0), (OTHER, 2, 0)),
                              _stat()).everyone  # fmt: skip


def nfs4_acl(*aces: tuple[int, int, int, str]) -> bytes:
    out = struct.pack(">I", len(aces))
    for kind, flag, access, who in aces:
        name = who.encode()
        out += struct.pack(">IIII", kind, flag, access, len(name)) + name
        out += b"\0" * (-len(name) % 4)
    return out


ALLOW, DENY, WRITE, READ = 0, 1, 0x2, 0x1


def test_nfs4_acl_writers() -> None:
    """As knfsd shows a 0755 folder: only OWNER@ may change it. Then each kind of grant."""
    plain = [(ALLOW, 0, 0x1F01FF, "OWNER@"), (ALLOW, 0x40, READ, "GROUP@"),
             (ALLOW, 0, READ, "EVERYONE@"), (DENY, 0, WRITE, "EVERYONE@")]  # fmt: skip
    assert _acl.nfs4_writers(nfs4_acl(*plain), _stat(gid=5)) == Writers()
    cases = {
        (ALLOW, 0x40, WRITE, "GROUP@"): Writers(groups=frozenset({5})),
        (ALLOW, 0, 0x40000, "EVERYONE@"): Writers(everyone=True),  # may rewrite the ACL
        (ALLOW, 0, WRITE, "4242"): Writers(users=frozenset({4242})),
        (ALLOW, 0x40, 0x40, "4343"): Writers(groups=frozenset({4343})),  # delete child
        (ALLOW, 0x8, WRITE, "EVERYONE@"): Writers(),  # inherit only: not for this entry
        (DENY, 0, WRITE, "4242"): Writers(),
        (ALLOW, 0, READ, "alice@example.org"): Writers(),
    }
    for ace, expected in cases.items():
        assert _acl.nfs4_writers(nfs4_acl(*plain, ace), _stat(gid=5)) == expected, ace
    named = _acl.nfs4_writers(nfs4_acl((ALLOW, 0, WRITE, "alice@example.org")), _stat())
    assert named.unknown == "an NFSv4 access control list grants 'alice@example.org'"
    for broken in (b"", nfs4_acl(*plain)[:-3], nfs4_acl(*plain) + b"\0\0\0\0"):
        assert "does not parse" in str(_acl.nfs4_writers(broken, _stat()).unknown)


def test_an_nfs4_acl_is_read_on_top_of_the_mode_bits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f.map"
    path.write_bytes(b"x")
    path.chmod(0o600)
    grants = nfs4_acl((ALLOW, 0, 0x1F01FF, "OWNER@"), (ALLOW, 0, WRITE, "EVERYONE@"))
    _fake_xattrs(monkeypatch, path, ["system.nfs4_acl"], lambda name: grants)
    assert _trust.why_not_private(path) == f"{path} is writable by everyone"
    owner_only = nfs4_acl((ALLOW, 0, 0x1F01FF, "OWNER@"))
    _fake_xattrs(monkeypatch, path, ["system.nfs4_acl_xdr"], lambda name: owner_only)
    assert _trust.why_not_private(path) is None
    path.chmod(0o602)
    assert _trust.why_not_private(path) == f"{path} is writable by everyone"
