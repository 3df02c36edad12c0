"""Audit log: every event type, tamper detection on every line, truncation, fail closed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _keys_support import PASSPHRASE, FakeClock, StoreFactory, small_map

from pqselfenc.error import AuditError, DecryptionError
from pqselfenc.kem import SigningKey, generate_identity
from pqselfenc.keys import KeyStore
from pqselfenc.keys._verify import Snapshot, verify_log
from pqselfenc.keys.audit import AuditReport, canonical, chain_hash

FIELDS = {"seq", "time", "actor", "action", "outcome", "name", "key_id", "version",
          "fingerprint", "envelope_id", "detail", "prev", "hash", "mac"}  # fmt: skip


def busy_store(open_store: StoreFactory, clock: FakeClock) -> KeyStore:
    """A store with one of every audited operation, checkpointing every 4 events."""
    ks = open_store(checkpoint_every=4)
    ks.generate("alice")
    ks.recipients.add("bob", str(generate_identity().recipient()))
    sealed = ks.seal(small_map(), to=["alice", "bob"], sign_as="alice")
    ks.open_envelope(sealed)
    clock.advance(days=40)
    ks.rotate_due()
    new = ks.rewrap(sealed)
    ks.destroy("alice", 1)
    ks.open_envelope(new)
    with pytest.raises(DecryptionError):
        ks.open_envelope(ks.seal(small_map(), to=["bob"]))
    ks.export_identity("alice", "quartz-lantern-ripple-meadow-falcon-7")
    ks.recipients.remove("bob")
    ks.close()
    return ks


def test_every_operation_is_recorded_without_key_material(
    open_store: StoreFactory, clock: FakeClock
) -> None:
    ks = busy_store(open_store, clock)
    events = list(ks.audit.events())
    actions = [e["action"] for e in events]
    for action in ("store-create", "generate", "recipient-add", "seal", "open", "rotate",
                   "rewrap", "destroy", "export", "recipient-remove", "checkpoint"):  # fmt: skip
        assert action in actions, action
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    writes = {"store-create", "generate", "recipient-add", "rotate", "destroy", "import",
              "recipient-remove"}  # fmt: skip
    for event in events:
        extra = {"signer", "signature"} if event["action"] == "checkpoint" else set()
        if event["action"] in writes:  # the keystore.json generation each write committed
            extra = {"generation", "meta_mac"}
        assert set(event) == FIELDS | extra
        outcomes = ("success", "failure", "intent") if event["action"] == "destroy" else (
            "success", "failure")  # fmt: skip
        assert event["time"].endswith("Z") and event["outcome"] in outcomes
    recorded = [e["generation"] for e in events if "generation" in e]
    assert recorded == list(range(1, len(recorded) + 1))  # every write, none skipped
    assert recorded[-1] == ks._ledger.read().generation
    assert ("open", "failure") in [(e["action"], e["outcome"]) for e in events]
    gen = next(e for e in events if e["action"] == "generate")
    v1 = ks.identity("alice").version(1)
    assert (gen["name"], gen["version"], gen["key_id"], gen["fingerprint"]) == (
        "alice", 1, v1.key_id, v1.fingerprint,
    )  # fmt: skip
    pair = ks._secrets.pair(ks.identity("alice"), ks.identity("alice").version(2))
    log = ks.audit.path.read_text()
    for secret in (pair.kem.seed_bytes(), pair.signing.seed_bytes(), ks._secret.root):
        assert secret.hex()[:24] not in log
    assert ks.audit.verify().ok


def lines_of(ks: KeyStore) -> list[bytes]:
    return ks.audit.path.read_bytes().splitlines(keepends=True)


def test_tampering_with_any_line_is_detected(open_store: StoreFactory, clock: FakeClock) -> None:
    ks = busy_store(open_store, clock)
    original = lines_of(ks)
    assert ks.audit.verify().ok and len(original) >= 20
    for index, line in enumerate(original):
        obj = json.loads(line)
        obj["actor" if obj["action"] != "checkpoint" else "time"] = "mallory"
        forged = canonical(obj) + b"\n"
        ks.audit.path.write_bytes(b"".join([*original[:index], forged, *original[index + 1 :]]))
        report = ks.audit.verify()
        assert not report.ok and report.kind in ("bad-hash", "malformed"), (index, report)
        assert report.line == index + 1 and report.seq == index + 1
    ks.audit.path.write_bytes(b"".join(original))
    assert ks.audit.verify().ok


def rehash_from(lines: list[bytes], start: int, edit: dict[str, object]) -> list[bytes]:
    """An attacker's rewrite: edit line ``start`` and recompute every hash after it."""
    out = lines[:start]
    prev = bytes.fromhex(json.loads(lines[start - 1])["hash"]) if start else bytes(32)
    for i, raw in enumerate(lines[start:]):
        obj = json.loads(raw)
        if i == 0:
            obj.update(edit)
        body = {k: v for k, v in obj.items() if k not in ("prev", "hash", "mac")}
        obj["prev"], obj["hash"] = prev.hex(), chain_hash(prev, body).hex()
        prev = bytes.fromhex(obj["hash"])
        out.append(canonical(obj) + b"\n")
    return out


