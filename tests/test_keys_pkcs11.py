"""``KeyStore`` on the pkcs11 backend, against the real SoftHSM token (tests/_softhsm.py).

The whole key store on a token: creation records the token key in the MACed metadata and
reopening uses it; rotation, rewrap, destroy of one version; every seed unwrapped in the token per
use (none cached); the token key deleted by another process (everything unreadable: the whole
store crypto-shredded); wrong PIN, token absent, another token, no module; a creation that fails
leaves nothing in the token; ``close`` gives the session back; two processes on one store.
(The rollback anchor: tests/test_keys_anchor.py; the secrets scan: tests/test_secrets_scan.py.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from _anchored import Anchored
from _keys_support import FakeClock, small_map
from _softhsm import SoftHsm

from pqselfenc.error import (
    IntegrityError,
    KeyDestroyedError,
    KeyStoreError,
    TokenPinError,
    TokenUnavailable,
)
from pqselfenc.keys import KeyState, KeyStore, _opening, _pkcs11
from pqselfenc.keys import pkcs11_backend as pb
from pqselfenc.keys._secrets import Secrets


@pytest.fixture
def token(softhsm: SoftHsm, monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> Anchored:
    """The pkcs11 side of ``anchored`` alone."""
    for name, value in softhsm.env().items():
        if name.startswith("PQSELFENC_PKCS11_"):
            monkeypatch.setenv(name, value)
    return Anchored("pkcs11", clock, softhsm)


@pytest.fixture(autouse=True)
def _sessions_given_back(request: pytest.FixtureRequest) -> Any:
    yield
    token = request.node.funcargs.get("token")
    if isinstance(token, Anchored):
        for store in token.opened:
            store.close()
    assert _pkcs11._OPEN == {}, "a test left a PKCS#11 session open"


def blobs(directory: Path) -> list[str]:
    return sorted(p.name for p in (directory / "secrets").iterdir())


def test_a_store_on_the_token(token: Anchored, tmp_path: Path, clock: FakeClock) -> None:
    ks = token.open(tmp_path / "ks")
    alice = ks.generate("alice")
    ks.generate("bob", suite="ml-kem-1024", signature="ml-dsa-87")
    data_map = small_map()
    sealed = ks.seal(data_map, to=["alice"], sign_as="alice")
    assert ks.open_envelope(sealed, signer="alice") == data_map
    meta = json.loads((ks.directory / "keystore.json").read_text())
    backend = ks._secrets.backend
    assert isinstance(backend, pb.Pkcs11Backend)
    assert meta["backend"] == "pkcs11" and meta["anchor"] == "token"
    assert meta["pkcs11"] == {"token": token.hsm.token if token.hsm else "",
                              "key_label": backend.key_label, "key_id": backend.key_id.hex()}
    assert blobs(ks.directory) == ["_store.v1.p11", "alice.v1.p11", "bob.v1.p11"]
    assert not (ks.directory / "vault.key").exists()
    clock.advance(days=400)
    ks.rotate_due()
    rewrapped = ks.rewrap(sealed)
    ks.destroy("alice", 1)
    assert blobs(ks.directory) == ["_store.v1.p11", "alice.v2.p11", "bob.v1.p11", "bob.v2.p11"]
    with pytest.raises(KeyDestroyedError):
        ks.open_envelope(sealed)
    ks.close()
    reopened = token.open(ks.directory)  # by the recorded key id
    assert reopened.open_envelope(rewrapped, signer="alice") == data_map
    assert reopened.identity("alice").version(1).state is KeyState.DESTROYED
    assert reopened.identity("alice").active is not None and alice.version == 1
    assert reopened.audit.verify().ok
    assert reopened.token_capabilities() == (
        f"token {token.hsm.token!r} implements no ML-KEM/ML-DSA mechanisms: decapsulation and "  # type: ignore[union-attr]
        "signing keys are wrapped by the token's AES key and unwrapped in process memory per use"
    )


def test_the_recorded_token_is_used_when_no_token_is_named(
    token: Anchored, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ks = token.open(tmp_path / "ks")
    ks.generate("alice")
    ks.close()
    monkeypatch.delenv("PQSELFENC_PKCS11_TOKEN")
    assert token.open(ks.directory).identity("alice")
    with pytest.raises(KeyDestroyedError, match="another token"):
        token.open(ks.directory, token=token.hsm.other_token)  # type: ignore[union-attr]


def test_the_token_key_record_is_checked(token: Anchored, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The record is under the MAC: a key id altered fails saying so (not "destroyed"); another
    token label is either not where the key is (with no token named) or fails the MAC."""
    hsm = token.hsm
    assert hsm is not None
    ks = token.open(tmp_path / "ks")
    ks.close()
    path = ks.directory / "keystore.json"
    good = path.read_bytes()

    def altered(field: str, value: str) -> None:
        doc = json.loads(good)
        doc["pkcs11"][field] = value
        path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")

    altered("key_id", "00" * 16)
    with pytest.raises(IntegrityError, match="key id differs"):
        token.open(ks.directory)
    altered("token", hsm.other_token)
    with pytest.raises(IntegrityError, match="MAC"):  # $PQSELFENC_PKCS11_TOKEN found the key
        token.open(ks.directory)
    monkeypatch.delenv("PQSELFENC_PKCS11_TOKEN")
    with pytest.raises(KeyDestroyedError, match="another token"):  # the recorded one has none
        token.open(ks.directory)
    path.write_bytes(good)
    assert token.open(ks.directory).audit.verify().ok


