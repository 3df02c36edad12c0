"""Fixtures shared by the test modules (pytest finds them here; nothing re-exports them).

Key store tests: ``clock`` (a hand-moved clock), ``open_store`` (file-backed stores on it).
Secret Service tests: ``secret_service`` and ``isolated_keyring`` (the tests' own keyring
collection, never the daemon's login one). Their helpers are in ``_keys_support.py``.
PKCS#11 tests: ``softhsm`` (two SoftHSM tokens for the whole session, ``_softhsm.py``).
Every test gets its own ``PQSELFENC_HOME`` (``_own_home``): the embedded defaults (a stream's
default chunk store, ``KeyStore(config)``) never touch the user's real pqselfenc home.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from _keys_support import (
    PASSPHRASE,
    SECRET_SERVICE,
    FakeClock,
    OwnCollection,
    StoreFactory,
    use_own_collection,
)
from _softhsm import softhsm_fixture  # noqa: F401  (one token pair per session, see _softhsm)

from pqselfenc.keys import KeyConfig, KeyStore


@pytest.fixture(autouse=True)
def _own_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``PQSELFENC_HOME`` per test (a test may set its own on top)."""
    home = tmp_path_factory.mktemp("pqselfenc-home")
    monkeypatch.setenv("PQSELFENC_HOME", str(home))
    return home


@pytest.fixture
def clock() -> FakeClock:
    """A clock the test moves by hand: rotation and audit never sleep."""
    return FakeClock()


@pytest.fixture
def open_store(tmp_path: Path, clock: FakeClock) -> StoreFactory:
    """``open_store(path=None, **config_overrides)``: a file-backed store (default
    ``tmp_path / "ks"``) with a 30-day rotation interval and the fake clock."""

    def factory(path: Path | None = None, **overrides: object) -> KeyStore:
        config = KeyConfig(rotation_interval=timedelta(days=30), **overrides)  # type: ignore[arg-type]
        return KeyStore.open(
            path or tmp_path / "ks", config=config, passphrase=PASSPHRASE, clock=clock
        )

    return factory


@pytest.fixture
def secret_service(monkeypatch: pytest.MonkeyPatch) -> OwnCollection:
    """The tests' own unlocked collection, made keyring's preferred one for this test (mark
    the test ``needs_secret_service``)."""
    if not SECRET_SERVICE:
        pytest.fail("secret_service needs PQSELFENC_SECRET_SERVICE=1 (run bash scripts/test.sh)")
    return use_own_collection(monkeypatch)


@pytest.fixture
def isolated_keyring(monkeypatch: pytest.MonkeyPatch) -> OwnCollection | None:
    """For modules whose tests may reach the keyring through ``--backend auto``: under
    scripts/test.sh they use the tests' own collection, never the login one; else nothing."""
    return use_own_collection(monkeypatch) if SECRET_SERVICE else None
