"""The rollback anchor (issue 15 item 2) on both backends that keep one: the real SoftHSM token
(pkcs11) and the real gnome-keyring Secret Service (keyring, under scripts/test.sh).

Whole-folder rollback after a rotation, a destroy, a recipient added or replaced (copy the folder,
change, put the copy back: refused with the anchor's values, nothing written); the audit tail cut
after the last commit (the gap a folder alone cannot see); two copies of one folder in use at
once; a rollback while a store is open; the anchor missing, reset, behind the folder after a
failed write; a torn tail's ``audit-recover`` checkpoint anchored; a keyring store of the release
before anchored at its first open; ``audit verify``; concurrent processes. The file backend has no
anchor and says so.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import pytest
from _anchored import Anchored, anchored_fixture  # noqa: F401  (registers "anchored")
from _keys_support import PASSPHRASE, FakeClock, OwnCollection, needs_secret_service, small_map

from pqselfenc.error import AuditError, IntegrityError, RollbackError, TokenUnavailable
from pqselfenc.keys import KeyStore, _opening
from pqselfenc.keys._anchor import GENESIS, Anchor
from pqselfenc.keys.audit import AuditLog


def recipient_text() -> str:
    from pqselfenc.kem import generate_identity

    return str(generate_identity("x-wing").recipient())


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}  # fmt: skip


def restore(copy: Path, directory: Path) -> None:
    shutil.rmtree(directory)
    shutil.copytree(copy, directory)


def head(store: KeyStore) -> tuple[int, bytes]:
    return store.audit.head()


def state(store: KeyStore) -> Anchor:
    """What the anchor of ``store`` must record now: its generation and audit head."""
    return Anchor(store._ledger.read().generation, *head(store))


def made(anchored: Anchored, tmp_path: Path) -> KeyStore:
    """A store with alice, a recipient bob and a sealed map, closed (so anchored at its head)."""
    ks = anchored.open(tmp_path / "ks")
    ks.generate("alice")
    ks.recipients.add("bob", recipient_text())
    ks.seal(small_map(), to=["alice", "bob"])
    ks.close()
    return ks


CHANGES = {
    "rotate": lambda ks: ks.rotate("alice"),
    "destroy": lambda ks: (ks.rotate("alice"), ks.destroy("alice", 1)),
    "recipient-add": lambda ks: ks.recipients.add("carol", recipient_text()),
    "recipient-replace": lambda ks: ks.recipients.add("bob", recipient_text(),
                                                      replace_existing=True),
    "recipient-remove": lambda ks: ks.recipients.remove("bob"),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_whole_folder_rolled_back_is_refused(anchored: Anchored, tmp_path: Path,
                                               change: str) -> None:  # fmt: skip
    """Copy the folder, change the store, put the copy back: open refuses with the anchor's
    values (generation, audit seq, hash prefix) and writes nothing."""
    ks = made(anchored, tmp_path)
    shutil.copytree(ks.directory, tmp_path / "copy")
    ks = anchored.open(ks.directory)
    CHANGES[change](ks)
    ks.close()
    anchor = anchored.anchor(ks.directory)
    assert anchor is not None and anchor.position == (ks._ledger.read().generation, head(ks)[0])
    restore(tmp_path / "copy", ks.directory)
    before = snapshot(ks.directory)
    with pytest.raises(RollbackError) as info:
        anchored.open(ks.directory)
    message = str(info.value)
    assert f"generation {anchor.generation}, audit seq {anchor.audit_seq}" in message
    assert anchor.audit_hash.hex()[:16] in message and "keys anchor --reset" in message
    assert snapshot(ks.directory) == before  # refused before anything was written
    report = KeyStore.verify_audit(ks.directory, backend=anchored.kind)
    assert (report.ok, report.kind) == (False, "rolled-back")


def test_the_audit_tail_cut_after_the_last_commit_is_refused(anchored: Anchored,
                                                             tmp_path: Path) -> None:  # fmt: skip
    """The gap a folder alone cannot see (tests/test_audit_integrity.py::
    test_the_remaining_gap_is_the_tail_after_the_last_commit): seals and checkpoints after the
    last commit cut off, audit.checkpoint put back. The anchor, written at every checkpoint and
    at close, remembers the longer log."""
    ks = anchored.open(tmp_path / "ks")
    ks.generate("alice")
    ks.close()
    lines = ks.audit.path.read_bytes().splitlines(keepends=True)
    saved = ks.audit.checkpoint_path.read_bytes()
    ks = anchored.open(ks.directory)
    for _ in range(4):
        ks.seal(small_map(), to=["alice"])
    ks.close()
    ks.audit.path.write_bytes(b"".join(lines))
    ks.audit.checkpoint_path.write_bytes(saved)
    assert ks.audit.verify().ok  # consistent inside the folder
    with pytest.raises(RollbackError, match=f"ends at seq {len(lines)}"):
        anchored.open(ks.directory)


def test_a_cut_tail_with_torn_bytes_is_refused_before_anything_is_written(
    anchored: Anchored, tmp_path: Path
) -> None:
    """The audit tail cut after the last commit, then a few bytes appended that look like a
    torn line: open refuses it (RollbackError) without moving the torn bytes aside or appending
    an ``audit-recover`` line first (docs/format.md 4.8: "Nothing is written then"), however
    often it is tried; ``audit export`` refuses it as well."""
    ks = anchored.open(tmp_path / "ks")
    ks.generate("alice")
    ks.close()
    cut = ks.audit.path.read_bytes()
    ks = anchored.open(ks.directory)
    ks.seal(small_map(), to=["alice"])
    ks.close()
    ks.audit.path.write_bytes(cut + b'{"x')
    before = snapshot(ks.directory)
    for _attempt in range(2):
        with pytest.raises(RollbackError, match="older than its rollback anchor"):
            anchored.open(ks.directory)
        assert snapshot(ks.directory) == before
    with pytest.raises(RollbackError):
        KeyStore.export_audit(ks.directory, backend=anchored.kind)
    assert snapshot(ks.directory) == before


def test_audit_export_checks_the_rollback_anchor(anchored: Anchored, tmp_path: Path) -> None:
    """A folder ``audit verify`` reports ``rolled-back`` is refused by the export too, before a
    line is read: from the start, and continuing from a state saved before the rollback."""
    ks = made(anchored, tmp_path)
    export = KeyStore.export_audit(ks.directory, backend=anchored.kind)
    records = list(export)
    assert records and export.state is not None
    shutil.copytree(ks.directory, tmp_path / "copy")
    ks = anchored.open(ks.directory)
    ks.rotate("alice")
    ks.close()
    restore(tmp_path / "copy", ks.directory)
    report = KeyStore.verify_audit(ks.directory, backend=anchored.kind)
    assert (report.ok, report.kind) == (False, "rolled-back")
    for since in (None, export.state, records[-1].seq):
        with pytest.raises(RollbackError, match="older than its rollback anchor"):
            KeyStore.export_audit(ks.directory, since=since, backend=anchored.kind)


def test_an_anchor_check_that_cannot_read_the_log_is_never_ok(
    anchored: Anchored, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the log verifies but the anchor check cannot read it (``AuditError``: it changed in
    between), ``audit verify`` checks everything once more; if that happens again it reports
    the problem (``rolled-back``), never ``ok``. The export refuses."""
    ks = made(anchored, tmp_path)
    calls = []
    real = AuditLog.hash_at

    def flaky(self: AuditLog, seq: int) -> bytes:
        calls.append(seq)
        if len(calls) == 1 or always:
            raise AuditError(f"audit line {seq} has no valid MAC")
        return real(self, seq)

    monkeypatch.setattr(AuditLog, "hash_at", flaky)
    always = False
    assert KeyStore.verify_audit(ks.directory, backend=anchored.kind).ok and len(calls) == 2
    always = True
    report = KeyStore.verify_audit(ks.directory, backend=anchored.kind)
    assert (report.ok, report.kind) == (False, "rolled-back") and len(calls) == 4
    assert report.detail is not None and "could not be compared" in report.detail
    with pytest.raises(AuditError, match="no valid MAC"):
        KeyStore.export_audit(ks.directory, backend=anchored.kind)