def test_every_use_unwraps_in_the_token(token: Anchored, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Issue 15: "unwrap happens per use". No decoded pair is kept between uses."""
    ks = token.open(tmp_path / "ks")
    ks.generate("alice")
    sealed = ks.seal(small_map(), to=["alice"])
    calls: list[bytes] = []
    real = pb.token_decrypt

    def counting(key: Any, iv: bytes, aad: bytes, body: bytes) -> bytes:
        calls.append(aad)
        return real(key, iv, aad, body)

    monkeypatch.setattr(pb, "token_decrypt", counting)
    for _ in range(3):
        assert ks.open_envelope(sealed) == small_map()
    ks.signing_key("alice")
    assert len(calls) == 4 and all(b"alice" in aad for aad in calls)
    assert ks._secrets._pairs == {}


def test_the_token_key_deleted_shreds_the_whole_store(token: Anchored, tmp_path: Path) -> None:
    """Deleted by another process while this one has the store open: from the next use on,
    nothing of the store opens here, and the store never opens again."""
    ks = token.open(tmp_path / "ks")
    ks.generate("alice")
    ks.generate("bob")
    sealed = [ks.seal(small_map(), to=[name]) for name in ("alice", "bob")]
    meta = ks._ledger.read()
    assert meta.token_key is not None
    token.run("""
        import sys
        from pqselfenc.keys.pkcs11_backend import Pkcs11Backend
        with Pkcs11Backend.open(sys.argv[1], sys.argv[2], key_id=bytes.fromhex(sys.argv[3])) as b:
            assert b.destroy_wrapping_key()
    """, str(ks.directory), meta.store_id, meta.token_key.key_id)  # fmt: skip
    for envelope in sealed:
        with pytest.raises(KeyDestroyedError, match="crypto-shredded"):
            ks.open_envelope(envelope)
    with pytest.raises(KeyDestroyedError):
        ks.rotate("alice")  # a new seed cannot be wrapped either
    for name in blobs(ks.directory):
        secret, version = name.removesuffix(".p11").rsplit(".v", 1)
        with pytest.raises(KeyDestroyedError):
            ks._secrets.backend.get(secret, int(version))
    ks.close()
    with pytest.raises(KeyDestroyedError, match="crypto-shredded"):
        token.open(ks.directory)
    with pytest.raises(KeyDestroyedError):
        KeyStore.verify_audit(ks.directory, backend="pkcs11")


def test_a_key_planted_after_the_shred_wraps_nothing(token: Anchored, tmp_path: Path,
                                                     softhsm: SoftHsm) -> None:  # fmt: skip
    """The store open; the admin destroys its token key (PIN); someone without the PIN plants an
    exportable public key of a known value under the same label and ``CKA_ID`` (both are in the
    folder). The open store's next new seed is not wrapped under it: ``KeyDestroyedError``."""
    ks = token.open(tmp_path / "ks")
    ks.generate("alice")
    meta = ks._ledger.read()
    assert meta.token_key is not None
    label, key_id = meta.token_key.key_label, meta.token_key.key_id
    token.run("""
        import os, sys, pkcs11
        from pkcs11 import Attribute as A, ObjectClass
        tok = pkcs11.lib(os.environ["PQSELFENC_PKCS11_MODULE"]).get_token(
            token_label=os.environ["PQSELFENC_PKCS11_TOKEN"])
        with tok.open(rw=True, user_pin=os.environ["PQSELFENC_PKCS11_PIN"]) as s:
            for key in s.get_objects({A.CLASS: ObjectClass.SECRET_KEY, A.LABEL: sys.argv[1]}):
                key.destroy()
        with tok.open(rw=True) as s:  # no PIN
            s.create_object({A.CLASS: ObjectClass.SECRET_KEY, A.KEY_TYPE: pkcs11.KeyType.AES,
                             A.TOKEN: True, A.PRIVATE: False, A.SENSITIVE: False,
                             A.EXTRACTABLE: True, A.ENCRYPT: True, A.DECRYPT: True,
                             A.LABEL: sys.argv[1], A.ID: bytes.fromhex(sys.argv[2]),
                             A.VALUE: bytes([0x5A]) * 32})
    """, label, key_id)  # fmt: skip
    with pytest.raises(KeyDestroyedError, match="crypto-shredded"):
        ks.generate("carol")
    assert not any(name.startswith("carol.") for name in blobs(ks.directory))
    ks.close()
    with pytest.raises(KeyDestroyedError):
        token.open(ks.directory)
    token.run("""
        import os, sys, pkcs11
        from pkcs11 import Attribute as A, ObjectClass
        tok = pkcs11.lib(os.environ["PQSELFENC_PKCS11_MODULE"]).get_token(
            token_label=os.environ["PQSELFENC_PKCS11_TOKEN"])
        with tok.open(rw=True) as s:  # the planted key is public: it goes without the PIN
            for key in s.get_objects({A.CLASS: ObjectClass.SECRET_KEY, A.LABEL: sys.argv[1]}):
                key.destroy()
    """, label)  # fmt: skip


def test_wrong_pin_absent_token_no_module(token: Anchored, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    hsm = token.hsm
    assert hsm is not None
    ks = token.open(tmp_path / "ks")
    ks.generate("alice")
    ks.close()
    with pytest.raises(TokenPinError, match="PinIncorrect"):
        token.open(ks.directory, pin=hsm.pin + "0")
    with pytest.raises(TokenPinError, match="PinIncorrect"):
        token.open(tmp_path / "new", pin=hsm.pin + "0")
    assert not (tmp_path / "new" / "keystore.json").exists()
    with pytest.raises(TokenUnavailable, match="no PKCS#11 token labelled"):
        token.open(tmp_path / "new", token="no-such-token")
    monkeypatch.delenv("PQSELFENC_PKCS11_PIN")
    with pytest.raises(TokenPinError, match="PQSELFENC_PKCS11_PIN"):
        token.open(ks.directory)
    monkeypatch.delenv("PQSELFENC_PKCS11_MODULE")
    with pytest.raises(TokenUnavailable, match="PQSELFENC_PKCS11_MODULE"):
        token.open(ks.directory, pin=hsm.pin)
    with pytest.raises(TokenUnavailable, match="absolute path"):
        token.open(ks.directory, pin=hsm.pin, module="libsofthsm2.so")
    made = sorted(p.name for p in (tmp_path / "new").iterdir())
    assert made == ["keystore.lock"]  # the lock, as for every backend; nothing else


def test_a_creation_that_fails_leaves_nothing_in_the_token(
    token: Anchored, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[Secrets] = []
    real = _opening._secrets

    def keep(*args: Any, **kwargs: Any) -> Secrets:
        made.append(real(*args, **kwargs))
        return made[-1]

    def disk_full(self: Secrets, signature: str) -> Any:
        raise KeyStoreError("disk full (injected)")

    with monkeypatch.context() as patch:
        patch.setattr(_opening, "_secrets", keep)
        patch.setattr(Secrets, "create_store_secret", disk_full)
        with pytest.raises(KeyStoreError, match="injected"):
            token.open(tmp_path / "ks")
    backend = made[0].backend
    assert isinstance(backend, pb.Pkcs11Backend)
    assert not (tmp_path / "ks" / "keystore.json").exists()
    with pytest.raises(KeyDestroyedError):  # its token key was destroyed again
        pb.Pkcs11Backend.open(tmp_path / "ks", backend._store_id).close()
    with pb.Pkcs11Backend.open(tmp_path / "ks", backend._store_id, create=True) as probe:
        assert probe.read_anchor() is None  # nor is there an anchor left
        probe.destroy_wrapping_key()


def test_close_gives_the_session_back(token: Anchored, tmp_path: Path) -> None:
    ks = KeyStore.open(tmp_path / "ks", backend="pkcs11")
    ks.generate("alice")
    assert len(_pkcs11._OPEN) == 1
    ks.close()
    assert _pkcs11._OPEN == {}
    with pytest.raises(TokenUnavailable, match="closed"):
        ks.seal(small_map(), to=["alice"], sign_as="alice")  # the signing seed needs the token
    ks.close()  # twice is fine


WORKER = """
    import sys
    from pqselfenc.keys import KeyStore
    from _keys_support import FakeClock, small_map
    path, sealed = sys.argv[1], bytes.fromhex(sys.argv[2])
    for _ in range(8):
        ks = KeyStore.open(path, backend="pkcs11", clock=FakeClock(), actor="reader")
        try:
            assert ks.open_envelope(sealed) == small_map()
        finally:
            ks.close()
    print("ok")
"""


def test_two_processes_on_one_token_store(token: Anchored, tmp_path: Path) -> None:
    """One process opens envelopes (a fresh open each time, so a login, an anchor check and a
    catch-up each time) while this one rotates and seals: both logged in to the token at once."""
    ks = token.open(tmp_path / "ks")
    ks.generate("alice")
    sealed = ks.seal(small_map(), to=["alice"])
    ks.close()
    child = token.child(WORKER, str(ks.directory), sealed.hex())
    writer = token.open(ks.directory)
    for _ in range(4):
        writer.rotate("alice")
        writer.seal(small_map(), to=["alice"])
    out, err = child.communicate(timeout=600)
    assert child.returncode == 0 and out.strip() == "ok", err[-3000:]
    writer.close()
    final = token.open(ks.directory)
    assert final.audit.verify().ok and final.identity("alice").latest == 5


def test_a_copied_folder_opens_nowhere_else(token: Anchored, tmp_path: Path) -> None:
    """The directory alone is only ciphertext: on the other token (same PIN) it does not open."""
    ks = token.open(tmp_path / "ks")
    ks.generate("alice")
    ks.close()
    shutil.copytree(ks.directory, tmp_path / "stolen")
    with pytest.raises(KeyDestroyedError, match="another token"):
        token.open(tmp_path / "stolen", token=token.hsm.other_token)  # type: ignore[union-attr]
