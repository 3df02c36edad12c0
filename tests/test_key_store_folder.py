"""The key store's folder is private, in a private place, and checked before any file in it is
read (review #1: finding 10, and the suspicion that a home made under umask 002 lets its group
rename ``HOME/keys``). Rules: ``pqselfenc/keys/_folder.py``; the place: ``core/_trust.py``."""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _cli_helpers import clean_env, run, run_with_peak_rss

from pqselfenc.core import _durable, _trust
from pqselfenc.error import KeyStoreError
from pqselfenc.keys import KeyConfig, KeyStore
from pqselfenc.keys import defaults as D

PASSPHRASE = "gravel orbit candle mosaic tundra"
OTHER_UID = 4242
FAIL_KEYRING = "keyring.backends.fail.Keyring"


def open_keys(path: Path) -> KeyStore:
    return KeyStore.open(path, config=KeyConfig(), passphrase=PASSPHRASE)


@contextlib.contextmanager
def reads_under(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every file ``_durable`` reads (or opens to read) under ``folder`` from now on."""
    seen: list[str] = []
    for name in ("read_file", "open_file"):
        real: Callable[..., object] = getattr(_durable, name)

        def spy(path: object, *args: object, _real: Callable[..., object] = real,
                **kwargs: object) -> object:  # fmt: skip
            if str(path).startswith(str(folder)):
                seen.append(str(path))
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(_durable, name, spy)
    yield seen


OPENERS: dict[str, Callable[[Path], object]] = {
    "KeyStore.open": open_keys,
    "KeyStore.verify_audit": lambda p: KeyStore.verify_audit(p, passphrase=PASSPHRASE),
    "KeyStore.backend_of": KeyStore.backend_of,
    "existing_backend": D.existing_backend,
    "choose_backend": D.choose_backend,
}


@pytest.mark.parametrize("opener", sorted(OPENERS))
def test_a_folder_others_can_write_is_refused_before_any_file_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opener: str
) -> None:
    """A keystore.json planted in a 0777 folder used to be read and parsed first: its parse
    error (or a 3 GiB RSS for a 60 MiB file) came out, never the folder's permissions."""
    open_keys(tmp_path / "ks").close()
    (tmp_path / "ks" / "keystore.json").write_text("{}")
    (tmp_path / "ks").chmod(0o777)
    with reads_under(tmp_path / "ks", monkeypatch) as seen, pytest.raises(KeyStoreError) as caught:
        OPENERS[opener](tmp_path / "ks")
    assert f"{tmp_path / 'ks'} is writable by others (mode 0777)" in str(caught.value)
    assert seen == []
    (tmp_path / "ks").chmod(0o700)  # the planted file was there to be read all along
    with pytest.raises(Exception, match="lacks 'version'"):
        OPENERS[opener](tmp_path / "ks")


def test_the_default_store_and_the_command_check_the_folder_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "home" / "keys"
    keys.mkdir(parents=True)
    (keys / "keystore.json").write_text("{}")
    keys.chmod(0o777)
    monkeypatch.setenv("PQSELFENC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PQSELFENC_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", FAIL_KEYRING)
    with pytest.raises(KeyStoreError, match="mode 0777"):
        KeyStore(KeyConfig())
    for argv in (["keys", "list"], ["audit", "verify"], ["keys", "generate", "bob"]):
        assert "is writable by others (mode 0777)" in run(capsys, *argv).error_line()


def test_a_planted_file_costs_nothing_to_refuse(tmp_path: Path) -> None:
    """The review's repro: a 60 MiB keystore.json in a 0777 folder (3 GiB peak RSS before)."""
    keys = tmp_path / "home" / "keys"
    keys.mkdir(parents=True)
    with (keys / "keystore.json").open("wb") as f:
        f.write(b'{"x":[' + b"[]," * ((60 << 20) // 3) + b"[]]}")
    keys.chmod(0o777)
    env = clean_env(tmp_path, PQSELFENC_PASSPHRASE=PASSPHRASE)
    (tmp_path / "empty").mkdir()
    argv = ["keys", "list", "--backend", "file", "--home"]
    idle, none = run_with_peak_rss([*argv, str(tmp_path / "empty")], env, tmp_path)
    assert b"no key store in" in none.stderr
    peak, refused = run_with_peak_rss([*argv, str(tmp_path / "home")], env, tmp_path)
    assert refused.returncode == 1 and b"(mode 0777)" in refused.stderr
    assert peak < idle + (8 << 20), (peak >> 20, idle >> 20)


# -- the place of the folder ---------------------------------------------------------------------


def test_a_home_its_group_may_write_is_refused_unless_a_user_private_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group members who may write HOME can rename HOME/keys away and put an older copy (or a
    store of theirs) in its place: not a private place, as for an unsealed map."""
    home = tmp_path / "home"
    open_keys(home / "keys").close()
    home.chmod(0o775)
    owner = home.stat().st_uid
    monkeypatch.setattr(_trust, "group_members", lambda gid: frozenset({owner, OTHER_UID}))
    for opener in OPENERS.values():
        with pytest.raises(KeyStoreError) as caught:
            opener(home / "keys")
        assert f"the key store {home / 'keys'} is in a place others can change ({home} is " \
            "writable by its group)" in str(caught.value)
    monkeypatch.setattr(_trust, "group_members", lambda gid: frozenset({owner}))
    open_keys(home / "keys").close()  # umask 002 with a user private group: private
    home.chmod(0o777)
    with pytest.raises(KeyStoreError, match=f"{home} is writable by everyone"):
        open_keys(home / "keys")
    home.chmod(0o1777)  # sticky, like /tmp: others cannot rename the store away
    open_keys(home / "keys").close()


def test_a_folder_on_the_way_another_user_may_write_through_an_acl_is_refused(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    open_keys(home / "keys").close()
    entries = ((0x01, 7, 0xFFFFFFFF), (0x02, 7, OTHER_UID), (0x04, 5, 0xFFFFFFFF),
               (0x10, 7, 0xFFFFFFFF), (0x20, 5, 0xFFFFFFFF))  # fmt: skip
    raw = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)
    os.setxattr(home, "system.posix_acl_access", raw)
    with pytest.raises(KeyStoreError, match=f"writable by user {OTHER_UID} .access control list"):
        open_keys(home / "keys")


def test_a_new_store_and_the_folders_made_for_it_are_0700_under_umask_002(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """They used to be made with the umask (0775 under 002: a home its group may write)."""
    owner = os.geteuid()
    monkeypatch.setattr(_trust, "group_members", lambda gid: frozenset({owner, OTHER_UID}))
    old = os.umask(0o002)
    try:
        open_keys(tmp_path / "a" / "b" / "keys").close()
    finally:
        os.umask(old)
    for folder in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "keys"):
        assert folder.stat().st_mode & 0o777 == 0o700, folder
