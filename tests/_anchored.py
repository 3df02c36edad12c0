"""Key stores on the two backends that keep a rollback anchor, for tests that run on both.

``anchored`` (``from _anchored import anchored_fixture`` registers it) is parametrized over
``pkcs11`` (the real SoftHSM token of ``tests/_softhsm.py``, configured through the
``PQSELFENC_PKCS11_*`` variables) and ``keyring`` (the real gnome-keyring Secret Service that
scripts/test.sh starts, in the tests' own collection). ``anchored.open(path)`` opens a
``KeyStore`` on it with the fake clock; every store it opened is closed after the test, and the
test then must have given back every token session.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _keys_support import SECRET_SERVICE, FakeClock, needs_secret_service
from _softhsm import SoftHsm

from pqselfenc.error import Error
from pqselfenc.keys import KeyringBackend, KeyStore, _pkcs11
from pqselfenc.keys import _metadata as M
from pqselfenc.keys._anchor import Anchor
from pqselfenc.keys.pkcs11_backend import Pkcs11Backend

TESTS = Path(__file__).resolve().parent
ANCHORED = ["pkcs11", pytest.param("keyring", marks=[pytest.mark.keyring, needs_secret_service])]


@dataclass
class Anchored:
    """One anchored backend: how to open stores on it, here and in child processes."""

    kind: str
    clock: FakeClock
    hsm: SoftHsm | None = None
    opened: list[KeyStore] = field(default_factory=list)

    def open(self, path: Path, **kw: Any) -> KeyStore:
        """A store on this backend (closed after the test)."""
        kw.setdefault("clock", self.clock)
        store = KeyStore.open(path, backend=self.kind, **kw)
        self.opened.append(store)
        return store

    def holder(self, directory: Path) -> Any:
        """A fresh anchor holder of the store in ``directory`` (close it if it has ``close``)."""
        meta = M.read_metadata(directory / "keystore.json", None)
        if self.kind == "keyring":
            return KeyringBackend(meta.store_id)
        assert meta.token_key is not None
        key_id = bytes.fromhex(meta.token_key.key_id)
        return Pkcs11Backend.open(directory, meta.store_id, key_id=key_id)

    def anchor(self, directory: Path) -> Anchor | None:
        """The anchor of the store in ``directory`` as its holder has it now."""
        holder = self.holder(directory)
        try:
            anchor: Anchor | None = holder.read_anchor()
            return anchor
        finally:
            if isinstance(holder, Pkcs11Backend):
                holder.close()

    def env(self) -> dict[str, str]:
        """A child process's environment: this backend's variables, the tests on the path."""
        env = dict(self.hsm.env() if self.hsm is not None else os.environ)
        env["PYTHONPATH"] = f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
        return env

    def child(self, code: str, *args: str) -> subprocess.Popen[str]:
        """``code`` in a child process (``KIND`` is this backend's name there)."""
        prelude = f"KIND = {self.kind!r}\n"
        return subprocess.Popen(
            [sys.executable, "-c", prelude + textwrap.dedent(code), *args], env=self.env(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def run(self, code: str, *args: str, timeout: float = 240) -> str:
        """``child``, waited for; it must succeed. Its stdout."""
        proc = self.child(code, *args)
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err[-4000:]
        return out


@pytest.fixture(params=ANCHORED, name="anchored")
def anchored_fixture(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> Iterator[Anchored]:
    """Stores on the pkcs11 token or in the OS keyring (see the module docstring)."""
    if request.param == "pkcs11":
        hsm: SoftHsm = request.getfixturevalue("softhsm")
        for name, value in hsm.env().items():
            if name.startswith("PQSELFENC_PKCS11_"):
                monkeypatch.setenv(name, value)
        backend = Anchored("pkcs11", clock, hsm)
    else:
        assert SECRET_SERVICE
        request.getfixturevalue("secret_service")
        backend = Anchored("keyring", clock)
    yield backend
    for store in backend.opened:
        with suppress(Error):  # a store a test rolled back refuses its checkpoint: fine here
            store.close()  # the backend (the token session) is closed whatever happens
    assert _pkcs11._OPEN == {}, "a test left a PKCS#11 session open"