def test_two_copies_in_use_at_once_fork_and_the_second_is_refused(
    anchored: Anchored, tmp_path: Path
) -> None:
    """Both copies pass their open (same state); the one whose anchor write comes second has a
    log without the anchored line, even with more lines: refused then, and at every open."""
    ks = made(anchored, tmp_path)
    shutil.copytree(ks.directory, tmp_path / "twin")
    one, two = anchored.open(ks.directory), anchored.open(tmp_path / "twin")
    one.seal(small_map(), to=["alice"])
    one.close()
    for _ in range(3):
        two.seal(small_map(), to=["alice"])
    with pytest.raises(RollbackError, match="not the one anchored"):
        two.close()  # its checkpoint is the first anchor write of that lineage
    assert anchored.open(ks.directory).identity("alice")
    with pytest.raises(RollbackError):
        anchored.open(tmp_path / "twin")


def test_a_rollback_while_the_store_is_open_is_caught_at_its_next_use(
    anchored: Anchored, tmp_path: Path
) -> None:
    """The folder put back behind an open store's back: its next read of keystore.json sees
    the generation go back, so nothing is sealed to a rolled-back recipient key."""
    ks = made(anchored, tmp_path)
    shutil.copytree(ks.directory, tmp_path / "copy")
    ks = anchored.open(ks.directory)
    ks.recipients.add("bob", recipient_text(), replace_existing=True)  # bob's new key
    restore(tmp_path / "copy", ks.directory)  # bob's old key is back in the folder
    with pytest.raises(RollbackError, match="went back from generation"):
        ks.seal(small_map(), to=["bob"])
    with pytest.raises(RollbackError, match="older than its rollback anchor"):
        anchored.open(ks.directory)


