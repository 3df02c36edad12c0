"""The audit log against an attacker who can write the key store directory but holds neither the
root secret nor the passphrase (issue 11 items 2 and 3; docs/format.md 4.5-4.6).

Every line carries a MAC keyed from the root secret; nothing is appended after a line whose MAC
does not verify; every metadata commit event carries the committed file's MAC (``meta_mac``)
and ``open`` binds keystore.json to the last one; ``verify`` checks the counters only grow. A
store written by the release before (``tests/fixtures/keystore-85d9cf1``, made with that
release's code) opens and is upgraded.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from _keys_support import PASSPHRASE, FakeClock, StoreFactory, rechain, small_map

from pqselfenc import DataMap
from pqselfenc.error import AuditError, IntegrityError, KeyDestroyedError, KeyStoreError
from pqselfenc.kem import generate_identity
from pqselfenc.keys import KeyState, KeyStore
from pqselfenc.keys import _metadata as M
from pqselfenc.keys.audit import canonical, chain_hash

FIXTURE = Path(__file__).parent / "fixtures" / "keystore-85d9cf1"


def reopen(ks: KeyStore) -> KeyStore:
    return KeyStore.open(ks.directory, config=ks.config, passphrase=PASSPHRASE)


def lines(ks: KeyStore) -> list[bytes]:
    return ks.audit.path.read_bytes().splitlines(keepends=True)


def forged_line(after: bytes, **fields: Any) -> bytes:
    """What an attacker can write: a well-formed event chained (self-hashed) onto ``after``."""
    last = json.loads(after)
    body = {"seq": last["seq"] + 1, "time": last["time"], "actor": "mallory", "action": "seal",
            "outcome": "success", "name": None, "key_id": None, "version": None,
            "fingerprint": None, "envelope_id": None, "detail": None, **fields}  # fmt: skip
    prev = bytes.fromhex(last["hash"])
    return canonical(dict(body, prev=prev.hex(), hash=chain_hash(prev, body).hex())) + b"\n"


def unchanged(ks: KeyStore) -> tuple[bytes, ...]:
    names = ("audit.jsonl", "audit.checkpoint", "keystore.json")
    return tuple((ks.directory / n).read_bytes() for n in names)


# -- issue 11 item 2: rollback + one forged line ---------------------------------------------------


@pytest.mark.parametrize("mac", [None, "00" * 32, "copied"])
def test_rollback_with_one_forged_audit_line_is_refused(
    open_store: StoreFactory, mac: str | None
) -> None:
    """The attack of issue 11 item 2: an old, validly MACed keystore.json (bob's replaced key)
    put back, and one self-hashed event carrying its generation appended (without a MAC, with
    a made-up one, or with the MAC of the line before). On the release before, open and verify
    passed and the next checkpoint signed the forged line; now open refuses, nothing written."""
    ks = open_store()
    ks.generate("alice")
    old_key = str(generate_identity().recipient())
    ks.recipients.add("bob", old_key)
    path = ks.directory / "keystore.json"
    rolled_back = path.read_bytes()
    ks.recipients.add("bob", str(generate_identity().recipient()), replace_existing=True)
    ks.close()
    path.write_bytes(rolled_back)
    last = lines(ks)[-1]
    forged = forged_line(last, generation=json.loads(rolled_back)["generation"])
    if mac is not None:
        value = json.loads(last)["mac"] if mac == "copied" else mac
        forged = canonical(dict(json.loads(forged), mac=value)) + b"\n"
    with ks.audit.path.open("ab") as fh:
        fh.write(forged)
    before = unchanged(ks)
    with pytest.raises(AuditError, match="no valid MAC"):
        reopen(ks)
    report = ks.audit.verify()
    assert not report.ok and (report.kind, report.seq) == ("bad-mac", len(lines(ks)))
    assert unchanged(ks) == before
    ks.audit.path.write_bytes(b"".join(lines(ks)[:-1]))  # the forged line alone removed
    with pytest.raises(IntegrityError, match="older than generation"):
        reopen(ks)  # the rollback alone: the last commit event names a newer file


def test_a_forged_line_is_never_extended_nor_signed(open_store: StoreFactory) -> None:
    """Fail closed before appending: with a forged last line, every operation that would append
    (seal, open, a checkpoint on close) refuses, so no MAC and no signature ever covers it."""
    ks = open_store(checkpoint_every=2)
    ks.generate("alice")
    sealed = ks.seal(small_map(), to=["alice"])
    with ks.audit.path.open("ab") as fh:
        fh.write(forged_line(lines(ks)[-1]))
    log = ks.audit.path.read_bytes()
    for step in (lambda: ks.seal(small_map(), to=["alice"]), lambda: ks.open_envelope(sealed),
                 ks.close, lambda: ks.rotate("alice")):  # fmt: skip
        with pytest.raises(AuditError, match="no valid MAC"):
            step()
    assert ks.audit.path.read_bytes() == log
    assert ks.identity("alice").latest == 1  # the rotation committed nothing


def test_every_line_from_audit_mac_from_needs_its_mac(open_store: StoreFactory) -> None:
    """The hash does not cover ``mac``, so stripping or swapping MACs keeps the chain intact:
    verify still requires each line's own MAC, and the head must carry one to be extended."""
    ks = open_store()
    ks.generate("alice")
    ks.recipients.add("bob", str(generate_identity().recipient()))
    original = lines(ks)
    for index in range(len(original)):
        obj = json.loads(original[index])
        del obj["mac"]
        edited = [*original[:index], canonical(obj) + b"\n", *original[index + 1 :]]
        ks.audit.path.write_bytes(b"".join(edited))
        report = ks.audit.verify()
        assert (report.kind, report.seq) == ("bad-mac", index + 1), report
    swapped = json.loads(original[-1]) | {"mac": json.loads(original[-2])["mac"]}
    ks.audit.path.write_bytes(b"".join([*original[:-1], canonical(swapped) + b"\n"]))
    with pytest.raises(AuditError, match="no valid MAC"):
        ks.generate("carol")
    ks.audit.path.write_bytes(b"".join(original))
    assert ks.audit.verify().ok


def test_a_stale_staged_file_is_never_rolled_forward(open_store: StoreFactory) -> None:
    """NOTES.md's narrow case: a genuine (MACed) next generation left staged by an operation
    whose event never landed, kept by an attacker, then put back with a one-step rollback of
    keystore.json. Its generation matches the log's last commit, but its MAC does not."""
    ks = open_store()
    ks.generate("alice")
    path = ks.directory / "keystore.json"
    before = path.read_bytes()
    meta = M.from_json(before, ks._secret.metadata_mac_key())
    mallory = generate_identity()
    failed = meta.with_recipients({"mallory": M.RecipientEntry(
        "mallory", "x-wing", str(mallory.recipient()), mallory.key_id.hex(),
        mallory.fingerprint, meta.created)})  # fmt: skip
    staged = ks.directory / "keystore.json.staged"
    M.write_metadata(staged, failed, ks._secret.metadata_mac_key())  # the failed write's file
    stale = staged.read_bytes()
    staged.unlink()
    ks.recipients.add("bob", str(generate_identity().recipient()))  # the real generation 3
    path.write_bytes(before)
    staged.write_bytes(stale)
    with pytest.raises(IntegrityError, match="older than generation 3"):
        reopen(ks)
    assert staged.read_bytes() == stale and path.read_bytes() == before  # nothing rolled forward


# -- issue 11 item 3: truncation ---------------------------------------------------------------


def test_truncation_back_to_an_older_checkpoint_is_caught(
    open_store: StoreFactory, clock: FakeClock
) -> None:
    """Issue 11 item 3: cut audit.jsonl right after an earlier checkpoint and copy that line
    into audit.checkpoint. On the release before, verify said "ok", with a checkpoint and a
    destroy gone. The cut removes metadata commits, so keystore.json is newer than the log."""
    ks = open_store(checkpoint_every=4)
    ks.generate("alice")
    ks.seal(small_map(), to=["alice"])
    ks.close()
    cut = len(lines(ks))
    clock.advance(days=1)
    ks.rotate("alice")
    ks.destroy("alice", 1)
    ks.seal(small_map(), to=["alice"])
    ks.close()
    original = lines(ks)
    assert json.loads(original[cut - 1])["action"] == "checkpoint"
    assert "destroy" in [json.loads(x)["action"] for x in original[cut:]]
    ks.audit.path.write_bytes(b"".join(original[:cut]))
    ks.audit.checkpoint_path.write_bytes(original[cut - 1])
    report = ks.audit.verify()
    assert not report.ok and report.kind == "metadata-mismatch"
    assert "newer than generation" in (report.detail or "")
    with pytest.raises(IntegrityError, match=r"newer than generation .* truncated"):
        reopen(ks)


def test_the_remaining_gap_is_the_tail_after_the_last_commit(
    open_store: StoreFactory,
) -> None:
    """What is NOT caught from inside the directory (threat-model/keys.md, "the honest gap"):
    cutting only events after the last metadata commit (seals, opens, checkpoints), together
    with audit.checkpoint. Only an anchor outside the directory (issue 15) can catch it."""
    ks = open_store(checkpoint_every=3)
    ks.generate("alice")
    ks.close()
    cut = len(lines(ks))
    saved = ks.audit.checkpoint_path.read_bytes()
    for _ in range(4):
        ks.seal(small_map(), to=["alice"])
    ks.close()
    ks.audit.path.write_bytes(b"".join(lines(ks)[:cut]))
    ks.audit.checkpoint_path.write_bytes(saved)
    assert ks.audit.verify().ok  # undetectable: the events are gone
    reopened = reopen(ks)
    reopened.seal(small_map(), to=["alice"])  # and the store carries on from the cut
    assert reopened.audit.verify().ok


def test_deleting_the_whole_log_is_caught(open_store: StoreFactory) -> None:
    """The release before called an empty log (log and checkpoint deleted) valid; now only a
    store at generation 1 (nothing in it yet) may have a log without a commit event."""
    ks = open_store()
    ks.generate("alice")
    ks.close()
    ks.audit.path.unlink()
    ks.audit.checkpoint_path.unlink()
    report = ks.audit.verify()
    assert (report.ok, report.kind) == (False, "metadata-mismatch")
    with pytest.raises(IntegrityError, match="lacks the event"):
        reopen(ks)


def test_a_missing_keystore_json_never_makes_a_new_store_over_the_old(
    open_store: StoreFactory,
) -> None:
    """Deleting keystore.json used to make the next open create a new store in the same folder,
    replacing the old store's secret (convergence secrets, audit key) for good."""
    ks = open_store()
    ks.generate("alice")
    secret = (ks.directory / "secrets" / "_store.v1.key").read_bytes()
    (ks.directory / "keystore.json").unlink()
    with pytest.raises(KeyStoreError, match="a key store was here"):
        reopen(ks)
    assert (ks.directory / "secrets" / "_store.v1.key").read_bytes() == secret


# -- verify: counters that only grow ------------------------------------------------------------


def resigned(ks: KeyStore, events: list[dict[str, Any]]) -> None:
    """Write ``events`` re-hashed and re-MACed with the store's own key (what only the key's
    holder can do), without checkpoints: verify's order checks are all that is left to fail."""
    kept = [e for e in events if e["action"] != "checkpoint"]
    for seq, event in enumerate(kept, 1):
        event["seq"] = seq
    ks.audit.path.write_bytes(rechain(kept, ks._secret.audit_mac_key()))
    ks.audit.checkpoint_path.unlink(missing_ok=True)


def test_verify_checks_generations_grow_by_one(open_store: StoreFactory) -> None:
    ks = open_store(checkpoint_every=1000)
    ks.generate("alice")
    ks.generate("bob")
    events = list(ks.audit.events())
    commits = [e for e in events if "generation" in e]
    assert [e["generation"] for e in commits] == [1, 2, 3]
    commits[1]["generation"] = 5  # a jump (even re-MACed by the key's holder)
    resigned(ks, events)
    report = ks.audit.verify()
    assert (report.kind, report.seq) == ("generation", commits[1]["seq"])
    commits[1]["generation"], commits[2]["generation"] = 3, 2  # going back
    resigned(ks, events)
    assert ks.audit.verify().kind == "generation"


def test_verify_checks_time_never_steps_back_more_than_ten_minutes(
    open_store: StoreFactory, clock: FakeClock
) -> None:
    ks = open_store(checkpoint_every=1000)
    ks.generate("alice")
    clock.advance(hours=1)
    ks.seal(small_map(), to=["alice"])
    events = list(ks.audit.events())
    before = M.parse_time(events[-2]["time"])
    events[-1]["time"] = M.fmt_time(before - timedelta(minutes=9, seconds=59))
    resigned(ks, events)
    assert ks.audit.verify().ok  # a clock stepped back by 9m59s: tolerated (NTP)
    events[-1]["time"] = M.fmt_time(before - timedelta(minutes=10, seconds=1))
    resigned(ks, events)
    report = ks.audit.verify()
    assert (report.kind, report.seq) == ("time-order", len(events))


# -- the head API a rollback anchor uses --------------------------------------------------------


def test_head_and_hash_at_are_authenticated(open_store: StoreFactory) -> None:
    ks = open_store(checkpoint_every=3)
    ks.generate("alice")
    ks.seal(small_map(), to=["alice"])
    seq, digest = ks.audit.head()
    all_lines = [json.loads(x) for x in lines(ks)]
    assert (seq, digest.hex()) == (all_lines[-1]["seq"], all_lines[-1]["hash"])
    assert [ks.audit.hash_at(i + 1).hex() for i in range(seq)] == [x["hash"] for x in all_lines]
    with pytest.raises(AuditError, match="no line 99"):
        ks.audit.hash_at(99)
    with ks.audit.path.open("ab") as fh:
        fh.write(forged_line(lines(ks)[-1]))
    with pytest.raises(AuditError, match="no valid MAC"):
        ks.audit.head()
    with pytest.raises(AuditError, match="no valid MAC"):
        ks.audit.hash_at(seq + 1)
    assert ks.audit.hash_at(seq) == digest  # the lines before are still authentic


# -- a store of the release before ----------------------------------------------------------------


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    """A copy of the store the release before wrote (format 1, no MACs), with its modes."""
    directory = tmp_path / "legacy"
    shutil.copytree(FIXTURE / "store", directory)
    for path in [directory, *directory.rglob("*")]:
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
    return directory


def test_a_store_of_the_release_before_opens_and_is_upgraded(legacy: Path) -> None:
    before = legacy.joinpath("audit.jsonl").read_bytes()
    assert b'"mac"' not in before and json.loads(legacy.joinpath("keystore.json").read_bytes())[
        "version"] == 1  # fmt: skip
    ks = KeyStore.open(legacy, passphrase=PASSPHRASE)
    events = list(ks.audit.events())
    upgrade = events[len(before.splitlines())]
    assert (upgrade["action"], upgrade["generation"], upgrade["seq"]) == ("audit-upgrade", 8, 13)
    doc = json.loads(legacy.joinpath("keystore.json").read_bytes())
    assert (doc["version"], doc["audit_mac_from"], doc["generation"]) == (2, 13, 8)
    assert ks.audit.path.read_bytes().startswith(before)  # the old lines are kept as they are
    assert ks.audit.verify().ok
    data_map = DataMap.from_bytes(FIXTURE.joinpath("map.bin").read_bytes())
    sealed = FIXTURE.joinpath("sealed-v1.bin").read_bytes()
    assert ks.open_envelope(sealed, signer="alice").to_bytes() == data_map.to_bytes()
    with pytest.raises(KeyDestroyedError, match="no usable version"):  # dave: destroyed
        ks.open_envelope(FIXTURE.joinpath("sealed-v2.bin").read_bytes(), signer="dave")
    ks.generate("frank")
    ks.close()
    assert all("mac" in e for e in list(ks.audit.events())[12:])
    assert KeyStore.open(legacy, passphrase=PASSPHRASE).audit.verify().ok


def test_an_upgraded_store_refuses_its_pre_upgrade_keystore_json(legacy: Path) -> None:
    """After the upgrade, the format 1 keystore.json (a backup from before) is a rollback, even
    with an unMACed, legacy-looking commit event appended to excuse it."""
    old = legacy.joinpath("keystore.json").read_bytes()
    ks = KeyStore.open(legacy, passphrase=PASSPHRASE)
    ks.generate("frank")
    ks.close()
    legacy.joinpath("keystore.json").write_bytes(old)
    with pytest.raises(IntegrityError, match="older than generation"):
        KeyStore.open(legacy, passphrase=PASSPHRASE)
    stripped = [json.loads(x) for x in lines(ks)]
    for line in stripped:
        line.pop("mac", None)  # the MACs are not hashed: an attacker can strip them all
    log = b"".join(canonical(x) + b"\n" for x in stripped)
    ks.audit.path.write_bytes(log + forged_line(log.splitlines()[-1], generation=7))
    with pytest.raises(AuditError):
        KeyStore.open(legacy, passphrase=PASSPHRASE)  # the upgrade verifies first: refused


def test_a_tampered_log_of_the_release_before_is_not_sealed_by_the_upgrade(legacy: Path) -> None:
    log = legacy.joinpath("audit.jsonl")
    events = [json.loads(x) for x in log.read_bytes().splitlines()]
    events[9]["name"] = "carol"  # the destroy of dave, rewritten and re-hashed (no key needed)
    log.write_bytes(rechain(events, None))
    before = log.read_bytes()
    with pytest.raises(AuditError, match="does not verify"):
        KeyStore.open(legacy, passphrase=PASSPHRASE)
    assert log.read_bytes() == before  # nothing was appended to it


def test_an_upgrade_cut_short_is_finished_at_the_next_open(
    legacy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed between the upgrade's event and the rename: keystore.json is still format 1, the
    staged file is format 2 and matches the event's meta_mac, so the next open rolls it
    forward (and does not upgrade twice)."""

    def crash(staged: Path, path: Path) -> None:
        raise KeyStoreError("killed before the rename (injected)")

    with monkeypatch.context() as patch:
        patch.setattr(M, "commit_staged", crash)
        with pytest.raises(KeyStoreError, match="injected"):
            KeyStore.open(legacy, passphrase=PASSPHRASE)
    assert legacy.joinpath("keystore.json.staged").exists()
    ks = KeyStore.open(legacy, passphrase=PASSPHRASE)
    actions = [e["action"] for e in ks.audit.events()]
    assert actions.count("audit-upgrade") == 1 and ks.audit.verify().ok
    assert json.loads(legacy.joinpath("keystore.json").read_bytes())["version"] == 2


def test_destroyed_versions_of_the_release_before_stay_destroyed(legacy: Path) -> None:
    """dave v1 was destroyed by the release before (its secret deleted): it stays destroyed,
    re-opening adds no destroy event, and what only it could open stays unopenable."""
    ks = KeyStore.open(legacy, passphrase=PASSPHRASE)
    assert ks.identity("dave").version(1).state is KeyState.DESTROYED
    again = KeyStore.open(legacy, passphrase=PASSPHRASE)
    assert [e["action"] for e in again.audit.events()].count("destroy") == 1
    with pytest.raises(KeyDestroyedError, match="no usable version"):  # not a ValueError
        again.open_envelope(FIXTURE.joinpath("sealed-v2.bin").read_bytes(), signer="dave")


def test_a_damaged_log_is_reported_by_verify_audit_and_diagnosed_by_open(
    open_store: StoreFactory,
) -> None:
    """An edit early in the log moves every later line, so every later MAC fails too: open
    refuses (nothing written) and says where the log first goes wrong; ``verify_audit`` (what
    ``pqselfenc audit verify`` runs) reports it without opening the store for use."""
    ks = open_store()
    ks.generate("alice")
    ks.recipients.add("bob", str(generate_identity().recipient()))
    ks.close()
    original = lines(ks)
    edited = json.loads(original[1]) | {"actor": "someone-else-entirely"}
    ks.audit.path.write_bytes(b"".join([original[0], canonical(edited) + b"\n", *original[2:]]))
    before = unchanged(ks)
    with pytest.raises(AuditError, match=r"audit verify: audit log broken \(bad-hash\) at line 2"):
        reopen(ks)
    report = KeyStore.verify_audit(ks.directory, passphrase=PASSPHRASE)
    assert (report.ok, report.kind, report.line) == (False, "bad-hash", 2)
    assert unchanged(ks) == before


def test_verify_audit_never_upgrades_nor_recovers(legacy: Path) -> None:
    before = {p.name: p.read_bytes() for p in legacy.iterdir() if p.is_file()}
    with legacy.joinpath("audit.jsonl").open("ab") as fh:
        fh.write(b'{"torn": ')  # a crash mid-append
    report = KeyStore.verify_audit(legacy, passphrase=PASSPHRASE)
    assert (report.ok, report.kind) == (False, "torn-tail")
    after = {p.name: p.read_bytes() for p in legacy.iterdir() if p.is_file()}
    after["audit.jsonl"] = after["audit.jsonl"][: -len(b'{"torn": ')]
    assert {k: v for k, v in after.items() if k != "keystore.lock"} == {
        k: v for k, v in before.items() if k != "keystore.lock"}  # fmt: skip
