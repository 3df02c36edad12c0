"""Rewrap and signer trust (issue 11 item 5): a destroyed key's signature is never laundered.

``rewrap`` used to match the envelope's claimed signer against every version, destroyed ones
included, open it without checking the signature against anything but the key the envelope
itself carries, and re-sign with the identity's active key. Now the old signature must verify
under a key the store still trusts (``trusted_signer``), every refusal is audited, and a
signature is never added or silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from _keys_support import FakeClock, StoreFactory, small_map

from pqselfenc.error import KeyDestroyedError, KeyStoreError, SignatureError
from pqselfenc.kem import PublicKey, SigningKey, generate_identity, inspect, seal
from pqselfenc.keys import KeyStore


def rotated_and_destroyed(
    open_store: StoreFactory, clock: FakeClock
) -> tuple[KeyStore, SigningKey]:
    """alice v1's signing key (stolen), then v1 rotated out and destroyed."""
    ks = open_store()
    ks.generate("alice")
    stolen = ks.signing_key("alice")
    clock.advance(days=40)
    ks.rotate("alice")
    ks.destroy("alice", 1)
    return ks, stolen


def for_alice(ks: KeyStore, signer: SigningKey | None, content: bytes = b"evil" * 100) -> bytes:
    active = ks.identity("alice").active
    assert active is not None
    return seal(small_map(content), [PublicKey.parse(active.public_key)], signer)


def last_event(ks: KeyStore) -> dict[str, object]:
    return [e for e in ks.audit.events() if e["action"] != "checkpoint"][-1]


def test_rewrap_refuses_a_signature_by_a_destroyed_key(
    open_store: StoreFactory, clock: FakeClock
) -> None:
    """The attack: a forged envelope signed with a stolen, already-destroyed alice v1 key came
    out of rewrap signed by alice v2, which every reader trusts."""
    ks, stolen = rotated_and_destroyed(open_store, clock)
    forged = for_alice(ks, stolen)
    with pytest.raises(SignatureError, match="alice v1, which was destroyed"):
        ks.rewrap(forged)
    event = last_event(ks)
    assert (event["action"], event["outcome"], event["detail"]) == (
        "rewrap", "failure", "SignatureError")  # fmt: skip
    with pytest.raises(SignatureError):
        ks.rewrap(forged, sign_as="alice")  # an explicit signer does not launder it either
    with pytest.raises(SignatureError):
        ks.rewrap(forged, drop_signature=True)  # nor does dropping it: it is not trusted
    with pytest.raises(SignatureError, match="not an expected signer"):
        ks.open_envelope(forged, signer="alice")  # the plain open path agrees


def test_rewrap_refuses_a_signature_by_a_stranger(open_store: StoreFactory) -> None:
    ks = open_store()
    ks.generate("alice")
    with pytest.raises(SignatureError, match="does not trust"):
        ks.rewrap(for_alice(ks, SigningKey.generate()))


def test_rewrap_checks_the_signature_itself(open_store: StoreFactory) -> None:
    """A trusted signer's key claimed by an envelope whose signature bytes are wrong."""
    ks = open_store()
    ks.generate("alice")
    sealed = bytearray(ks.seal(small_map(), to=["alice"], sign_as="alice"))
    sealed[-5] ^= 1  # inside the ML-DSA signature
    with pytest.raises(SignatureError):
        ks.rewrap(bytes(sealed))
    assert last_event(ks)["outcome"] == "failure"


def test_rewrap_of_a_local_signature_re_signs_with_the_active_version(
    open_store: StoreFactory, clock: FakeClock
) -> None:
    ks = open_store()
    ks.generate("alice")
    sealed = ks.seal(small_map(), to=["alice"], sign_as="alice")
    clock.advance(days=40)
    ks.rotate("alice")  # v1 is decrypt-only, still trusted
    new = ks.rewrap(sealed)
    v2 = ks.identity("alice").version(2)
    signer = inspect(new).signer
    assert signer is not None and str(signer) == v2.verifying_key
    dropped = ks.rewrap(sealed, drop_signature=True)
    assert inspect(dropped).signer is None
    with pytest.raises(ValueError, match="not both"):
        ks.rewrap(sealed, sign_as="alice", drop_signature=True)


def test_rewrap_never_adds_a_signature_nobody_asked_for(open_store: StoreFactory) -> None:
    ks = open_store()
    ks.generate("alice")
    unsigned = ks.seal(small_map(), to=["alice"])
    assert inspect(ks.rewrap(unsigned)).signer is None
    signed = ks.rewrap(unsigned, sign_as="alice")
    assert ks.open_envelope(signed, signer="alice").to_bytes() == small_map().to_bytes()


def test_rewrap_of_a_recipients_signature_needs_an_explicit_choice(
    open_store: StoreFactory,
) -> None:
    """bob (a recipient with a verifying key) signed it: rewrap cannot sign as bob. It refuses
    unless told to sign as someone local or to drop the signature."""
    ks = open_store()
    ks.generate("alice")
    bob_signing = SigningKey.generate()
    ks.recipients.add("bob", str(generate_identity().recipient()),
                      verifying_key=str(bob_signing.verifying_key()))  # fmt: skip
    sealed = for_alice(ks, bob_signing, b"from bob")
    assert ks.open_envelope(sealed, signer="bob").to_bytes() == small_map(b"from bob").to_bytes()
    with pytest.raises(KeyStoreError, match="cannot sign as them"):
        ks.rewrap(sealed)
    assert last_event(ks)["outcome"] == "failure"
    assert inspect(ks.rewrap(sealed, drop_signature=True)).signer is None
    resigned = ks.rewrap(sealed, sign_as="alice")
    opened = ks.open_envelope(resigned, signer="alice")
    assert opened.to_bytes() == small_map(b"from bob").to_bytes()


@pytest.mark.parametrize("how", ["destroy", "replace"])
def test_a_signer_no_longer_trusted_is_refused_on_every_path(
    open_store: StoreFactory, clock: FakeClock, how: str
) -> None:
    """Siblings of the rewrap bug: open(signer=...), verifying_keys and rewrap all use one
    notion of trust. A destroyed identity has no trusted key left (KeyDestroyedError, not the
    ValueError an empty list used to cause); a recipient whose verifying key was replaced is
    trusted only under the new key."""
    ks = open_store()
    ks.generate("alice")
    bob_old = SigningKey.generate()
    ks.recipients.add("bob", str(generate_identity().recipient()),
                      verifying_key=str(bob_old.verifying_key()))  # fmt: skip
    by_bob = for_alice(ks, bob_old, b"bob's")
    by_alice = ks.seal(small_map(), to=["alice"], sign_as="alice")
    checks: list[Callable[[], object]]
    if how == "destroy":
        clock.advance(days=1)
        ks.rotate("alice")
        ks.destroy("alice", 1)
        ks.destroy("alice", 2)
        with pytest.raises(KeyDestroyedError, match="no usable version"):
            ks.verifying_keys("alice")
        checks = [lambda: ks.open_envelope(by_alice, signer="alice")]
    else:
        ks.recipients.add("bob", str(generate_identity().recipient()),
                          verifying_key=str(SigningKey.generate().verifying_key()),
                          replace_existing=True)  # fmt: skip
        checks = [lambda: ks.open_envelope(by_bob, signer="bob"), lambda: ks.rewrap(by_bob)]
    for check in checks:
        with pytest.raises((SignatureError, KeyDestroyedError)):
            check()