def test_a_change_on_a_folder_put_back_is_refused_by_the_anchor(
    anchored: Anchored, tmp_path: Path
) -> None:
    """A store opened before another process changed the folder has not seen the newer
    generation; if the folder is put back, its change lands there, and its anchor write is
    refused: the log lacks the anchored line."""
    ks = made(anchored, tmp_path)
    shutil.copytree(ks.directory, tmp_path / "copy")
    early = anchored.open(ks.directory)
    other = anchored.open(ks.directory)
    other.rotate("alice")
    restore(tmp_path / "copy", ks.directory)
    with pytest.raises(RollbackError, match=r"not the one anchored|older than"):
        early.generate("mallory")
    with pytest.raises(RollbackError):
        anchored.open(ks.directory)


def test_a_missing_anchor_is_refused_and_a_reset_is_audited(anchored: Anchored,
                                                            tmp_path: Path) -> None:  # fmt: skip
    ks = made(anchored, tmp_path)
    holder = anchored.holder(ks.directory)
    assert holder.delete_anchor() >= 1
    getattr(holder, "close", lambda: None)()
    with pytest.raises(RollbackError, match="there is none"):
        anchored.open(ks.directory)
    reset = anchored.open(ks.directory, reset_anchor=True)
    events = list(reset.audit.events())
    assert events[-1]["action"] == "anchor-reset"
    assert events[-1]["detail"] == "anchor was missing or unreadable"
    assert anchored.anchor(reset.directory) == state(reset)
    reset.close()
    assert anchored.open(ks.directory).audit.verify().ok


