"""Which map files a command accepts (issue 11.1): ``--signer``, ``--require-sealed`` and the
default that refuses unsealed maps from places others can write, on every command that reads a
map (decrypt, store stats, store gc, rewrap)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _cli_helpers import Result, run

from pqselfenc import DirectoryChunkStore
from pqselfenc.core import _trust

PASSPHRASE = "gravel orbit candle mosaic tundra"
FAIL_KEYRING = "keyring.backends.fail.Keyring"
OTHER_UID = 4242


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PQSELFENC_HOME", str(tmp_path / "alice"))
    monkeypatch.setenv("PQSELFENC_STORE", str(tmp_path / "chunks"))
    monkeypatch.setenv("PQSELFENC_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", FAIL_KEYRING)


def ok(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> Result:
    result = run(capsys, *argv)
    assert result.code == 0, result.err
    return result


def unsealed_map(capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str = "f") -> bytes:
    data = os.urandom(3000)
    (tmp_path / name).write_bytes(data)
    ok(capsys, "encrypt", name, "--out", f"{name}.map")
    return data


# -- a stated policy holds for every kind of map file ------------------------------------------


def test_signer_refuses_an_unsealed_map(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Whoever can swap the map file must not get their own content accepted under --signer."""
    ok(capsys, "keys", "generate", "alice")
    unsealed_map(capsys, tmp_path)
    refused = run(capsys, "decrypt", "f.map", "--signer", "alice", "--out", "g")
    assert refused.code == 1
    assert "f.map is not sealed: --signer alice accepts only a map sealed" in refused.error_line()
    assert not (tmp_path / "g").exists()
    json_map = tmp_path / "j.map"  # the JSON form is no way round it either
    from pqselfenc import DataMap

    json_map.write_text(DataMap.from_bytes((tmp_path / "f.map").read_bytes()).to_json())
    assert "is not sealed" in run(capsys, "decrypt", "j.map", "--signer", "alice").error_line()