def test_a_rehashed_chain_fails_at_its_first_line_and_at_the_next_signed_checkpoint(
    open_store: StoreFactory, clock: FakeClock
) -> None:
    """Re-hashing needs no key, but the line MAC does: the owner's verify stops at the first
    rewritten line; a third party with only the public audit key (no MAC key) still stops at
    the next signed checkpoint."""
    ks = busy_store(open_store, clock)
    lines = lines_of(ks)
    target = next(i for i, raw in enumerate(lines) if json.loads(raw)["action"] == "destroy")
    ks.audit.path.write_bytes(b"".join(rehash_from(lines, target, {"name": "bob"})))
    report = ks.audit.verify()
    assert not report.ok and (report.kind, report.seq) == ("bad-mac", target + 1)
    public = third_party_verify(ks)
    assert not public.ok and public.kind == "bad-signature"
    assert public.seq is not None and public.seq > target + 1  # the first checkpoint after it


def third_party_verify(ks: KeyStore) -> AuditReport:
    """What someone holding only the store's public audit key can check (no MACs)."""
    snapshot = Snapshot(ks.audit.path.read_bytes(), ks.audit.checkpoint_path.read_bytes(),
                        None, None)  # fmt: skip
    return verify_log(snapshot, ks._secret.audit_key.verifying_key(), None)


def test_link_reorder_and_deletion_are_reported(open_store: StoreFactory, clock: FakeClock) -> None:
    ks = busy_store(open_store, clock)
    lines = lines_of(ks)
    ks.audit.path.write_bytes(b"".join(lines[:5] + lines[6:]))  # one line deleted
    report = ks.audit.verify()
    assert (report.kind, report.line) == ("sequence", 6)
    swapped = [*lines[:5], lines[6], lines[5], *lines[7:]]
    ks.audit.path.write_bytes(b"".join(swapped))
    assert ks.audit.verify().kind == "sequence"
    obj = json.loads(lines[5])
    obj["prev"] = "00" * 32
    ks.audit.path.write_bytes(b"".join([*lines[:5], canonical(obj) + b"\n", *lines[6:]]))
    assert (ks.audit.verify().kind, ks.audit.verify().line) == ("broken-link", 6)
    ks.audit.path.write_bytes(b"".join([*lines[:5], b"not json\n", *lines[6:]]))
    assert ks.audit.verify().kind == "malformed"


def test_truncation_against_the_last_checkpoint(open_store: StoreFactory, clock: FakeClock) -> None:
    ks = busy_store(open_store, clock)
    lines = lines_of(ks)
    saved = json.loads(ks.audit.checkpoint_path.read_bytes())
    assert saved["seq"] == len(lines)  # close() checkpointed the head
    ks.audit.path.write_bytes(b"".join(lines[:-3]))
    report = ks.audit.verify()
    assert not report.ok and report.kind == "truncated"
    assert f"covers seq {saved['seq']}" in (report.detail or "")
    ks.audit.path.write_bytes(b"")
    assert ks.audit.verify().kind == "truncated"
    ks.audit.path.write_bytes(b"".join(lines))
    ks.audit.checkpoint_path.unlink()
    assert ks.audit.verify().kind == "truncated"  # checkpoint lines exist but the file is gone


def test_checkpoint_by_another_key_is_a_bad_signature(
    open_store: StoreFactory, clock: FakeClock
) -> None:
    ks = busy_store(open_store, clock)
    stranger = SigningKey.generate().verifying_key()
    report = ks.audit.verify(trusted_key=stranger)
    assert not report.ok and report.kind == "bad-signature"
    lines = lines_of(ks)
    index = next(i for i, raw in enumerate(lines) if json.loads(raw)["action"] == "checkpoint")
    obj = json.loads(lines[index])
    obj["signature"] = obj["signature"][:-8] + ("A" * 8 if obj["signature"][-8] != "A" else "B" * 8)
    body = {k: v for k, v in obj.items() if k not in ("prev", "hash", "mac")}
    obj["hash"] = chain_hash(bytes.fromhex(obj["prev"]), body).hex()
    tampered = rehash_from([*lines[:index], canonical(obj) + b"\n", *lines[index + 1 :]], index, {})
    ks.audit.path.write_bytes(b"".join(tampered))
    report = third_party_verify(ks)  # the owner's verify stops earlier, at the line's MAC
    assert (report.kind, report.line) == ("bad-signature", index + 1)
    assert (ks.audit.verify().kind, ks.audit.verify().line) == ("bad-mac", index + 1)