def test_a_reset_accepts_a_restored_copy_and_records_the_old_anchor(
    anchored: Anchored, tmp_path: Path
) -> None:
    ks = made(anchored, tmp_path)
    shutil.copytree(ks.directory, tmp_path / "copy")
    ks = anchored.open(ks.directory)
    ks.rotate("alice")
    ks.close()
    old = anchored.anchor(ks.directory)
    restore(tmp_path / "copy", ks.directory)
    reset = anchored.open(ks.directory, reset_anchor=True)
    event = list(reset.audit.events())[-1]
    assert (event["action"], event["detail"]) == ("anchor-reset", f"anchor was {old}")
    assert [v.version for v in reset.identity("alice").versions] == [1]  # the copy's state
    reset.rotate("alice")
    reset.close()
    reopened = anchored.open(ks.directory)
    assert reopened.audit.verify().ok and anchored.anchor(reopened.directory) == state(reopened)


def test_a_failed_anchor_write_keeps_the_commit_and_catches_up(
    anchored: Anchored, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """The token away (or the keyring refusing) after a commit: the commit stands, the problem
    is logged and kept in ``anchor_problem``; the next commit catches the anchor up."""
    ks = made(anchored, tmp_path)
    ks = anchored.open(ks.directory)
    before = anchored.anchor(ks.directory)
    backend = type(ks._secrets.backend)

    def away(self: object, anchor: Anchor) -> None:
        raise TokenUnavailable("the token went away (injected)")

    with monkeypatch.context() as patch, caplog.at_level(logging.WARNING, "pqselfenc"):
        patch.setattr(backend, "write_anchor", away)
        version = ks.rotate("alice")
    assert ks.identity("alice").active == version  # the commit stands
    assert ks.anchor_problem is not None and "injected" in ks.anchor_problem
    assert any("could not be updated" in r.getMessage() for r in caplog.records)
    assert anchored.anchor(ks.directory) == before  # behind the folder
    ks.generate("carol")
    assert ks.anchor_problem is None
    assert anchored.anchor(ks.directory) == state(ks)


def test_the_window_of_a_failed_anchor_write(anchored: Anchored, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Said in threat-model/keys.md: while an anchor write has failed, the folder can be rolled
    back to the last anchored state undetected (and open then anchors that state)."""
    ks = made(anchored, tmp_path)
    shutil.copytree(ks.directory, tmp_path / "copy")
    ks = anchored.open(ks.directory)

    def away(self: object, anchor: Anchor) -> None:
        raise TokenUnavailable("the token went away (injected)")

    with monkeypatch.context() as patch:
        patch.setattr(type(ks._secrets.backend), "write_anchor", away)
        ks.rotate("alice")
        ks.close()
    restore(tmp_path / "copy", ks.directory)
    reopened = anchored.open(ks.directory)
    assert [v.version for v in reopened.identity("alice").versions] == [1]


def test_an_open_catches_up_an_anchor_left_behind(anchored: Anchored, tmp_path: Path) -> None:
    """Events after the last checkpoint (a process that never closed) leave the anchor behind
    the audit head; the next open checks the folder against it, then catches it up."""
    ks = made(anchored, tmp_path)
    ks = anchored.open(ks.directory)
    ks.seal(small_map(), to=["alice"])  # no checkpoint: not anchored yet
    lagging = anchored.anchor(ks.directory)
    assert lagging is not None and lagging.audit_seq < head(ks)[0]
    again = anchored.open(ks.directory)
    assert anchored.anchor(again.directory) == state(again)


def test_the_torn_tail_recovery_checkpoint_is_anchored(anchored: Anchored,
                                                       tmp_path: Path) -> None:  # fmt: skip
    """The gap noted in the ledger: the ``audit-recover`` event appended at open may trigger a
    checkpoint outside ``_settled``; the open anchors the head it leaves."""
    from pqselfenc.keys import KeyConfig

    config = KeyConfig(checkpoint_every=2)
    ks = anchored.open(tmp_path / "ks", config=config)
    ks.generate("alice")
    ks.close()
    with ks.audit.path.open("ab") as fh:
        fh.write(b'{"seq": 99, "torn')
    again = anchored.open(ks.directory, config=config)
    actions = [e["action"] for e in again.audit.events()]
    assert "audit-recover" in actions
    assert anchored.anchor(again.directory) == state(again)


@pytest.mark.keyring
@needs_secret_service
def test_a_store_created_without_an_anchor_is_anchored_at_its_next_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock,
    secret_service: OwnCollection,
) -> None:  # fmt: skip
    """A keyring store of the release before (no anchor, no ``anchor`` field: only keyring
    stores existed then): its first open anchors it and commits ``anchor-start``; its older
    copies are refused from then on."""
    anchored = Anchored("keyring", clock)
    with monkeypatch.context() as patch:
        patch.setattr(_opening, "_anchor_of", lambda secrets: None)
        patch.setattr(_opening, "_with_anchor", lambda meta, secrets: meta)
        ks = anchored.open(tmp_path / "ks")
        ks.generate("alice")
        ks.close()
    assert ks._ledger.read().anchor is None and anchored.anchor(ks.directory) is None
    shutil.copytree(ks.directory, tmp_path / "copy")
    started = anchored.open(ks.directory)
    assert started._ledger.read().anchor == "keyring"
    assert list(started.audit.events())[-1]["action"] == "anchor-start"
    assert anchored.anchor(started.directory) == state(started)
    restore(tmp_path / "copy", ks.directory)
    with pytest.raises(RollbackError):
        anchored.open(ks.directory)


def test_a_new_anchored_store_has_its_anchor_from_before_its_first_file(
    anchored: Anchored, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``GENESIS`` is written before keystore.json: a holder that cannot take it stops the
    creation with nothing left (no keystore.json, no secret, no token key)."""
    ks = anchored.open(tmp_path / "ks")
    assert ks._ledger.read().anchor == ("token" if anchored.kind == "pkcs11" else "keyring")
    assert anchored.anchor(ks.directory) == Anchor(1, *head(ks))
    backend = type(ks._secrets.backend)
    written: list[Anchor] = []
    real = backend.write_anchor

    def refuse_genesis(self: object, anchor: Anchor) -> None:
        written.append(anchor)
        if anchor == GENESIS:
            raise TokenUnavailable("no room in the token (injected)")
        real(self, anchor)  # type: ignore[arg-type]

    monkeypatch.setattr(backend, "write_anchor", refuse_genesis)
    with pytest.raises(TokenUnavailable, match="injected"):
        anchored.open(tmp_path / "new")
    assert written == [GENESIS] and not (tmp_path / "new" / "keystore.json").exists()
    assert not list((tmp_path / "new").rglob("*.p11"))


CONCURRENT = """
    import sys
    from pqselfenc.keys import KeyStore
    from _keys_support import FakeClock, small_map
    path, tag = sys.argv[1], sys.argv[2]
    for i in range(6):
        ks = KeyStore.open(path, backend=KIND, clock=FakeClock(), actor=f"w{tag}")
        try:
            name = f"w{tag}x{i}"
            ks.generate(name)
            ks.seal(small_map(), to=[name])
            ks.rotate(name)
        finally:
            ks.close()
    print("ok")
"""


def test_concurrent_processes_keep_the_anchor_in_step(anchored: Anchored,
                                                      tmp_path: Path) -> None:  # fmt: skip
    """Two processes opening, changing and closing one store at once: every anchor write
    happens under the store lock, so none is refused, and the anchor ends at the folder's."""
    ks = made(anchored, tmp_path)
    procs = [anchored.child(CONCURRENT, str(ks.directory), tag) for tag in "12"]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-3000:] for _, err in outs]
    final = anchored.open(ks.directory)
    assert len(final.identities) == 13 and final.audit.verify().ok
    assert anchored.anchor(final.directory) == state(final)


