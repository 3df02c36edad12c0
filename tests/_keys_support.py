"""Helpers for the key store tests: an injected clock, a small DataMap, the tests' own Secret
Service collection. The fixtures built on them are in conftest.py."""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import os
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pqselfenc import DataMap, SelfEncryptor
from pqselfenc.keys import KeyStore

PASSPHRASE = "gravel orbit candle mosaic tundra"
START = datetime(2026, 1, 1, tzinfo=UTC)


class FakeClock:
    """A clock the test moves by hand: rotation and audit never sleep."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


def small_map(data: bytes = b"the quick brown fox jumps over the lazy dog" * 50) -> DataMap:
    return SelfEncryptor(data).encrypt()[0]


StoreFactory = Callable[..., KeyStore]  # the ``open_store`` fixture (conftest.py)


# -- the Secret Service: a collection of the tests' own ---------------------------------------

SECRET_SERVICE = os.environ.get("PQSELFENC_SECRET_SERVICE") == "1"
needs_secret_service = pytest.mark.skipif(
    not SECRET_SERVICE,
    reason="needs the real Secret Service that scripts/test.sh starts: run bash scripts/test.sh",
)
_GNOME_INTERNAL = "org.gnome.keyring.InternalUnsupportedGuiltRiddenInterface"
_COLLECTION_PASSWORD = b"pqselfenc-tests-collection"  # guards throwaway test items only


class OwnCollection:
    """A Secret Service collection that only these tests use, with a password they know.

    The default ("login") collection is the daemon's: gnome-keyring creates and unlocks it
    asynchronously, and when two daemons race at start-up (``--unlock`` then ``--start`` under
    load) the one that owns the bus has it locked, so every use asks for a prompt that no one
    can answer ("Prompt dismissed" -> ``KeyringLocked``). This collection is created and
    unlocked through gnome-keyring's prompt-free interface (``CreateWithMasterPassword``,
    ``UnlockWithMasterPassword``), so the tests never depend on the login collection's state;
    ``KEYRING_PROPERTY_PREFERRED_COLLECTION`` points keyring (in this process and in the CLI
    subprocesses, which inherit it) at it. ``lock()`` locks it for real.
    """

    def __init__(self, label: str) -> None:
        with self._bus() as (_, service, secret):
            props = {"org.freedesktop.Secret.Collection.Label": ("s", label)}
            (self.path,) = service.call("CreateWithMasterPassword", "a{sv}(oayays)", props, secret)

    @staticmethod
    @contextlib.contextmanager
    def _bus() -> Iterator[tuple[Any, Any, Any]]:
        import secretstorage
        from secretstorage.defines import SS_PATH
        from secretstorage.util import DBusAddressWrapper, format_secret, open_session

        connection = secretstorage.dbus_init()
        try:
            service = DBusAddressWrapper(SS_PATH, _GNOME_INTERNAL, connection)
            secret = format_secret(open_session(connection), _COLLECTION_PASSWORD, "text/plain")
            yield connection, service, secret
        finally:
            connection.close()

    def _collection(self, connection: Any) -> Any:
        import secretstorage

        return secretstorage.Collection(connection, self.path)

    def is_locked(self) -> bool:
        with self._bus() as (connection, _, _):
            return bool(self._collection(connection).is_locked())

    def lock(self) -> None:
        with self._bus() as (connection, _, _):
            self._collection(connection).lock()

    def unlock(self) -> None:
        with self._bus() as (connection, service, secret):
            service.call("UnlockWithMasterPassword", "o(oayays)", self.path, secret)
            assert not self._collection(connection).is_locked()

    def delete(self) -> None:
        if self.is_locked():
            self.unlock()
        with self._bus() as (connection, _, _):
            self._collection(connection).delete()


@functools.cache
def own_collection() -> OwnCollection:
    """This process's collection (created once, deleted when the process exits)."""
    collection = OwnCollection(f"pqselfenc-tests-{os.getpid()}")
    atexit.register(collection.delete)
    return collection


def use_own_collection(monkeypatch: pytest.MonkeyPatch) -> OwnCollection:
    """Make this process's collection keyring's preferred one (unlocked) for this test."""
    collection = own_collection()
    if collection.is_locked():
        collection.unlock()  # a previous test locked it on purpose
    monkeypatch.setenv("KEYRING_PROPERTY_PREFERRED_COLLECTION", collection.path)
    return collection


@contextlib.contextmanager
def keyring_leaks_connections() -> Iterator[None]:
    """Around calls that hit a locked keyring: collect the D-Bus connections keyring leaks then.

    ``keyring.backends.SecretService.Keyring.get_preferred_collection`` opens a connection and
    raises ``KeyringLocked`` without closing it; its socket's ``ResourceWarning`` would surface
    (an error under ``filterwarnings = error``) in whichever test the garbage collector happens
    to run in. The leak is keyring's, not pqselfenc's: inside this block only, that warning is
    ignored, and the leaked sockets are collected before the block ends.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            yield
        finally:
            gc.collect()


def rechain(events: list[dict[str, Any]], mac_key: bytes | None) -> bytes:
    """The bytes of an audit log holding ``events`` (edited as a test likes), each line re-hashed
    onto the one before and, with ``mac_key``, re-MACed: what an attacker without the key can do
    (``mac_key=None``: every ``mac`` is dropped) or what only the store's key allows."""
    import hashlib
    import hmac
    import json

    prev, out, offset = bytes(32), [], 0
    for event in events:
        body = {k: v for k, v in event.items() if k not in ("prev", "hash", "mac")}
        text = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        digest = hashlib.sha3_256(b"pqselfenc/v1/audit-chain" + prev + text).digest()
        line = dict(body, prev=prev.hex(), hash=digest.hex())
        if mac_key is not None:
            message = digest + offset.to_bytes(8, "big")  # the line's place in the log
            line["mac"] = hmac.new(mac_key, message, hashlib.sha3_256).hexdigest()
        out.append(json.dumps(line, sort_keys=True, separators=(",", ":")).encode() + b"\n")
        prev, offset = digest, offset + len(out[-1])
    return b"".join(out)
