"""The OS keyring backend: a real Secret Service round trip, and refusal of insecure backends.

The round-trip tests need the real gnome-keyring Secret Service that scripts/test.sh starts
(it sets PQSELFENC_SECRET_SERVICE=1); run outside it they skip, saying so. They keep their items
in a collection of their own (``secret_service`` in conftest.py), never in the daemon's
login collection, whose start-up state they would otherwise race.
"""

from __future__ import annotations

import os
from pathlib import Path

import keyring.backends.chainer
import keyring.backends.fail
import keyring.backends.null
import pytest
from _keys_support import (
    FakeClock,
    OwnCollection,
    keyring_leaks_connections,
    needs_secret_service,
    small_map,
)

from pqselfenc.error import (
    IntegrityError,
    InvalidDataError,
    KeyNotFound,
    KeyringUnavailable,
    KeyStoreError,
)
from pqselfenc.keys import KeyringBackend, KeyState, KeyStore
from pqselfenc.keys.keyring_backend import native_keyring


@pytest.mark.parametrize(
    "backend",
    [
        keyring.backends.fail.Keyring(),
        keyring.backends.null.Keyring(),
        keyring.backends.chainer.ChainerBackend(),
    ],
    ids=["fail", "null", "chainer"],
)
def test_insecure_backends_are_refused(backend: object) -> None:
    with pytest.raises(KeyringUnavailable, match="refusing keyring backend"):
        KeyringBackend("0" * 32, keyring=backend)


class PlaintextKeyring:
    """Stands in for keyrings.alt's PlaintextKeyring: any class not on the allowlist."""

    def set_password(self, service: str, user: str, password: str) -> None:
        raise AssertionError("must never be called")


def test_a_plaintext_keyring_is_refused_before_any_write(tmp_path: Path, clock: FakeClock) -> None:
    with pytest.raises(KeyringUnavailable):
        KeyStore.open(tmp_path / "ks", backend="keyring", keyring=PlaintextKeyring(), clock=clock)
    assert not (tmp_path / "ks" / "keystore.json").exists()


def test_no_session_bus_means_keyring_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/pqselfenc-bus")
    with pytest.raises(KeyringUnavailable, match="not usable"):
        native_keyring("linux")
    with pytest.raises(KeyringUnavailable, match="no secure OS keyring"):
        native_keyring("plan9")


def test_env_var_cannot_downgrade_the_pinned_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/pqselfenc-bus")
    with pytest.raises(KeyringUnavailable):
        KeyringBackend("0" * 32)  # pinned to the Secret Service: never falls back to another


@needs_secret_service
def test_secret_service_round_trip(secret_service: OwnCollection) -> None:
    backend = KeyringBackend(os.urandom(16).hex())
    secret = os.urandom(130)
    backend.put("alice", 1, secret)
    assert backend.get("alice", 1) == secret
    backend.put("alice", 1, secret[::-1])
    assert backend.get("alice", 1) == secret[::-1]
    assert backend.delete("alice", 1) is True
    assert backend.delete("alice", 1) is False
    with pytest.raises(KeyNotFound):
        backend.get("alice", 1)
    assert "secret" not in repr(backend)


@needs_secret_service
def test_key_store_on_the_secret_service(
    tmp_path: Path, clock: FakeClock, secret_service: OwnCollection
) -> None:
    ks = KeyStore.open(tmp_path / "ks", backend="keyring", clock=clock)
    assert not (tmp_path / "ks" / "secrets").exists()  # nothing secret on disk
    assert KeyStore.backend_of(tmp_path / "ks") == "keyring"
    ks.generate("alice")
    data_map = small_map()
    sealed = ks.seal(data_map, to=["alice"], sign_as="alice")
    reopened = KeyStore.open(tmp_path / "ks", backend="keyring", clock=clock)
    assert reopened.open_envelope(sealed, signer="alice").to_bytes() == data_map.to_bytes()
    assert reopened.convergence_secret() == ks.convergence_secret()
    clock.advance(days=365)
    reopened.rotate_due()
    new = reopened.rewrap(sealed)
    reopened.destroy("alice", 1)
    meta = reopened._ledger.read()
    native = native_keyring()
    assert native.get_password(f"pqselfenc/{meta.store_id}", "alice/v1") is None  # gone
    assert native.get_password(f"pqselfenc/{meta.store_id}", "alice/v2") is not None
    assert reopened.identity("alice").version(1).state is KeyState.DESTROYED
    assert reopened.open_envelope(new).to_bytes() == data_map.to_bytes()
    assert reopened.audit.verify().ok


