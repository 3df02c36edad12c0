"""The key commands in-process, on both backends: sealing for recipients, keys, recipients,
rewrap, audit, and the one-line errors of the key store (wrong key, unknown recipient, locked
keyring, wrong or missing passphrase)."""

from __future__ import annotations

import json
import os
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from _cli_helpers import FakeTerminal, Result, run
from _keys_support import (
    OwnCollection,
    keyring_leaks_connections,
    needs_secret_service,
)

from pqselfenc.keys import KeyStore

PASSPHRASE = "gravel orbit candle mosaic tundra"
EXPORT_PASSPHRASE = "lantern quarry velvet pigeon harbor"
FAIL_KEYRING = "keyring.backends.fail.Keyring"
BACKENDS = [pytest.param("keyring", marks=[pytest.mark.keyring, needs_secret_service]), "file"]


@pytest.fixture(autouse=True)
def _isolated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_keyring: OwnCollection | None
) -> None:
    """Own folders and passphrase; with the Secret Service, the tests' own keyring collection
    (``--backend auto`` picks the keyring there, so nearly every test here uses it)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PQSELFENC_HOME", str(tmp_path / "alice"))
    monkeypatch.setenv("PQSELFENC_STORE", str(tmp_path / "chunks"))
    monkeypatch.setenv("PQSELFENC_PASSPHRASE", PASSPHRASE)
    monkeypatch.delenv("PQSELFENC_EXPORT_PASSPHRASE", raising=False)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which backend "auto" ends up with: the Secret Service, or the file after the fallback."""
    if request.param == "file":
        monkeypatch.setenv("PYTHON_KEYRING_BACKEND", FAIL_KEYRING)
    return str(request.param)


@pytest.fixture
def file_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", FAIL_KEYRING)


def ok(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> Result:
    result = run(capsys, *argv)
    assert result.code == 0, result.err
    return result


def setup_bob(capsys: pytest.CaptureFixture[str]) -> None:
    """Bob makes a key in his home; Alice adds his public key; both have identities."""
    ok(capsys, "keys", "generate", "bob", "--home", "bob")
    ok(capsys, "keys", "export", "bob", "--public", "--home", "bob", "--out", "bob.pub")
    ok(capsys, "keys", "generate", "alice")
    ok(capsys, "recipients", "add", "bob", "bob.pub")


def make_file(path: Path, size: int = 3000) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


# -- the main flow -------------------------------------------------------------------------------


def test_seal_for_a_recipient_who_alone_can_open_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, backend: str
) -> None:
    setup_bob(capsys)
    data = make_file(tmp_path / "report.bin")
    result = ok(capsys, "encrypt", "report.bin", "--to", "bob", "--out", "report.map")
    assert "warning" not in result.err  # sealed: no unsealed-map warning
    assert (tmp_path / "report.map").read_bytes().startswith(b"PQSESEAL")
    ok(capsys, "decrypt", "report.map", "--home", "bob", "--out", "bob.bin")
    assert (tmp_path / "bob.bin").read_bytes() == data
    wrong = run(capsys, "decrypt", "report.map", "--out", "alice.bin")  # alice is not a recipient
    assert wrong.error_line() == "the envelope did not open with any local identity"
    assert "not sealed for any of your keys" in wrong.err
    assert not (tmp_path / "alice.bin").exists()


def test_the_command_names_its_backend(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, backend: str
) -> None:
    first = ok(capsys, "keys", "generate", "alice")
    label = "OS keyring" if backend == "keyring" else "passphrase-protected file"
    assert f"pqselfenc: key store {tmp_path / 'alice' / 'keys'} ({label})" in first.err
    warnings = [x for x in first.err.splitlines() if x.startswith("pqselfenc: warning:")]
    if backend == "file":  # the fallback is loud: one line that names the backend, and one
        assert len(warnings) == 2  # that says the file backend has no rollback anchor
        assert "passphrase-protected file backend" in warnings[0] and "rollback" in warnings[1]
    else:
        assert warnings == []
        assert "rollback anchor in the OS keyring" in first.err
    again = ok(capsys, "keys", "list", "--quiet")
    assert again.err == ""  # --quiet drops the note; the store reopens with its own backend
    other = "file" if backend == "keyring" else "keyring"
    refused = run(capsys, "keys", "list", "--backend", other)
    assert "keeps its keys in the" in refused.error_line()