def test_require_sealed_refuses_an_unsealed_map(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    unsealed_map(capsys, tmp_path)
    refused = run(capsys, "decrypt", "f.map", "--require-sealed", "--out", "g")
    assert refused.error_line() == "f.map is not a sealed map"
    assert not (tmp_path / "g").exists()
    ok(capsys, "decrypt", "f.map", "--out", "g")  # no policy stated: a private place is fine


def test_sealed_and_signed_maps_pass_every_policy(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ok(capsys, "keys", "generate", "alice")
    data = os.urandom(2000)
    (tmp_path / "f").write_bytes(data)
    ok(capsys, "encrypt", "f", "--to", "alice", "--sign-as", "alice", "--out", "f.map")
    for policy in (["--signer", "alice"], ["--require-sealed"], []):
        (tmp_path / "g").unlink(missing_ok=True)
        ok(capsys, "decrypt", "f.map", *policy, "--out", "g")
        assert (tmp_path / "g").read_bytes() == data


def test_gc_and_stats_enforce_the_policy_before_deleting_anything(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A swapped map makes gc delete live chunks: the policy holds there too."""
    ok(capsys, "keys", "generate", "alice")
    unsealed_map(capsys, tmp_path, "f")
    stored = set(DirectoryChunkStore(tmp_path / "chunks"))
    for argv in (["store", "gc", "f.map", "--delete"], ["store", "stats", "f.map"]):
        signer = run(capsys, *argv, "--signer", "alice")
        assert "is not sealed: --signer alice" in signer.error_line()
        assert "is not a sealed map" in run(capsys, *argv, "--require-sealed").error_line()
    assert set(DirectoryChunkStore(tmp_path / "chunks")) == stored


def test_contradicting_options_are_usage_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    unsealed_map(capsys, tmp_path)
    for policy in (["--signer", "alice"], ["--require-sealed"]):
        result = run(capsys, "decrypt", "f.map", "--allow-unsealed", *policy)
        assert result.code == 2 and "--allow-unsealed contradicts" in result.error_line()


def test_rewrap_reads_maps_through_the_same_door(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ok(capsys, "keys", "generate", "alice")
    unsealed_map(capsys, tmp_path)
    (tmp_path / "junk.map").write_bytes(b"not a map")
    assert run(capsys, "rewrap", "f.map").error_line() == "f.map is not a sealed map"
    assert run(capsys, "rewrap", "junk.map").error_line() == "junk.map is not a pqselfenc map"


# -- unsealed maps from places others can write --------------------------------------------------


def shared_folder(tmp_path: Path, mode: int) -> Path:
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(mode)
    return folder


@pytest.mark.parametrize("mode", [0o777, 0o757])
def test_unsealed_map_in_a_folder_others_can_write_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, mode: int
) -> None:
    data = unsealed_map(capsys, tmp_path)
    folder = shared_folder(tmp_path, mode)
    (tmp_path / "f.map").rename(folder / "f.map")
    refused = run(capsys, "decrypt", "shared/f.map", "--out", "g")
    assert "shared/f.map is an unsealed map in a place others can write" in refused.error_line()
    assert "--allow-unsealed" in refused.err
    assert not (tmp_path / "g").exists()
    assert "others can write" in run(capsys, "store", "gc", "shared/f.map").error_line()
    ok(capsys, "decrypt", "shared/f.map", "--allow-unsealed", "--out", "g")
    assert (tmp_path / "g").read_bytes() == data


def test_sticky_folder_protects_what_belongs_to_you(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """/tmp-like folders: others cannot rename or delete your file there."""
    unsealed_map(capsys, tmp_path)
    folder = shared_folder(tmp_path, 0o1777)
    (tmp_path / "f.map").rename(folder / "f.map")
    ok(capsys, "decrypt", "shared/f.map", "--out", "g")


def test_map_writable_by_others_or_owned_by_another_user_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    unsealed_map(capsys, tmp_path)
    (tmp_path / "f.map").chmod(0o606)
    assert "f.map is writable by everyone" in run(capsys, "decrypt", "f.map").error_line()
    (tmp_path / "f.map").chmod(0o600)
    me = os.geteuid()
    if me == 0:  # root can give the file away; anyone else asks as another user
        os.chown(tmp_path / "f.map", OTHER_UID, -1)
        assert _trust.why_not_private(tmp_path / "f.map") == (
            f"{tmp_path / 'f.map'} belongs to another user (uid {OTHER_UID})"
        )
        assert "belongs to another user" in run(capsys, "decrypt", "f.map").error_line()
    else:
        assert "belongs to another user" in str(_trust.why_not_private(tmp_path, OTHER_UID))


def test_links_are_followed_and_checked_on_the_way(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The real place counts: a link from a private place into a shared one is not private,
    a link into a private place is, and ``..`` is taken on the real path."""
    unsealed_map(capsys, tmp_path)
    folder = shared_folder(tmp_path, 0o777)
    (tmp_path / "f.map").rename(folder / "f.map")
    (tmp_path / "link.map").symlink_to(folder / "f.map")
    assert "shared is writable by everyone" in run(capsys, "decrypt", "link.map").error_line()
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (folder / "f.map").rename(private / "f.map")
    (folder / "to-private").symlink_to(private)
    (tmp_path / "inner").mkdir()
    (tmp_path / "inner" / "up").symlink_to(private / "f.map")
    assert _trust.why_not_private(tmp_path / "inner" / "up") is None
    assert "shared is writable" in str(_trust.why_not_private(folder / "to-private" / "f.map"))
    assert _trust.why_not_private(private / ".." / "private" / "f.map") is None


def test_group_writable_is_private_only_for_a_one_member_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """umask 002 systems (user private groups) make group-writable folders: private when the
    group's only member owns them, as Debian's OpenSSH StrictModes decides."""
    folder = shared_folder(tmp_path, 0o775)
    (folder / "f.map").write_bytes(b"x")
    owner = folder.stat().st_uid
    monkeypatch.setattr(_trust, "group_members", lambda gid: frozenset({owner}))
    assert _trust.why_not_private(folder / "f.map") is None
    monkeypatch.setattr(_trust, "group_members", lambda gid: frozenset({owner, OTHER_UID}))
    assert "shared is writable by its group" in str(_trust.why_not_private(folder / "f.map"))


def test_a_place_that_cannot_be_examined_is_not_private(tmp_path: Path) -> None:
    assert "cannot be examined" in str(_trust.why_not_private(tmp_path / "missing" / "f.map"))