@needs_secret_service
def test_a_keyring_that_refuses_deletes_never_blocks_the_store(
    tmp_path: Path, clock: FakeClock, secret_service: OwnCollection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The real Secret Service, with its delete refused (issue 18 item 7): the log records the
    intent and the refusal, the version is destroy-pending, the store still opens, and the
    next open after the keyring relents finishes the destroy."""
    from keyring.backends.SecretService import Keyring
    from keyring.errors import PasswordDeleteError

    ks = KeyStore.open(tmp_path / "ks", backend="keyring", clock=clock)
    ks.generate("alice")
    ks.generate("bob")
    service = f"pqselfenc/{ks._ledger.read().store_id}"

    def refuse(self: Keyring, service: str, username: str) -> None:
        raise PasswordDeleteError("refused (injected)")

    with monkeypatch.context() as patch:
        patch.setattr(Keyring, "delete_password", refuse)
        with pytest.raises(KeyStoreError, match="delete failed: PasswordDeleteError"):
            ks.destroy("alice", 1)
        assert native_keyring().get_password(service, "alice/v1") is not None
        reopened = KeyStore.open(tmp_path / "ks", backend="keyring", clock=clock)
        assert reopened.identity("alice").version(1).state is KeyState.DESTROY_PENDING
        assert reopened.seal(small_map(), to=["bob"])  # the store is not blocked
    outcomes = [e["outcome"] for e in reopened.audit.events() if e["action"] == "destroy"]
    assert outcomes == ["intent", "failure", "failure"]  # the destroy, then the open's retry
    finished = KeyStore.open(tmp_path / "ks", backend="keyring", clock=clock)
    assert finished.identity("alice").version(1).state is KeyState.DESTROYED
    assert native_keyring().get_password(service, "alice/v1") is None
    assert finished.audit.verify().ok


@needs_secret_service
def test_keyring_entry_tampering_is_caught(
    tmp_path: Path, clock: FakeClock, secret_service: OwnCollection
) -> None:
    ks = KeyStore.open(tmp_path / "ks", backend="keyring", clock=clock)
    ks.generate("alice")
    ks.generate("bob")
    sealed = ks.seal(small_map(), to=["alice"])
    service = f"pqselfenc/{ks._ledger.read().store_id}"
    native = native_keyring()
    native.set_password(service, "alice/v1", native.get_password(service, "bob/v1"))
    fresh = KeyStore.open(tmp_path / "ks", backend="keyring", clock=clock)
    with pytest.raises(IntegrityError, match="does not match"):  # bob's seed under alice's name
        fresh.open_envelope(sealed)
    native.set_password(service, "alice/v1", "%%% not base64 %%%")
    with pytest.raises(InvalidDataError, match="malformed"):
        KeyStore.open(tmp_path / "ks", backend="keyring", clock=clock).open_envelope(sealed)
    native.delete_password(service, "_store/v1")
    with pytest.raises(KeyNotFound):  # the store's own secret is gone: refuse, never recreate
        KeyStore.open(tmp_path / "ks", backend="keyring", clock=clock)


@needs_secret_service
def test_keyring_exceptions_are_translated(
    monkeypatch: pytest.MonkeyPatch, secret_service: OwnCollection
) -> None:
    import keyring.errors
    import secretstorage.exceptions

    backend = KeyringBackend(os.urandom(16).hex())
    secret = b"\x01" * 32
    raised: list[Exception] = []

    def failing(*args: object) -> None:
        raise raised[-1]

    monkeypatch.setattr(backend._kr, "get_password", failing)
    monkeypatch.setattr(backend._kr, "set_password", failing)
    locked = [
        keyring.errors.KeyringLocked("Failed to unlock the collection!"),  # prompt dismissed
        secretstorage.exceptions.LockedException("collection is locked"),  # locked mid-call
    ]
    for exc in locked:
        raised.append(exc)
        with pytest.raises(KeyringUnavailable) as info:
            backend.get("alice", 1)
        assert str(info.value) == "the OS keyring is locked"
        assert info.value.__cause__ is exc
        with pytest.raises(KeyringUnavailable, match=r"^the OS keyring is locked$"):
            backend.put("alice", 1, secret)
    raised.append(keyring.errors.InitError("Failed to create the collection: Prompt dismissed."))
    with pytest.raises(KeyringUnavailable, match="no usable collection"):
        backend.get("alice", 1)
    raised.append(secretstorage.exceptions.ItemNotFoundException("gone"))
    with pytest.raises(KeyStoreError, match="read failed: ItemNotFoundException") as other:
        backend.get("alice", 1)
    assert not isinstance(other.value, KeyringUnavailable)
    with pytest.raises(KeyStoreError, match="write failed: ItemNotFoundException"):
        backend.put("alice", 1, secret)


@needs_secret_service
def test_a_really_locked_keyring(
    tmp_path: Path, clock: FakeClock, secret_service: OwnCollection
) -> None:
    """The collection locked for real: keyring asks for an unlock prompt that nobody can answer
    (no display) and gets it dismissed. Every operation stops with KeyringUnavailable, nothing
    is written elsewhere, and it all works again once the collection is unlocked."""
    ks = KeyStore.open(tmp_path / "ks", backend="keyring", clock=clock)
    ks.generate("alice")
    sealed = ks.seal(small_map(), to=["alice"])
    meta_before = (tmp_path / "ks" / "keystore.json").read_bytes()
    fresh = KeyStore.open(tmp_path / "ks", backend="keyring", clock=clock)  # no seed read yet
    secret_service.lock()
    with keyring_leaks_connections():
        with pytest.raises(KeyringUnavailable) as opening:
            KeyStore.open(tmp_path / "ks", backend="keyring", clock=clock)
        assert str(opening.value) == "the OS keyring is locked"
        with pytest.raises(KeyringUnavailable, match="locked"):
            ks.generate("bob")  # the new secret is refused before any metadata names it
        with pytest.raises(KeyringUnavailable, match="locked"):
            fresh.open_envelope(sealed)  # alice's seed must come from the keyring now
        with pytest.raises(KeyringUnavailable, match="locked"):
            KeyStore.open(tmp_path / "new", backend="keyring", clock=clock)
        del opening
    assert (tmp_path / "ks" / "keystore.json").read_bytes() == meta_before
    assert not (tmp_path / "new" / "keystore.json").exists()  # no half-made store
    secret_service.unlock()
    reopened = KeyStore.open(tmp_path / "ks", backend="keyring", clock=clock)
    assert reopened.open_envelope(sealed).to_bytes() == small_map().to_bytes()
    assert "bob" not in reopened.identities and reopened.audit.verify().ok