def test_audit_write_failure_fails_the_operation(open_store: StoreFactory, tmp_path: Path) -> None:
    ks = open_store()
    ks.generate("alice")
    sealed = ks.seal(small_map(), to=["alice"])
    log = ks.audit.path
    saved = log.read_bytes()
    log.unlink()
    log.mkdir()  # appends now fail with EISDIR (root ignores permission bits)
    with pytest.raises(AuditError):
        ks.generate("bob")
    with pytest.raises(AuditError):
        ks.open_envelope(sealed)  # no data map without its audit event
    with pytest.raises(AuditError):
        ks.seal(small_map(), to=["alice"])
    with pytest.raises(AuditError):
        ks.destroy("alice", 1)
    log.rmdir()
    log.write_bytes(saved)
    assert "bob" not in ks.identities
    assert ks.identity("alice").version(1).usable  # destroy did not happen
    assert ks.open_envelope(sealed).to_bytes() == small_map().to_bytes()
    assert KeyStore.open(ks.directory, config=ks.config, passphrase=PASSPHRASE).audit.verify().ok


def test_a_tampered_last_line_blocks_appends(open_store: StoreFactory) -> None:
    ks = open_store()
    ks.generate("alice")
    data = ks.audit.path.read_bytes()
    ks.audit.path.write_bytes(data[:-40] + b"garbage}\n")
    with pytest.raises(AuditError, match="malformed"):
        ks.rotate("alice")
    assert ks.identity("alice").latest == 1


# -- strict JSON: what an insider can write into the log fails with our errors -----------------

STRICT_REFUSED = {
    "duplicate-key": b'{"seq": 1, "seq": 2}',
    "infinity": b'{"seq": Infinity}',
    "deep-in-a-field": b'{"detail": ' + b"[" * 40 + b"]" * 40 + b"}",
    "not-an-object": b"[1, 2, 3]",
    "utf-16": '{"seq": 1}'.encode("utf-16"),
}


@pytest.mark.parametrize("raw", STRICT_REFUSED.values(), ids=STRICT_REFUSED.keys())
def test_lines_that_are_not_strict_json_objects_are_malformed(
    open_store: StoreFactory, raw: bytes
) -> None:
    ks = open_store()
    ks.generate("alice")
    with ks.audit.path.open("ab") as fh:
        fh.write(raw + b"\n")
    report = ks.audit.verify()
    assert not report.ok and report.kind == "malformed"
    with pytest.raises(AuditError, match=f"audit line {report.line} does not parse"):
        list(ks.audit.events())
    with pytest.raises(AuditError, match="malformed"):
        ks.generate("bob")  # fail closed: nothing is chained onto it
    with pytest.raises(AuditError, match="malformed"):
        ks.close()  # the closing checkpoint reads the last line too


def test_a_duplicate_key_cannot_hide_a_field_from_verify(open_store: StoreFactory) -> None:
    """Two readers of ``{"name": "alice", ..., "name": "mallory"}`` could disagree on the name;
    the line is refused whole, even when its hash matches one reading of it."""
    ks = open_store()
    ks.generate("alice")
    lines = ks.audit.path.read_bytes().splitlines(keepends=True)
    last = lines[-1].rstrip(b"\n")
    assert b'"name":"alice"' in last
    lines[-1] = last[:-1] + b',"name":"alice"}\n'  # same value twice: the hash still matches
    ks.audit.path.write_bytes(b"".join(lines))
    report = ks.audit.verify()
    assert (report.kind, report.line) == ("malformed", len(lines))


def test_an_overlong_line_stops_events(open_store: StoreFactory) -> None:
    ks = open_store()
    ks.generate("alice")
    with ks.audit.path.open("ab") as fh:
        fh.write(b'{"detail": "' + b"x" * (1 << 20) + b'"}\n')
    events = ks.audit.events()
    assert [e["action"] for e in (next(events), next(events))] == ["store-create", "generate"]
    with pytest.raises(AuditError, match="longer than 1 MiB"):
        list(events)


def test_a_line_longer_than_64_kib_does_not_block_the_next_append(
    open_store: StoreFactory,
) -> None:
    """A seal to ~1000 recipients writes a ~90 KiB line (their names); the release before read
    only the last 64 KiB for the head and refused every later append. Lines are bounded by
    1 MiB, and so is the read of the last one."""
    ks = open_store()
    names = ",".join(f"recipient-{i:05d}-with-a-long-name-{'x' * 40}" for i in range(1200))
    assert len(names) > 64 * 1024
    ks.audit.record("seal", name=names)
    ks.generate("alice")
    ks.close()
    assert ks.audit.verify().ok
    assert list(ks.audit.events())[-3]["name"] == names