def test_the_file_backend_has_no_anchor_and_says_so(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """threat-model/keys.md: without a token or keyring nothing outside the folder records its
    state; the library logs it at creation, and a whole-folder rollback still opens."""
    with caplog.at_level(logging.WARNING, "pqselfenc"):
        ks = KeyStore.open(tmp_path / "ks", passphrase=PASSPHRASE, clock=clock)
    assert any("rollback of the whole folder is not detected" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    assert ks.rollback_protection().startswith("no rollback anchor")
    assert ks._ledger.read().anchor is None and ks.token_capabilities() is None
    ks.generate("alice")
    ks.close()
    shutil.copytree(ks.directory, tmp_path / "copy")
    ks.rotate("alice")
    ks.close()
    restore(tmp_path / "copy", ks.directory)
    old = KeyStore.open(ks.directory, passphrase=PASSPHRASE, clock=clock)  # not detected
    assert [v.version for v in old.identity("alice").versions] == [1]


def test_an_anchor_never_moves_back_nor_forks(anchored: Anchored, tmp_path: Path) -> None:
    """The holder's own rule, the same for the token and the keyring entry."""
    ks = anchored.open(tmp_path / "ks")
    holder = ks._secrets.backend
    now = anchored.anchor(ks.directory)
    assert now is not None
    later = Anchor(now.generation + 1, now.audit_seq + 2, hashlib.sha3_256(b"x").digest())
    holder.write_anchor(later)  # type: ignore[attr-defined]
    for bad in (now, Anchor(later.generation, later.audit_seq, bytes(32)),
                Anchor(later.generation + 1, later.audit_seq - 1, bytes(32))):  # fmt: skip
        with pytest.raises(IntegrityError):
            holder.write_anchor(bad)  # type: ignore[attr-defined]
    holder.write_anchor(later)  # type: ignore[attr-defined]  # the same again: nothing
    assert anchored.anchor(ks.directory) == later


def test_events_after_the_last_anchor_of_a_store_never_closed_can_be_cut(
    anchored: Anchored, tmp_path: Path
) -> None:
    """The limit said in threat-model/keys.md: the anchor is written at commits and checkpoints
    (every ``checkpoint_every`` events, and at close). Events a process appended after the last
    one and never closed over can be cut, with nothing outside the folder to remember them."""
    ks = made(anchored, tmp_path)
    ks = anchored.open(ks.directory)
    cut = ks.audit.path.read_bytes()
    ks.seal(small_map(), to=["alice"])  # no checkpoint, no close: not anchored
    ks._secrets.close()  # the process goes away without close()
    ks.audit.path.write_bytes(cut)
    assert anchored.open(ks.directory).audit.verify().ok


WRITER = """
    import sys
    from pqselfenc.keys import KeyStore
    from _keys_support import FakeClock, small_map
    ks = KeyStore.open(sys.argv[1], backend=KIND, clock=FakeClock(), actor="writer")
    for i in range(12):
        ks.generate(f"w{i}")
        ks.seal(small_map(), to=[f"w{i}"])
    ks.close()
    print("ok")
"""


def test_audit_verify_during_writes_raises_no_false_rollback(anchored: Anchored,
                                                             tmp_path: Path) -> None:  # fmt: skip
    """The anchor check of ``audit verify`` and ``audit export`` reads metadata, log head and
    anchor together under the store lock: a writer committing meanwhile is never reported as a
    rollback, nor refused as one."""
    ks = made(anchored, tmp_path)
    writer = anchored.child(WRITER, str(ks.directory))
    reports = []
    while writer.poll() is None:
        reports.append(KeyStore.verify_audit(ks.directory, backend=anchored.kind))
        assert list(KeyStore.export_audit(ks.directory, backend=anchored.kind))  # no refusal
    out, err = writer.communicate(timeout=600)
    assert writer.returncode == 0 and out.strip() == "ok", err[-3000:]
    assert reports and all(r.ok for r in reports), [str(r) for r in reports if not r.ok]
