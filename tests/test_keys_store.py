"""KeyStore life cycle: generate, rotate on a schedule, seal/open, rewrap, destroy, recipients."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from _keys_support import PASSPHRASE, FakeClock, StoreFactory, rechain, small_map

from pqselfenc import MemoryChunkStore, SelfEncryptor
from pqselfenc.error import (
    DecryptionError,
    IntegrityError,
    InvalidDataError,
    KeyDestroyedError,
    KeyNotFound,
    KeyStoreError,
    SignatureError,
    WeakSecretError,
)
from pqselfenc.kem import SigningKey, generate_identity, inspect, open_sealed
from pqselfenc.keys import KeyConfig, KeyState, KeyStore
from pqselfenc.keys import _metadata as M


def test_generate_makes_version_one_active(open_store: StoreFactory, clock: FakeClock) -> None:
    ks = open_store()
    v = ks.generate("alice")
    assert (v.version, v.state, v.created) == (1, KeyState.ACTIVE, clock.now)
    ident = ks.identity("alice")
    assert ident.suite == "x-wing" and ident.signature == "ml-dsa-65"
    assert ident.active == v
    with pytest.raises(KeyStoreError, match="already exists"):
        ks.generate("alice")


def test_rotation_is_due_on_the_injected_clock(open_store: StoreFactory, clock: FakeClock) -> None:
    ks = open_store()
    ks.generate("alice")
    clock.advance(days=10)
    ks.generate("bob")
    clock.advance(days=19, hours=23)
    assert ks.due() == []  # alice is 29d23h old
    clock.advance(hours=1)
    due = ks.due()
    assert [(d.name, d.version) for d in due] == [("alice", 1)]
    assert due[0].due_at == due[0].created + timedelta(days=30)
    rotated = ks.rotate_due()
    assert [(v.version, v.state) for v in rotated] == [(2, KeyState.ACTIVE)]
    alice = ks.identity("alice")
    old = alice.version(1)
    assert old.state is KeyState.DECRYPT_ONLY and old.retired == clock.now
    assert ks.due() == []
    clock.advance(days=10)
    assert [d.name for d in ks.due()] == ["bob"]


def test_seal_open_with_signature_and_recipients(tmp_path: Path, open_store: StoreFactory) -> None:
    ks = open_store()
    ks.generate("alice")
    bob = generate_identity("x-wing")
    bob_sig = SigningKey.generate("ml-dsa-65")
    entry = ks.recipients.add(
        "bob", str(bob.recipient()), verifying_key=str(bob_sig.verifying_key())
    )
    assert entry.key_id == bob.key_id.hex() and entry.fingerprint == bob.fingerprint
    data_map = small_map()
    sealed = ks.seal(data_map, to=["alice", "bob"], sign_as="alice")
    info = inspect(sealed)
    alice = ks.identity("alice").active
    assert alice is not None
    assert [k.hex() for k in info.recipients] == [alice.key_id, bob.key_id.hex()]
    assert ks.open_envelope(sealed, signer="alice").to_bytes() == data_map.to_bytes()
    assert open_sealed(sealed, [bob]).to_bytes() == data_map.to_bytes()  # bob opens it too
    with pytest.raises(SignatureError):
        ks.open_envelope(sealed, signer="bob")  # signed by alice, not bob
    unsigned = ks.seal(data_map, to=["alice"])
    with pytest.raises(SignatureError):
        ks.open_envelope(unsigned, signer="alice")
    ks.rotate("alice")
    opened = ks.open_envelope(sealed, signer="alice")
    assert opened.to_bytes() == data_map.to_bytes()  # v1 still usable
    ks.recipients.add("carol", str(generate_identity().recipient()))
    signed_v2 = ks.seal(data_map, to=["bob"], sign_as="alice")
    ks.destroy("alice", 1)
    assert (
        open_sealed(signed_v2, [bob], ks.verifying_keys("alice")).to_bytes() == data_map.to_bytes()
    )
    assert len(ks.verifying_keys("alice")) == 1  # a destroyed version's signatures: refused
    with pytest.raises(KeyNotFound):
        ks.verifying_keys("carol")  # carol gave no verifying key


def test_not_for_us_is_the_uniform_decryption_error(open_store: StoreFactory) -> None:
    ks = open_store()
    ks.generate("alice")
    other = generate_identity()
    ks.recipients.add("carol", str(other.recipient()))
    sealed = ks.seal(small_map(), to=["carol"])
    with pytest.raises(DecryptionError):
        ks.open_envelope(sealed)
    with pytest.raises(InvalidDataError):
        ks.open_envelope(b"not an envelope")
    failures = [e for e in ks.audit.events() if e["outcome"] == "failure"]
    assert [(e["action"], e["detail"]) for e in failures] == [
        ("open", "DecryptionError"),
        ("open", "InvalidDataError"),
    ]


def test_rewrap_then_destroy_old_version(open_store: StoreFactory, clock: FakeClock) -> None:
    ks = open_store()
    ks.generate("alice")
    bob = generate_identity()
    ks.recipients.add("bob", str(bob.recipient()))
    data_map = small_map()
    sealed = ks.seal(data_map, to=["alice", "bob"], sign_as="alice")
    clock.advance(days=31)
    ks.rotate_due()
    new = ks.rewrap(sealed)
    old_info, new_info = inspect(sealed), inspect(new)
    assert new_info.envelope_id != old_info.envelope_id
    v2 = ks.identity("alice").version(2)
    assert [k.hex() for k in new_info.recipients] == [v2.key_id, bob.key_id.hex()]
    assert new_info.signer is not None and str(new_info.signer) == v2.verifying_key
    destroyed = ks.destroy("alice", version=1)
    assert destroyed.state is KeyState.DESTROYED and destroyed.destroyed == clock.now
    with pytest.raises(KeyDestroyedError):
        ks.open_envelope(sealed)
    assert ks.open_envelope(new, signer="alice").to_bytes() == data_map.to_bytes()
    assert open_sealed(new, [bob]).to_bytes() == data_map.to_bytes()
    assert data_map.to_bytes() == ks.open_envelope(new).to_bytes()  # same map: chunks untouched


def test_destroy_removes_the_secret_and_is_idempotent(open_store: StoreFactory) -> None:
    ks = open_store()
    ks.generate("alice")
    sealed = ks.seal(small_map(), to=["alice"])
    secret_file = ks.directory / "secrets" / "alice.v1.key"
    assert secret_file.exists()
    ks.destroy("alice", 1)
    assert not secret_file.exists()
    again = ks.destroy("alice", 1)
    assert again.state is KeyState.DESTROYED
    with pytest.raises(KeyDestroyedError):
        ks.open_envelope(sealed)
    with pytest.raises(KeyNotFound, match="no active version"):
        ks.seal(small_map(), to=["alice"])
    assert [d.name for d in ks.due()] == ["alice"]  # nothing active: rotate it
    ks.rotate_due()
    assert ks.identity("alice").active is not None
    # a fresh process cannot use it either: the secret is gone, not just marked
    reopened = KeyStore.open(ks.directory, config=ks.config, passphrase=PASSPHRASE)
    with pytest.raises(KeyDestroyedError):
        reopened.open_envelope(sealed)
    destroys = [e for e in ks.audit.events() if e["action"] == "destroy"]
    assert [(e["outcome"], e["detail"], e["version"]) for e in destroys] == [
        ("intent", None, 1), ("success", "secret deleted", 1)]  # fmt: skip


def test_self_encryptor_uses_the_store_convergence_secret(open_store: StoreFactory) -> None:
    ks = open_store()
    secret = ks.convergence_secret()
    assert len(secret) == 32 and secret == ks.convergence_secret("default")
    assert ks.convergence_secret("team-b") != secret
    data = bytes(range(256)) * 40
    chunks = MemoryChunkStore()
    data_map, _ = SelfEncryptor(data, chunk_store=chunks, key_store=ks).encrypt()
    plain_map, _ = SelfEncryptor(data).encrypt()
    assert data_map.to_bytes() != plain_map.to_bytes()  # the domain changes every chunk key
    ks.generate("alice")
    opened = ks.open_envelope(ks.seal(data_map, to=["alice"]))
    back = SelfEncryptor.from_data_map(opened, chunks, key_store=ks).decrypt()
    assert back == data
    reopened = KeyStore.open(ks.directory, config=ks.config, passphrase=PASSPHRASE)
    assert reopened.convergence_secret() == secret  # stable across opens


def test_quantum_safe_refuses_non_pq_suites(open_store: StoreFactory) -> None:
    with pytest.raises(ValueError, match="not post-quantum"):
        KeyConfig(suite="x25519")
    with pytest.raises(ValueError, match="not one of"):
        KeyConfig(signature="ed25519")
    ks = open_store(suite="ml-kem-1024", signature="ml-dsa-87")
    v = ks.generate("cnsa")
    assert v.public_key.startswith("pqse-pub-ml-kem-1024:")
    with pytest.raises(ValueError, match="not post-quantum"):
        ks.generate("classic", suite="x25519")
    lenient = KeyConfig(quantum_safe=False)
    with pytest.raises(ValueError, match="unknown suite"):
        lenient.check_suite("x25519")  # without the policy: refused only as unknown


def test_recipient_directory(open_store: StoreFactory) -> None:
    ks = open_store()
    ks.generate("alice")
    bob1, bob2 = generate_identity(), generate_identity()
    ks.recipients.add("bob", str(bob1.recipient()))
    assert "bob" in ks.recipients and len(ks.recipients) == 1
    with pytest.raises(KeyStoreError, match=r"^recipient 'bob' already exists") as exists:
        ks.recipients.add("bob", str(bob2.recipient()))
    assert "replace_existing" not in str(exists.value)  # the message also reaches CLI users
    with pytest.raises(KeyStoreError, match="local identity"):
        ks.recipients.add("alice", str(bob2.recipient()))
    with pytest.raises(KeyStoreError, match="already exists"):
        ks.generate("bob")
    with pytest.raises(InvalidDataError):
        ks.recipients.add("dave", str(bob2.recipient())[:-3] + "aaa")
    with pytest.raises(ValueError):
        ks.recipients.add("Not A Name", str(bob2.recipient()))
    sealed_to_old = ks.seal(small_map(), to=["alice", "bob"])
    ks.recipients.add("bob", str(bob2.recipient()), replace_existing=True)
    assert ks.recipients.get("bob").previous_key_ids == (bob1.key_id.hex(),)
    rewrapped = ks.rewrap(sealed_to_old)  # old key id still maps to bob, now his new key
    assert bob2.key_id in inspect(rewrapped).recipients
    ks.recipients.remove("bob")
    with pytest.raises(KeyNotFound):
        ks.recipients.get("bob")
    with pytest.raises(KeyNotFound):
        ks.rewrap(sealed_to_old)  # bob's key ids are no longer known: refuse, never drop him
    actions = [e["action"] for e in ks.audit.events()]
    assert actions.count("recipient-add") == 2 and actions.count("recipient-remove") == 1


def test_mixed_suites_in_one_envelope_are_refused(open_store: StoreFactory) -> None:
    ks = open_store()
    ks.generate("alice")
    ks.recipients.add("big", str(generate_identity("ml-kem-1024").recipient()))
    with pytest.raises(ValueError):
        ks.seal(small_map(), to=["alice", "big"])


def test_file_backend_permissions_and_passphrases(tmp_path: Path, clock: FakeClock) -> None:
    with pytest.raises(WeakSecretError, match="too weak"):
        KeyStore.open(tmp_path / "weak", passphrase="Tr0ub4dor&3", clock=clock)
    assert not (tmp_path / "weak" / "keystore.json").exists()
    ks = KeyStore.open(tmp_path / "ks", passphrase=PASSPHRASE, clock=clock)
    ks.generate("alice")
    for path in [ks.directory / "keystore.json", ks.directory / "vault.key",
                 ks.directory / "audit.jsonl", *(ks.directory / "secrets").iterdir()]:  # fmt: skip
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(ks.directory.stat().st_mode) == 0o700
    with pytest.raises(KeyStoreError, match="wrong passphrase"):
        KeyStore.open(tmp_path / "ks", passphrase="another long random phrase entirely")
    with pytest.raises(ValueError, match="passphrase"):
        KeyStore.open(tmp_path / "ks")
    new = "quartz-lantern-ripple-meadow-falcon-7"
    with pytest.raises(WeakSecretError):
        ks.change_passphrase(PASSPHRASE, "hunter2")
    with pytest.raises(KeyStoreError, match="wrong passphrase"):
        ks.change_passphrase("not the passphrase at all, sorry", new)
    ks.change_passphrase(PASSPHRASE, new)
    with pytest.raises(KeyStoreError, match="wrong passphrase"):
        KeyStore.open(tmp_path / "ks", passphrase=PASSPHRASE)
    assert KeyStore.open(tmp_path / "ks", passphrase=new).identity("alice").latest == 1
    changes = [e for e in ks.audit.events() if e["action"] == "passphrase-change"]
    assert [c["outcome"] for c in changes] == ["failure", "failure", "success"]
    ident = ks.identity("alice")
    seed = ks._secrets.pair(ident, ident.versions[0]).kem.seed_bytes()
    on_disk = b"".join(p.read_bytes() for p in ks.directory.rglob("*") if p.is_file())
    assert seed[:16] not in on_disk and seed[-16:] not in on_disk  # never in clear on disk


def test_a_passphrase_that_does_not_unlock_is_a_wrong_passphrase(
    open_store: StoreFactory, tmp_path: Path
) -> None:
    """The vault, the passphrase change and an identity export fail with one precise type (the
    CLI picks its hint by that type, never by the message text)."""
    from pqselfenc.error import WrongPassphrase

    ks = open_store()
    ks.generate("alice")
    wrong = "another long random phrase entirely"
    with pytest.raises(WrongPassphrase):
        KeyStore.open(ks.directory, config=ks.config, passphrase=wrong)
    with pytest.raises(WrongPassphrase):
        ks.change_passphrase(wrong, "quartz-lantern-ripple-meadow-falcon-7")
    blob = ks.export_identity("alice", "quartz-lantern-ripple-meadow-falcon-7")
    with pytest.raises(WrongPassphrase):
        open_store(tmp_path / "other").import_identity(blob, wrong)
    assert issubclass(WrongPassphrase, KeyStoreError)


def test_key_file_tamper_is_detected(open_store: StoreFactory) -> None:
    from pqselfenc.error import IntegrityError

    ks = open_store()
    ks.generate("alice")
    ks.generate("bob")
    sealed = ks.seal(small_map(), to=["alice"])
    secrets = ks.directory / "secrets"
    # swapping two key files is caught by the AAD (name and version are authenticated)
    (secrets / "alice.v1.key").write_bytes((secrets / "bob.v1.key").read_bytes())
    fresh = KeyStore.open(ks.directory, config=ks.config, passphrase=PASSPHRASE)
    with pytest.raises(IntegrityError):
        fresh.open_envelope(sealed)


def test_export_import_round_trip(open_store: StoreFactory, tmp_path: Path) -> None:
    ks = open_store()
    ks.generate("alice")
    sealed_v1 = ks.seal(small_map(), to=["alice"])
    ks.rotate("alice")
    ks.destroy("alice", 1)
    sealed_v2 = ks.seal(small_map(b"second"), to=["alice"])
    with pytest.raises(WeakSecretError):
        ks.export_identity("alice", "short")
    blob = ks.export_identity("alice", "quartz-lantern-ripple-meadow-falcon-7")
    assert b"pqse" not in blob and ks.identity("alice").version(2).key_id.encode() not in blob
    other = open_store(tmp_path / "other")
    with pytest.raises(KeyStoreError, match="wrong passphrase"):
        other.import_identity(blob, "quartz-lantern-ripple-meadow-falcon-8")
    ident = other.import_identity(blob, "quartz-lantern-ripple-meadow-falcon-7", name="alice2")
    assert [v.version for v in ident.versions] == [2]  # destroyed v1 was never exported
    assert other.open_envelope(sealed_v2).to_bytes() == small_map(b"second").to_bytes()
    with pytest.raises(DecryptionError):
        other.open_envelope(sealed_v1)
    good = "quartz-lantern-ripple-meadow-falcon-7"
    with pytest.raises(KeyStoreError, match="altered"):
        other.import_identity(blob[:-1], good, name="x")
    with pytest.raises(InvalidDataError, match="truncated"):
        other.import_identity(blob[:40], good, name="x")
    weaker = blob[:9] + (1).to_bytes(4, "big") + blob[13:]  # argon2 t=1: a downgrade
    with pytest.raises(InvalidDataError, match="argon2id parameter t=1"):
        other.import_identity(weaker, good, name="x")
    actions = [e["action"] for e in ks.audit.events()]
    assert "export" in actions and "import" in [e["action"] for e in other.audit.events()]


def test_metadata_parser_is_strict(open_store: StoreFactory) -> None:
    ks = open_store()
    ks.generate("alice")
    path = ks.directory / "keystore.json"
    good = json.loads(path.read_text())
    broken = [
        {**good, "format": "other"},
        {k: v for k, v in good.items() if k != "identities"},
        {**good, "identities": {"alice": {**good["identities"]["alice"], "versions": [{}]}}},
    ]
    state = json.loads(path.read_text())
    state["identities"]["alice"]["versions"][0]["state"] = "sort-of-active"
    broken.append(state)
    for doc in broken:
        path.write_text(json.dumps(doc))
        with pytest.raises(InvalidDataError):  # before unlock: the unauthenticated parse
            KeyStore.open(ks.directory, config=ks.config, passphrase=PASSPHRASE)
        with pytest.raises(IntegrityError):  # unlocked: the MAC is checked before any field
            ks.identity("alice")
    path.write_text("{not json")
    with pytest.raises(InvalidDataError):
        KeyStore.open(ks.directory, config=ks.config, passphrase=PASSPHRASE)


@pytest.mark.parametrize(
    "edit",
    [
        lambda text: text.replace('"backend"', '"backend": "keyring", "backend"', 1),
        lambda text: text.replace('"version": 2', '"version": NaN', 1),
        lambda text: text.replace(
            '"recipients": {}', '"recipients": {}, "x": ' + "[" * 20 + "]" * 20
        ),
        lambda text: text.encode("utf-16").decode("latin-1"),
    ],
    ids=["duplicate-key", "nan", "nested-too-deep", "utf-16"],
)
def test_metadata_is_strict_json(open_store: StoreFactory, edit: Callable[[str], str]) -> None:
    """Duplicate keys (two readers could pick different backends), NaN, absurd nesting and
    non-UTF-8 encodings are all refused, even where the field itself would be ignored."""
    ks = open_store()
    path = ks.directory / "keystore.json"
    text = path.read_text()
    assert edit(text) != text
    path.write_bytes(edit(text).encode("latin-1"))
    with pytest.raises(InvalidDataError, match="keystore metadata"):
        KeyStore.open(ks.directory, config=ks.config, passphrase=PASSPHRASE)


def test_an_identity_export_is_strict_json(open_store: StoreFactory) -> None:
    """The export's JSON is authenticated by its passphrase, and still parsed strictly."""
    from pqselfenc.core import _primitives as P
    from pqselfenc.keys._vault import passphrase_encrypt

    ks = open_store()
    for plain in (b"[" * 100_000 + b"]" * 100_000, b'{"format": NaN}', b"\xff"):
        blob = passphrase_encrypt(P.EXPORT_MAGIC, P.EXPORT_LABEL, plain, PASSPHRASE)
        with pytest.raises(InvalidDataError, match="identity export"):
            ks.import_identity(blob, PASSPHRASE)


