"""The key store's parts on their own, without a whole store: the ledger (lock, MAC-checked
metadata, staged commit, audit) on a temp folder with a fake audit signer, and the secrets part
on an in-memory backend."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from _keys_support import START, FakeClock

from pqselfenc.error import (
    AuditError,
    IntegrityError,
    KeyDestroyedError,
    KeyNotFound,
    KeyStoreError,
    SignatureError,
)
from pqselfenc.keys import SecretBackend
from pqselfenc.keys import _metadata as M
from pqselfenc.keys._ledger import Ledger, store_lock
from pqselfenc.keys._material import KeyPair, generate_pair
from pqselfenc.keys._metadata import Identity, KeyState, KeyVersion, Metadata
from pqselfenc.keys._secrets import STORE_SECRET, Secrets
from pqselfenc.keys.audit import AuditLog

MAC_KEY = bytes(range(32))
AUDIT_MAC_KEY = bytes(range(32, 64))
STAGED = "keystore.json.staged"


class FakeSigner:
    """Signs checkpoints with an HMAC (stands in for the store's ML-DSA audit key)."""

    key_id = b"\x5a" * 32

    def sign(self, message: bytes, context: bytes) -> bytes:
        return hmac.new(b"fake audit key", context + message, hashlib.sha3_256).digest()

    def verify(self, signature: bytes, message: bytes, context: bytes) -> None:
        if not hmac.compare_digest(signature, self.sign(message, context)):
            raise SignatureError("fake signature does not verify")


def generation(path: Path) -> int | None:
    return int(json.loads(path.read_bytes())["generation"]) if path.exists() else None


class SpyLog(AuditLog):
    """The audit log, noting what the folder looks like at each append (and failing on demand)."""

    def __init__(self, directory: Path, clock: FakeClock) -> None:
        signer = FakeSigner()
        super().__init__(directory, clock=clock, signer=signer, verifier=signer,
                         checkpoint_every=4, actor="test", mac_key=AUDIT_MAC_KEY)  # fmt: skip
        self.seen: list[dict[str, Any]] = []
        self.fail = False
        self.lock_held: list[bool] = []

    def record(self, action: str, *, outcome: str = "success", **fields: Any) -> int:
        folder = self.path.parent
        self.seen.append({"action": action, "event": fields.get("generation"),
                          "staged": generation(folder / STAGED),
                          "current": generation(folder / "keystore.json")})  # fmt: skip
        if self.fail:
            raise AuditError("cannot append to the audit log: disk full (injected)")
        return super().record(action, outcome=outcome, **fields)


def make_ledger(directory: Path, mac_key: bytes = MAC_KEY) -> tuple[Ledger, SpyLog]:
    directory.mkdir(exist_ok=True)
    clock = FakeClock()
    audit = SpyLog(directory, clock)
    lock = store_lock(directory)
    return Ledger(directory, lock=lock, mac_key=mac_key, audit=audit, clock=clock), audit


def new_metadata() -> Metadata:
    return Metadata(store_id="ab" * 16, backend="file", created=START, audit_key="unused here")


@pytest.fixture
def ledger(tmp_path: Path) -> tuple[Ledger, SpyLog]:
    ledger, audit = make_ledger(tmp_path / "ks")
    with ledger.lock:
        ledger.create(new_metadata(), detail="file")
    return ledger, audit


def version_of(pair: KeyPair, number: int = 1, state: KeyState = KeyState.ACTIVE) -> KeyVersion:
    destroyed = START if state is KeyState.DESTROYED else None
    return KeyVersion(number, state, START, str(pair.kem.recipient()),
                      str(pair.signing.verifying_key()), pair.kem.key_id.hex(),
                      pair.kem.fingerprint, destroyed=destroyed)  # fmt: skip


# -- the ledger ---------------------------------------------------------------------------------


def test_create_writes_generation_one_then_records_it(ledger: tuple[Ledger, SpyLog]) -> None:
    led, audit = ledger
    assert audit.seen == [{"action": "store-create", "event": 1, "staged": None, "current": 1}]
    assert led.read().generation == 1
    assert [e["generation"] for e in audit.events()] == [1]


def test_commit_stages_then_records_then_renames(ledger: tuple[Ledger, SpyLog]) -> None:
    led, audit = ledger
    with led.locked() as meta:
        assert led.lock.is_locked
        written = led.commit(meta.with_recipients({}), "recipient-remove", "bob", key_id="00")
    # at the append: the next generation was staged, keystore.json still the old one
    assert audit.seen[-1] == {"action": "recipient-remove", "event": 2, "staged": 2, "current": 1}
    assert written.generation == 2 and led.read().generation == 2
    assert not (led.directory / STAGED).exists()
    last = list(audit.events())[-1]
    assert (last["action"], last["name"], last["generation"]) == ("recipient-remove", "bob", 2)
    assert audit.verify().ok


def test_a_failing_record_changes_nothing(ledger: tuple[Ledger, SpyLog]) -> None:
    led, audit = ledger
    path = led.directory / "keystore.json"
    before, log_before = path.read_bytes(), audit.path.read_bytes()
    audit.fail = True
    with led.locked() as meta, pytest.raises(AuditError, match="injected"):
        led.commit(meta, "generate", "alice")
    assert audit.seen[-1]["staged"] == 2  # it was staged ...
    assert path.read_bytes() == before  # ... and dropped: keystore.json never changed
    assert not (led.directory / STAGED).exists()
    assert audit.path.read_bytes() == log_before
    assert not led.lock.is_locked


def test_reads_check_the_mac(ledger: tuple[Ledger, SpyLog], tmp_path: Path) -> None:
    led, _ = ledger
    path = led.directory / "keystore.json"
    good = path.read_bytes()
    doc = json.loads(good)
    doc["store_id"] = "cd" * 16  # a field changed behind the ledger's back
    path.write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match="MAC"):
        led.read()
    with pytest.raises(IntegrityError, match="MAC"), led.locked():
        pytest.fail("nothing runs on metadata that failed its MAC check")
    assert not led.lock.is_locked
    path.write_bytes(good)
    other, _ = make_ledger(tmp_path / "other", mac_key=bytes(32))  # another store's key
    with pytest.raises(IntegrityError, match="MAC"):
        other.authenticate(good)
    assert led.authenticate(good) == led.read()