def test_sign_and_require_the_signer(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    setup_bob(capsys)
    ok(capsys, "keys", "export", "alice", "--public", "--out", "alice.pub")
    ok(capsys, "recipients", "add", "alice", "alice.pub", "--home", "bob")
    data = make_file(tmp_path / "f")
    ok(capsys, "encrypt", "f", "--to", "bob", "--sign-as", "alice", "--out", "f.map")
    ok(capsys, "decrypt", "f.map", "--home", "bob", "--signer", "alice", "--out", "g")
    assert (tmp_path / "g").read_bytes() == data
    unsigned = ok(capsys, "encrypt", "f", "--to", "bob", "--out", "u.map")
    assert unsigned.code == 0
    refused = run(capsys, "decrypt", "u.map", "--home", "bob", "--signer", "alice", "--out", "h")
    assert refused.error_line() == "the envelope is not signed, but a signer was expected"
    assert not (tmp_path / "h").exists()
    usage = run(capsys, "encrypt", "f", "--sign-as", "alice", "--out", "x.map")
    assert usage.code == 2 and "--sign-as" in usage.error_line()


# -- errors of the key store ---------------------------------------------------------------------


def test_unknown_recipient_fails_before_any_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ok(capsys, "keys", "generate", "alice")
    make_file(tmp_path / "f")
    result = run(capsys, "encrypt", "f", "--to", "nobody")
    assert result.error_line() == "no recipient or identity named 'nobody'"
    assert "recipients list" in result.err
    assert not (tmp_path / "f.map").exists() and not (tmp_path / "chunks").exists()


def test_no_key_store_is_said_and_not_created(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    setup_bob(capsys)
    make_file(tmp_path / "f")
    ok(capsys, "encrypt", "f", "--to", "bob", "--out", "f.map")
    for argv in (["decrypt", "f.map", "--out", "o"], ["keys", "list"], ["audit", "verify"]):
        result = run(capsys, *argv, "--home", "nobody")
        assert result.error_line() == f"no key store in {Path('nobody') / 'keys'}"
        assert "keys generate" in result.err
    assert not (tmp_path / "nobody").exists()


@pytest.mark.keyring
@needs_secret_service
def test_locked_keyring(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, isolated_keyring: OwnCollection | None
) -> None:
    """The collection locked for real (the unlock prompt cannot be shown, so it is dismissed):
    one error line that says so, a hint to unlock, and no fallback to another backend."""
    assert isolated_keyring is not None
    created = ok(capsys, "keys", "generate", "alice", "--backend", "keyring")
    assert f"key store {tmp_path / 'alice' / 'keys'} (OS keyring)" in created.err
    isolated_keyring.lock()
    with keyring_leaks_connections():
        for argv in (["keys", "list"], ["keys", "generate", "bob", "--home", "new"]):
            result = run(capsys, *argv)
            assert result.error_line() == "the OS keyring is locked"
            assert "pqselfenc: hint: unlock the OS keyring" in result.err
    assert not (tmp_path / "new" / "keys" / "keystore.json").exists()
    isolated_keyring.unlock()
    assert "alice" in ok(capsys, "keys", "list").out


def test_wrong_passphrase(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, file_backend: None
) -> None:
    ok(capsys, "keys", "generate", "alice")
    monkeypatch.setenv("PQSELFENC_PASSPHRASE", "tarmac lobster velvet fjord")
    result = run(capsys, "keys", "list")
    assert "wrong passphrase" in result.error_line()
    assert "PQSELFENC_PASSPHRASE" in result.err


def test_hints_follow_the_exception_type_not_the_message_text() -> None:
    from pqselfenc.cli._errors import describe
    from pqselfenc.error import KeyStoreError, WrongPassphrase

    message, hint = describe(WrongPassphrase("the vault did not open"))
    assert message == "the vault did not open"
    assert hint is not None and "PQSELFENC_PASSPHRASE" in hint
    _, other = describe(KeyStoreError("wrong passphrase, says only the text"))
    assert other is not None and "PQSELFENC_PASSPHRASE" not in other


def test_the_cli_offers_the_algorithms_the_library_defines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pqselfenc.cli import _keys
    from pqselfenc.kem import SIGNATURE_ALGORITHMS, SUITE_NAMES
    from pqselfenc.keys import KeyConfig

    assert _keys.SUITES == SUITE_NAMES
    assert _keys.SIGNATURES == SIGNATURE_ALGORITHMS
    shown = ok(capsys, "keys", "generate", "--help").out
    assert f"(default {KeyConfig().suite})" in shown
    assert f"(default {KeyConfig().signature})" in shown


def test_passphrase_from_file_or_nowhere(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    file_backend: None,
) -> None:
    monkeypatch.delenv("PQSELFENC_PASSPHRASE")
    result = run(capsys, "keys", "generate", "alice")  # pytest's stdin is not a terminal
    assert result.error_line() == "no passphrase given and no terminal to ask on"
    assert "PQSELFENC_PASSPHRASE" in result.err and "--passphrase-file" in result.err
    (tmp_path / "pass.txt").write_text(PASSPHRASE + "\n")
    ok(capsys, "keys", "generate", "alice", "--passphrase-file", "pass.txt")
    monkeypatch.setenv("PQSELFENC_PASSPHRASE", PASSPHRASE)  # the file's newline was dropped
    ok(capsys, "keys", "list")
    weak = run(capsys, "keys", "generate", "x", "--home", "weak", "--passphrase-file", "/dev/null")
    assert "no passphrase" in weak.error_line() or "too weak" in weak.error_line()


def test_prompted_passphrase_is_confirmed_on_creation(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, file_backend: None
) -> None:
    import getpass

    monkeypatch.delenv("PQSELFENC_PASSPHRASE")
    monkeypatch.setattr(sys, "stdin", FakeTerminal())
    answers = iter([PASSPHRASE, PASSPHRASE + "x"])
    monkeypatch.setattr(getpass, "getpass", lambda prompt: next(answers))
    assert run(capsys, "keys", "generate", "alice").error_line() == "the two passphrases differ"
    answers = iter([PASSPHRASE, PASSPHRASE, PASSPHRASE])
    ok(capsys, "keys", "generate", "alice")
    ok(capsys, "keys", "list")  # reopening asks once


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_sealed_map(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, damage: str
) -> None:
    ok(capsys, "keys", "generate", "alice")
    make_file(tmp_path / "f")
    ok(capsys, "encrypt", "f", "--to", "alice", "--out", "f.map")
    raw = bytearray((tmp_path / "f.map").read_bytes())
    if damage == "flip":
        raw[-20] ^= 0x40
    else:
        del raw[len(raw) // 2 :]
    (tmp_path / "f.map").write_bytes(bytes(raw))
    result = run(capsys, "decrypt", "f.map", "--out", "o")
    assert result.code == 1 and result.error_line()
    assert not (tmp_path / "o").exists()


# -- keys ----------------------------------------------------------------------------------------


def test_rotate_rewrap_destroy(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ok(capsys, "keys", "generate", "alice")
    data = make_file(tmp_path / "f")
    ok(capsys, "encrypt", "f", "--to", "alice", "--out", "kept.map")
    ok(capsys, "encrypt", "f", "--to", "alice", "--out", "stale.map")
    (tmp_path / "kept.map").chmod(0o640)
    rotated = json.loads(ok(capsys, "keys", "rotate", "alice", "--json").out)
    assert rotated["rotated"][0]["version"] == 2
    ok(capsys, "rewrap", "kept.map")
    assert stat.S_IMODE((tmp_path / "kept.map").stat().st_mode) == 0o640
    refused = run(capsys, "keys", "destroy", "alice", "--version", "1")
    assert "irreversible" in refused.error_line() and "--yes" in refused.err
    ok(capsys, "keys", "destroy", "alice", "--version", "1", "--yes")
    ok(capsys, "decrypt", "kept.map", "--out", "k")
    assert (tmp_path / "k").read_bytes() == data
    gone = run(capsys, "decrypt", "stale.map", "--out", "s")
    assert gone.error_line() == "the envelope is addressed only to destroyed key versions"
    assert "destroyed" in gone.err.splitlines()[-1]
    listing = json.loads(ok(capsys, "keys", "list", "--json").out)
    states = [v["state"] for v in listing["identities"][0]["versions"]]
    assert states == ["destroyed", "active"]


def test_a_destroy_the_backend_refuses_is_pending_and_said(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, file_backend: None
) -> None:
    """Issue 18 item 7 from the command line: the failure says what state the key is in and how
    to retry; keys list shows it; other identities keep working; a retry finishes it."""
    from pqselfenc.error import KeyStoreError
    from pqselfenc.keys.backends import FileBackend

    ok(capsys, "keys", "generate", "alice")
    ok(capsys, "keys", "generate", "bob")

    def refuse(self: FileBackend, name: str, version: int) -> bool:
        raise KeyStoreError("delete refused (injected)")

    with monkeypatch.context() as patch:
        patch.setattr(FileBackend, "delete", refuse)
        failed = run(capsys, "keys", "destroy", "alice", "--version", "1", "--yes")
        assert failed.code == 1
        assert "marked destroy-pending" in failed.error_line()
        assert "run this command again" in failed.err
        listing = ok(capsys, "keys", "list")
        assert "alice v1 destroy-pending" in listing.out
        assert "retry: pqselfenc keys destroy alice --version 1 --yes" in listing.out
        ok(capsys, "keys", "rotate", "bob")  # the store is not blocked
    ok(capsys, "keys", "destroy", "alice", "--version", "1", "--yes")
    states = [v["state"] for v in
              json.loads(ok(capsys, "keys", "list", "--json").out)["identities"][0]["versions"]]
    assert states == ["destroyed"]


def test_rewrap_keeps_a_recipients_signature_only_on_request(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, file_backend: None
) -> None:
    """A map bob signed: rewrap cannot sign as bob, so it refuses unless told to sign it
    (--sign-as) or to drop the signature (--drop-signature)."""
    ok(capsys, "keys", "generate", "bob", "--home", "bob")
    ok(capsys, "keys", "export", "bob", "--public", "--home", "bob", "--out", "bob.pub")
    ok(capsys, "keys", "generate", "alice")
    ok(capsys, "keys", "export", "alice", "--public", "--out", "alice.pub")
    ok(capsys, "recipients", "add", "bob", "bob.pub")
    ok(capsys, "recipients", "add", "alice", "alice.pub", "--home", "bob")
    make_file(tmp_path / "f")
    ok(capsys, "encrypt", "f", "--to", "alice", "--sign-as", "bob", "--home", "bob",
       "--out", "f.map")  # fmt: skip
    before = (tmp_path / "f.map").read_bytes()
    refused = run(capsys, "rewrap", "f.map")
    assert "cannot sign as them" in refused.error_line()
    assert (tmp_path / "f.map").read_bytes() == before
    ok(capsys, "rewrap", "f.map", "--drop-signature")
    ok(capsys, "decrypt", "f.map", "--out", "g")
    signed = run(capsys, "decrypt", "f.map", "--signer", "bob", "--out", "h")
    assert signed.code != 0  # the signature is gone, as asked


def test_a_new_key_store_says_that_nothing_outside_records_its_state(
    capsys: pytest.CaptureFixture[str], file_backend: None
) -> None:
    """DESIGN-B point 5: without an anchor outside the folder, a rollback of the whole folder
    (or a cut of the audit tail after the last commit) is not detected: said at creation."""
    created = ok(capsys, "keys", "generate", "alice")
    assert "warning: new key store: nothing outside its folder" in created.err  # one line
    assert "a rollback of the whole folder is not detected" in created.err
    listing = ok(capsys, "keys", "list")
    assert "rollback" not in listing.err  # warned once, when it is created
    assert "no rollback anchor" in listing.out  # and always part of the listing


def test_rotate_due_uses_the_rotation_interval(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, file_backend: None
) -> None:
    past = datetime(2020, 1, 1, tzinfo=UTC)
    with KeyStore.open(
        tmp_path / "alice" / "keys", passphrase=PASSPHRASE, clock=lambda: past
    ) as ks:
        ks.generate("old")
    ok(capsys, "keys", "generate", "fresh")
    listing = json.loads(ok(capsys, "keys", "list", "--json").out)
    due = {i["name"]: i["rotation_due"] for i in listing["identities"]}
    assert due == {"fresh": False, "old": True}
    rotated = json.loads(ok(capsys, "keys", "rotate", "--due", "--json").out)["rotated"]
    assert [(r["name"], r["version"]) for r in rotated] == [("old", 2)]
    assert "no identity is due" in ok(capsys, "keys", "rotate", "--due").out
    usage = run(capsys, "keys", "rotate")
    assert usage.code == 2 and "--due" in usage.error_line()


def test_export_and_import_an_identity(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok(capsys, "keys", "generate", "alice")
    data = make_file(tmp_path / "f")
    ok(capsys, "encrypt", "f", "--to", "alice", "--out", "f.map")
    missing = run(capsys, "keys", "export", "alice", "--out", "alice.key")
    assert "PQSELFENC_EXPORT_PASSPHRASE" in missing.err
    monkeypatch.setenv("PQSELFENC_EXPORT_PASSPHRASE", EXPORT_PASSPHRASE)
    terminal = FakeTerminal()
    with monkeypatch.context() as patch:
        patch.setattr(sys, "stdout", terminal)
        assert "terminal" in run(capsys, "keys", "export", "alice").error_line()
    assert terminal.buffer.getvalue() == b""
    ok(capsys, "keys", "export", "alice", "--out", "alice.key")
    assert stat.S_IMODE((tmp_path / "alice.key").stat().st_mode) == 0o600
    ok(capsys, "keys", "import", "alice.key", "--name", "laptop", "--home", "other")
    ok(capsys, "decrypt", "f.map", "--home", "other", "--out", "g")
    assert (tmp_path / "g").read_bytes() == data
    monkeypatch.setenv("PQSELFENC_EXPORT_PASSPHRASE", "wrong " + EXPORT_PASSPHRASE)
    wrong = run(capsys, "keys", "import", "alice.key", "--home", "third")
    assert "wrong passphrase" in wrong.error_line()


# -- recipients ----------------------------------------------------------------------------------


def test_recipients_add_list_replace_remove(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    setup_bob(capsys)
    ok(capsys, "keys", "generate", "carol", "--home", "carol")
    carol = ok(capsys, "keys", "export", "carol", "--public", "--home", "carol").out
    listing = json.loads(ok(capsys, "recipients", "list", "--json").out)["recipients"]
    assert [(r["name"], r["verifying_key"]) for r in listing] == [("bob", True)]
    exists = run(capsys, "recipients", "add", "bob", carol.split()[0])
    assert exists.error_line() == "recipient 'bob' already exists"
    assert "pqselfenc: hint: use --replace" in exists.err and "replace_existing" not in exists.err
    ok(capsys, "recipients", "add", "bob", carol.split()[0], "--replace")  # key text, no file
    listing = json.loads(ok(capsys, "recipients", "list", "--json").out)["recipients"]
    assert listing[0]["verifying_key"] is False
    bad = run(capsys, "recipients", "add", "dave", "pqse-pub-x-wing:aaaa")
    assert "key text" in bad.error_line()
    (tmp_path / "two.pub").write_text(carol + carol)
    assert "expected one public key" in run(capsys, "recipients", "add", "e", "two.pub").err
    ok(capsys, "recipients", "remove", "bob")
    assert "no recipients" in ok(capsys, "recipients", "list").out
    assert "no recipient named 'bob'" in run(capsys, "recipients", "remove", "bob").error_line()


def test_rewrap_refuses_unsealed_maps(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ok(capsys, "keys", "generate", "alice")
    make_file(tmp_path / "f")
    ok(capsys, "encrypt", "f", "--out", "f.map")
    before = (tmp_path / "f.map").read_bytes()
    assert run(capsys, "rewrap", "f.map").error_line() == "f.map is not a sealed map"
    assert (tmp_path / "f.map").read_bytes() == before


def test_rewrap_refuses_a_map_behind_a_link_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Review #1: rewrap replaced a symbolic link (or one of several hard links) with the new
    map and left the file behind it sealed for the old versions, which destroy then shreds.
    Every map is checked before any is rewrapped."""
    ok(capsys, "keys", "generate", "alice")
    make_file(tmp_path / "f")
    for name in ("t.map", "h1.map", "plain.map"):
        ok(capsys, "encrypt", "f", "--to", "alice", "--out", name)
    (tmp_path / "l.map").symlink_to("t.map")
    os.link(tmp_path / "h1.map", tmp_path / "h2.map")
    ok(capsys, "keys", "rotate", "alice")
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.map")}
    link = run(capsys, "rewrap", "plain.map", "l.map")
    assert link.error_line() == (
        "l.map is a symbolic link: rewrap replaces a map file itself, "
        "and the file it points to would keep the old sealing"
    )
    assert f"rewrap the file it points to: {tmp_path / 't.map'}" in link.err
    hard = run(capsys, "rewrap", "h2.map")
    assert "h2.map has 1 other hard link(s)" in hard.error_line()
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.map")} == before
    assert (tmp_path / "l.map").is_symlink() and os.stat(tmp_path / "h1.map").st_nlink == 2
    ok(capsys, "rewrap", "plain.map", "t.map")  # the files themselves: rewrapped
    assert (tmp_path / "l.map").read_bytes() != before["t.map"]


def test_rewrap_writes_nothing_over_a_map_replaced_meanwhile(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok(capsys, "keys", "generate", "alice")
    make_file(tmp_path / "f")
    ok(capsys, "encrypt", "f", "--to", "alice", "--out", "m.map")
    real = KeyStore.rewrap

    def swapped(self: KeyStore, raw: bytes, **kwargs: Any) -> bytes:
        new = real(self, raw, **kwargs)
        (tmp_path / "other").write_bytes(b"someone else's file")
        os.replace(tmp_path / "other", tmp_path / "m.map")
        return new

    monkeypatch.setattr(KeyStore, "rewrap", swapped)
    result = run(capsys, "rewrap", "m.map")
    said = result.error_line()
    assert said == "m.map was replaced while it was being rewrapped; it was not written"
    assert (tmp_path / "m.map").read_bytes() == b"someone else's file"


# -- audit, private dedup, gc over sealed maps ---------------------------------------------------


def test_audit_show_and_verify(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ok(capsys, "keys", "generate", "alice")
    ok(capsys, "keys", "rotate", "alice")
    events = json.loads(ok(capsys, "audit", "show", "--json").out)["events"]
    assert [e["action"] for e in events if e["action"] != "checkpoint"][:3] == [
        "store-create", "generate", "rotate",
    ]  # fmt: skip
    assert len(json.loads(ok(capsys, "audit", "show", "--last", "1", "--json").out)["events"]) == 1
    assert json.loads(ok(capsys, "audit", "verify", "--json").out)["ok"] is True
    log = tmp_path / "alice" / "keys" / "audit.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"generate"', b'"generatE"')
    log.write_bytes(b"".join(lines))
    broken = run(capsys, "audit", "verify", "--json")
    assert broken.error_line().startswith("audit log broken")
    assert json.loads(broken.out)["ok"] is False


def test_audit_show_on_a_line_that_does_not_parse(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ok(capsys, "keys", "generate", "alice")
    ok(capsys, "keys", "rotate", "alice")
    log = tmp_path / "alice" / "keys" / "audit.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    lines[1] = b"[" * 50_000 + b"]" * 50_000 + b"\n"  # RecursionError for a plain json.loads
    log.write_bytes(b"".join(lines))
    shown = run(capsys, "audit", "show")
    assert shown.error_line() == "audit line 2 does not parse"
    assert "pqselfenc audit verify" in shown.err
    verified = run(capsys, "audit", "verify", "--json")  # read only: reported, not refused
    assert json.loads(verified.out)["problem"] == "malformed"
    assert json.loads(verified.out)["line"] == 2
    refused = run(capsys, "keys", "list")  # a store whose log was tampered with does not open
    assert refused.code == 1 and "(malformed) at line 2" in refused.error_line()


def test_private_dedup_needs_the_domain_secret(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    setup_bob(capsys)
    data = make_file(tmp_path / "f")
    ok(capsys, "encrypt", "f", "--private-dedup", "--to", "alice", "--to", "bob", "--out", "p.map")
    ok(capsys, "decrypt", "p.map", "--out", "mine")
    assert (tmp_path / "mine").read_bytes() == data
    theirs = run(capsys, "decrypt", "p.map", "--home", "bob", "--out", "theirs")
    assert "convergence secret" in theirs.error_line()
    assert not (tmp_path / "theirs").exists()


def test_gc_reads_sealed_maps(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ok(capsys, "keys", "generate", "alice")
    make_file(tmp_path / "keep", 5000)
    make_file(tmp_path / "drop", 7000)
    ok(capsys, "encrypt", "keep", "drop", "--to", "alice", "--out", ".")
    # The maps are sealed: gc opens them with the key store to know what they reference.
    dry = json.loads(ok(capsys, "store", "gc", "keep.map", "--json").out)
    assert (dry["chunks"], dry["referenced"], dry["unreferenced"]) == (6, 3, 3)
    ok(capsys, "store", "gc", "keep.map", "--delete", "--grace", "0")
    ok(capsys, "decrypt", "keep.map", "--out", "k")
    assert run(capsys, "decrypt", "drop.map", "--out", "d").code == 1


def test_invalid_names_are_usage_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for argv in (["keys", "generate", "Bad Name"], ["encrypt", "f", "--to", "a b"],
                 ["recipients", "remove", "../x"]):  # fmt: skip
        result = run(capsys, *argv)
        assert result.code == 2 and "invalid name" in result.error_line()
    assert not (tmp_path / "alice").exists()