def test_secrets_never_in_repr(open_store: StoreFactory) -> None:
    ks = open_store()
    ks.generate("alice")
    ident = ks.identity("alice")
    pair = ks._secrets.pair(ident, ident.versions[0])
    seed_hex = pair.kem.seed_bytes().hex()
    texts = [repr(ks), repr(ident), repr(pair), repr(ks._secret), repr(ks._secrets.backend),
             repr(ks.recipients), str(ks.audit.verify())]  # fmt: skip
    texts += [line.decode() for line in ks.audit.path.read_bytes().splitlines()]
    for text in texts:
        assert seed_hex[:16] not in text and ks._secret.root.hex()[:16] not in text


def test_backend_of_reads_only_the_metadata(open_store: StoreFactory, tmp_path: Path) -> None:
    ks = open_store()
    assert KeyStore.backend_of(ks.directory) == "file"
    assert KeyStore.backend_of(str(ks.directory)) == "file"
    with pytest.raises(KeyNotFound, match="no key store"):
        KeyStore.backend_of(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()  # nothing is created
    audit_before = ks.audit.path.read_bytes()
    (ks.directory / "vault.key").rename(ks.directory / "vault.key.away")  # no secret needed
    assert KeyStore.backend_of(ks.directory) == "file"
    assert ks.audit.path.read_bytes() == audit_before  # and nothing is recorded
    path = ks.directory / "keystore.json"
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "backend": "plaintext"}))
    with pytest.raises(InvalidDataError, match="backend"):
        KeyStore.backend_of(ks.directory)
    path.write_text("[" * 10_000)
    with pytest.raises(InvalidDataError):
        KeyStore.backend_of(ks.directory)