def test_recover_renames_a_staged_generation_whose_event_landed(
    ledger: tuple[Ledger, SpyLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    led, _ = ledger

    def crash(staged: Path, path: Path) -> None:
        raise KeyStoreError("killed before the rename (injected)")

    with monkeypatch.context() as patch:
        patch.setattr(M, "commit_staged", crash)
        with led.locked() as meta, pytest.raises(KeyStoreError, match="injected"):
            led.commit(meta, "generate", "alice")
    assert led.read().generation == 1 and (led.directory / STAGED).exists()
    fresh, _ = make_ledger(led.directory)
    with fresh.lock:
        recovered = fresh.recover(fresh.read())
    assert recovered.generation == 2 and fresh.read().generation == 2
    assert not (led.directory / STAGED).exists()


def test_recover_drops_a_staged_file_without_its_event_or_not_ours(
    ledger: tuple[Ledger, SpyLog],
) -> None:
    led, _ = ledger
    staged = led.directory / STAGED
    for key in (MAC_KEY, bytes(32)):  # the next generation, but no event; another key's file
        M.write_metadata(staged, led.read(), key)
        with led.lock:
            assert led.recover(led.read()).generation == 1
        assert not staged.exists() and led.read().generation == 1


def test_recover_refuses_a_rolled_back_keystore_json(ledger: tuple[Ledger, SpyLog]) -> None:
    led, audit = ledger
    path = led.directory / "keystore.json"
    old = path.read_bytes()
    with led.locked() as meta:
        led.commit(meta, "generate", "alice")
    path.write_bytes(old)  # a validly MACed, older copy
    log = audit.path.read_bytes()
    with led.lock, pytest.raises(IntegrityError, match="rolled back"):
        led.recover(led.read())
    assert path.read_bytes() == old and audit.path.read_bytes() == log  # nothing written


# -- the secrets part ----------------------------------------------------------------------------


class MemoryBackend:
    """A ``SecretBackend`` in a dict, counting reads."""

    kind = "memory"

    def __init__(self) -> None:
        self.items: dict[tuple[str, int], bytes] = {}
        self.gets = 0

    def put(self, name: str, version: int, secret: bytes) -> None:
        self.items[(name, version)] = secret

    def get(self, name: str, version: int) -> bytes:
        self.gets += 1
        try:
            return self.items[(name, version)]
        except KeyError:
            raise KeyNotFound(f"no secret for {name} v{version}") from None

    def delete(self, name: str, version: int) -> bool:
        return self.items.pop((name, version), None) is not None


@pytest.fixture(scope="module")
def pairs() -> list[KeyPair]:
    return [generate_pair("x-wing", "ml-dsa-65") for _ in range(2)]


def test_secrets_refuse_a_destroyed_version_without_asking_the_backend(
    pairs: list[KeyPair],
) -> None:
    backend = MemoryBackend()
    assert isinstance(backend, SecretBackend)
    secrets = Secrets(backend, min_entropy=256)
    secrets.put("alice", 1, pairs[0])
    secrets.keep("alice", 1, pairs[0])  # even a cached pair is refused once destroyed
    ident = Identity("alice", "x-wing", "ml-dsa-65", ())
    with pytest.raises(KeyDestroyedError, match="alice v1 was destroyed"):
        secrets.pair(ident, version_of(pairs[0], state=KeyState.DESTROYED))
    assert backend.gets == 0


def test_secrets_check_the_key_id_and_cache_what_they_decode(pairs: list[KeyPair]) -> None:
    backend = MemoryBackend()
    secrets = Secrets(backend, min_entropy=256)
    ident = Identity("alice", "x-wing", "ml-dsa-65", ())
    secrets.put("alice", 1, pairs[0])  # written, not cached: the metadata is not committed yet
    first = secrets.pair(ident, version_of(pairs[0]))
    assert first.kem.key_id == pairs[0].kem.key_id and backend.gets == 1
    assert secrets.pair(ident, version_of(pairs[0])) is first and backend.gets == 1  # cached
    secrets.put("alice", 2, pairs[0])  # v2's secret is v1's key: the metadata names pairs[1]
    with pytest.raises(IntegrityError, match="does not match"):
        secrets.pair(ident, version_of(pairs[1], number=2))
    assert secrets.delete("alice", 1) and not secrets.delete("alice", 1)
    with pytest.raises(KeyNotFound):  # forgotten from the cache too
        secrets.pair(ident, version_of(pairs[0]))


def test_the_store_secret_must_match_the_metadata() -> None:
    backend = MemoryBackend()
    secrets = Secrets(backend, min_entropy=256)
    secret = secrets.create_store_secret("ml-dsa-65")
    assert STORE_SECRET in backend.items
    audit_key = str(secret.audit_key.verifying_key())
    assert secrets.store_secret(audit_key).root == secret.root
    other = str(Secrets(MemoryBackend(), min_entropy=256).create_store_secret("ml-dsa-65")
                .audit_key.verifying_key())  # fmt: skip
    with pytest.raises(IntegrityError, match="does not match"):
        secrets.store_secret(other)