def test_backend_mismatch_and_bad_arguments(open_store: StoreFactory, tmp_path: Path) -> None:
    ks = open_store()
    with pytest.raises(KeyStoreError, match="file backend"):
        KeyStore.open(ks.directory, backend="keyring")
    with pytest.raises(ValueError):
        KeyStore.open(tmp_path / "x", backend="plaintext", passphrase=PASSPHRASE)
    with pytest.raises(TypeError):
        KeyStore.open(tmp_path / "x", config={"min_entropy": 1}, passphrase=PASSPHRASE)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ks.seal(small_map(), to="alice")
    with pytest.raises(KeyNotFound):
        ks.seal(small_map(), to=["nobody"])
    with pytest.raises(ValueError, match="timezone-aware"):
        from datetime import datetime

        KeyStore.open(tmp_path / "y", passphrase=PASSPHRASE, clock=lambda: datetime(2026, 1, 1))
    for bad in (0, 100, 300):
        with pytest.raises(ValueError):
            KeyConfig(min_entropy=bad)
    with pytest.raises(ValueError):
        KeyConfig(rotation_interval=timedelta(0))


# -- keystore.json is authenticated (threat-model/keys.md "Metadata tampering") ---------------


def _rewrite(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """What an insider without the root secret can do: edit the JSON and re-serialise it validly
    (the old ``mac`` field kept, since they cannot compute a new one)."""
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


def _unchanged_after(ks: KeyStore, action: Callable[[], object], error: str) -> None:
    """``action`` fails with ``IntegrityError`` and writes nothing: no metadata, no audit."""
    files = {p.name: p.read_bytes() for p in ks.directory.iterdir() if p.is_file()}
    with pytest.raises(IntegrityError, match=error):
        action()
    assert {p.name: p.read_bytes() for p in ks.directory.iterdir() if p.is_file()} == files


def test_swapped_recipient_key_is_refused(open_store: StoreFactory) -> None:
    """The attack the MAC exists for: bob's public key replaced by mallory's in keystore.json."""
    ks = open_store()
    ks.recipients.add("bob", str(generate_identity().recipient()))
    mallory = generate_identity().recipient()

    def swap(doc: dict[str, Any]) -> None:
        doc["recipients"]["bob"] |= {"public_key": str(mallory), "key_id": mallory.key_id.hex(),
                                     "fingerprint": mallory.fingerprint}  # fmt: skip

    _rewrite(ks.directory / "keystore.json", swap)
    assert KeyStore.backend_of(ks.directory) == "file"  # still parses: only the MAC catches it
    _unchanged_after(ks, lambda: ks.seal(small_map(), to=["bob"]), "MAC check")
    _unchanged_after(ks, lambda: ks.recipients.add("carol", str(mallory)), "MAC check")
    _unchanged_after(ks, lambda: ks.recipients.get("bob"), "MAC check")
    reopen = lambda: KeyStore.open(ks.directory, config=ks.config, passphrase=PASSPHRASE)  # noqa: E731
    _unchanged_after(ks, reopen, "MAC check")


def test_flipped_state_is_refused(open_store: StoreFactory) -> None:
    """destroyed -> active would make a shredded version look usable (and sealed to); and
    active -> destroyed, on open, would make the store delete a live secret."""
    ks = open_store()
    ks.generate("alice")
    sealed = ks.seal(small_map(), to=["alice"])
    ks.rotate("alice")
    ks.destroy("alice", 1)
    path = ks.directory / "keystore.json"
    good = path.read_bytes()

    def undestroy(doc: dict[str, Any]) -> None:
        v1, v2 = doc["identities"]["alice"]["versions"]
        v1 |= {"state": "active", "destroyed": None}
        v2 |= {"state": "decrypt-only", "retired": v2["created"]}

    _rewrite(path, undestroy)
    _unchanged_after(ks, lambda: ks.open_envelope(sealed), "MAC check")
    _unchanged_after(ks, lambda: ks.seal(small_map(), to=["alice"]), "MAC check")
    _unchanged_after(ks, lambda: ks.rotate("alice"), "MAC check")

    path.write_bytes(good)

    def destroy_live(doc: dict[str, Any]) -> None:
        doc["identities"]["alice"]["versions"][1] |= {
            "state": "destroyed", "destroyed": "2026-01-01T00:00:00.000000Z"}  # fmt: skip

    _rewrite(path, destroy_live)
    reopen = lambda: KeyStore.open(ks.directory, config=ks.config, passphrase=PASSPHRASE)  # noqa: E731
    _unchanged_after(ks, reopen, "MAC check")
    assert (ks.directory / "secrets" / "alice.v2.key").exists()  # not shredded on open


def test_missing_or_forged_mac_is_refused(open_store: StoreFactory) -> None:
    ks = open_store()
    ks.generate("alice")
    path = ks.directory / "keystore.json"
    good = path.read_bytes()
    _rewrite(path, lambda doc: doc.pop("mac"))
    _unchanged_after(ks, lambda: ks.identities, "no MAC")
    reopen = lambda: KeyStore.open(ks.directory, config=ks.config, passphrase=PASSPHRASE)  # noqa: E731
    _unchanged_after(ks, reopen, "no MAC")
    for bad in (None, 7, "", "00" * 32, "é" * 64, ["x"]):
        _rewrite(path, lambda doc, bad=bad: doc.update(mac=bad))  # type: ignore[misc]
        _unchanged_after(ks, lambda: ks.identities, "MAC check")
    # a MAC under any other key (another store's, a guessed one) is just as wrong
    path.write_bytes(M.to_json(M.from_json(good, None), bytes(32)))
    _unchanged_after(ks, lambda: ks.identity("alice"), "MAC check")
    path.write_bytes(good)
    assert ks.identity("alice").latest == 1


def test_mac_and_generation_on_a_legitimate_life_cycle(
    open_store: StoreFactory, clock: FakeClock
) -> None:
    """Every write stores a fresh MAC and one more generation; reopening checks it and works.
    The MAC is recomputed here from docs/format.md section 4, independently of the code."""
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    ks = open_store()
    path = ks.directory / "keystore.json"
    generations = [json.loads(path.read_text())["generation"]]
    steps: list[Callable[[], object]] = [
        lambda: ks.generate("alice"),
        lambda: ks.recipients.add("bob", str(generate_identity().recipient())),
        lambda: ks.rotate("alice"),
        lambda: ks.destroy("alice", 1),
        lambda: ks.recipients.remove("bob"),
    ]
    for step in steps:
        clock.advance(days=1)
        step()
        generations.append(json.loads(path.read_text())["generation"])
    assert generations == [1, 2, 3, 4, 6, 7]  # destroy: intent, then outcome
    ks.open_envelope(ks.seal(small_map(), to=["alice"]))  # reading writes no metadata
    assert json.loads(path.read_text())["generation"] == 7

    doc = json.loads(path.read_text())
    mac = doc.pop("mac")
    key = HKDF(algorithm=hashes.SHA3_256(), length=32, salt=None,
               info=b"pqselfenc/v1/keystore-metadata-mac").derive(ks._secret.root)  # fmt: skip
    body = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    assert mac == hmac.new(key, body, hashlib.sha3_256).hexdigest()

    reopened = KeyStore.open(ks.directory, config=ks.config, passphrase=PASSPHRASE, clock=clock)
    assert [v.state for v in reopened.identity("alice").versions] == [
        KeyState.DESTROYED, KeyState.ACTIVE]  # fmt: skip
    reopened.rotate("alice")
    assert reopened.identity("alice").latest == 3 and reopened.audit.verify().ok
    assert json.loads(path.read_text())["generation"] == 8


def test_rollback_of_keystore_json_alone_is_refused_at_open(open_store: StoreFactory) -> None:
    """An older, validly MACed keystore.json put back (un-removing a recipient, bringing back
    an old recipient key) is below the generation the audit log recorded: open refuses it and
    writes nothing, not even an audit event; the newest copy opens again."""
    ks = open_store()
    ks.generate("alice")
    old_key = str(generate_identity().recipient())
    ks.recipients.add("bob", old_key)
    path = ks.directory / "keystore.json"
    with_bob = path.read_bytes()  # generation 3
    ks.recipients.remove("bob")
    ks.recipients.add("carol", str(generate_identity().recipient()))
    newest = path.read_bytes()  # generation 5, recorded by the recipient-add event
    ks.close()
    path.write_bytes(with_bob)
    reopen = lambda: KeyStore.open(ks.directory, config=ks.config, passphrase=PASSPHRASE)  # noqa: E731
    _unchanged_after(
        ks, reopen, "keystore.json generation 3 is older than generation 5 recorded in the "
        "audit log: rolled back"
    )  # fmt: skip
    # a staged file that is not the next generation this log recorded does not help either
    (ks.directory / "keystore.json.staged").write_bytes(newest.replace(b"carol", b"carl_"))
    _unchanged_after(ks, reopen, "rolled back")
    (ks.directory / "keystore.json.staged").write_bytes(with_bob)
    _unchanged_after(ks, reopen, "rolled back")
    (ks.directory / "keystore.json.staged").unlink()
    path.write_bytes(newest)
    reopened = reopen()
    assert "bob" not in reopened.recipients and "carol" in reopened.recipients
    assert reopened.audit.verify().ok


def test_rollback_after_a_single_write_is_refused(open_store: StoreFactory) -> None:
    ks = open_store()
    path = ks.directory / "keystore.json"
    before = path.read_bytes()
    ks.recipients.add("bob", str(generate_identity().recipient()))
    path.write_bytes(before)
    log = ks.audit.path.read_bytes()
    with pytest.raises(IntegrityError, match="generation 1 is older than generation 2"):
        KeyStore.open(ks.directory, config=ks.config, passphrase=PASSPHRASE)
    assert ks.audit.path.read_bytes() == log


def _as_format_1(ks: KeyStore, keystore_json: bytes) -> bytes:
    """``keystore_json`` (of ``ks``) rewritten as the release before audit MACs wrote it."""
    mac_key = ks._secret.metadata_mac_key()
    return M.to_json(replace(M.from_json(keystore_json, mac_key), audit_mac_from=None), mac_key)


def test_an_old_audit_log_without_generations_still_verifies_and_opens(
    open_store: StoreFactory,
) -> None:
    """Logs written before events carried a generation (and before lines carried MACs, with a
    format 1 keystore.json): they verify, the store opens and is upgraded, and they give no
    bound until the upgrade records one; from then on a rollback is refused."""
    ks = open_store(checkpoint_every=1000)  # no checkpoint: the log can be re-chained here
    ks.generate("alice")
    path = ks.directory / "keystore.json"
    older = _as_format_1(ks, path.read_bytes())
    ks.recipients.add("bob", str(generate_identity().recipient()))
    path.write_bytes(_as_format_1(ks, path.read_bytes()))
    events = [{k: v for k, v in e.items() if k not in ("generation", "meta_mac")}
              for e in ks.audit.events()]  # fmt: skip
    ks.audit.path.write_bytes(rechain(events, None))
    assert b"generation" not in ks.audit.path.read_bytes()
    assert ks.audit.verify().ok and ks.audit.last_commit() is None
    path.write_bytes(older)  # without a recorded generation, no bound: it opens
    reopened = KeyStore.open(ks.directory, config=ks.config, passphrase=PASSPHRASE)
    assert "bob" not in reopened.recipients
    upgrade = list(reopened.audit.events())[-1]
    assert (upgrade["action"], upgrade["generation"]) == ("audit-upgrade", 3)
    reopened.recipients.add("carol", str(generate_identity().recipient()))
    commit = reopened.audit.last_commit()
    assert commit is not None and commit.generation == 4 and reopened.audit.verify().ok
    path.write_bytes(older)
    with pytest.raises(IntegrityError, match="rolled back"):
        KeyStore.open(ks.directory, config=ks.config, passphrase=PASSPHRASE)


@pytest.mark.parametrize("bad", ["3", -1, 0, True, False, 1.5, None, [3], {"g": 3}, 2**63])
def test_an_invalid_generation_in_an_audit_line_is_rejected(
    open_store: StoreFactory, bad: object
) -> None:
    """A re-chained, re-MACed line whose only fault is its generation: verify calls it
    malformed, and open (which reads the last commit) fails with AuditError, a pqselfenc Error."""
    from pqselfenc.error import AuditError, Error

    ks = open_store(checkpoint_every=1000)
    ks.recipients.add("bob", str(generate_identity().recipient()))
    events = list(ks.audit.events())
    events[-1]["generation"] = bad
    ks.audit.path.write_bytes(rechain(events, ks._secret.audit_mac_key()))
    report = ks.audit.verify()
    assert not report.ok and report.kind == "malformed" and report.seq == len(events)
    with pytest.raises(AuditError) as info:
        KeyStore.open(ks.directory, config=ks.config, passphrase=PASSPHRASE)
    assert isinstance(info.value, Error)


def test_a_generation_on_a_checkpoint_line_is_malformed(open_store: StoreFactory) -> None:
    ks = open_store(checkpoint_every=2)
    ks.recipients.add("bob", str(generate_identity().recipient()))  # create, add, checkpoint
    lines = ks.audit.path.read_bytes().splitlines(keepends=True)
    doc = json.loads(lines[-1])
    assert doc["action"] == "checkpoint"
    doc["generation"] = 2
    lines[-1] = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    ks.audit.path.write_bytes(b"".join(lines))
    assert ks.audit.verify().kind == "malformed"
