"""Secrets in the OS keyring, pinned to a native backend (Secret Service on Linux).

``keyring`` picks a backend by priority and may silently end up with a plaintext file
(``keyrings.alt``) or the ``fail`` backend. This module never lets it choose: it instantiates the
platform's native backend itself, or checks a backend handed to it against an allowlist, and
raises ``KeyringUnavailable`` rather than fall back.
"""

from __future__ import annotations

import base64
import binascii
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from pqselfenc.core import _primitives as P
from pqselfenc.error import Error, InvalidDataError, KeyNotFound, KeyringUnavailable, KeyStoreError
from pqselfenc.keys._anchor import Anchor, advances

__all__ = ["SECURE_BACKENDS", "KeyringBackend", "native_keyring"]

# (module, class) of every backend allowed to hold key seeds: each keeps secrets encrypted
# under the user's login and never in a plaintext file. On Linux only the Secret Service.
SECURE_BACKENDS = {
    "linux": ("keyring.backends.SecretService", "Keyring"),
    "darwin": ("keyring.backends.macOS", "Keyring"),
    "win32": ("keyring.backends.Windows", "WinVaultKeyring"),
}

T = TypeVar("T")
LOCKED = "the OS keyring is locked"


def _is_secure(backend: object) -> bool:
    cls = type(backend)
    return (cls.__module__, cls.__qualname__) in SECURE_BACKENDS.values()


def _locked_classes() -> tuple[type[Exception], ...]:
    """keyring's "locked", and secretstorage's (raised when a collection locks mid-call)."""
    from keyring.errors import KeyringLocked  # lazy: keyring loads only when a keyring is used

    try:
        from secretstorage.exceptions import LockedException
    except ImportError:  # not Linux: no Secret Service
        return (KeyringLocked,)
    return (KeyringLocked, LockedException)


def _translate(exc: Exception, what: str) -> KeyStoreError:
    """Our error for what the keyring library raised: ``KeyringUnavailable`` when the keyring
    is locked (the user dismissed, or nobody can answer, the unlock prompt) or its collection
    cannot be opened; else ``KeyStoreError``. Only class names go into messages."""
    from keyring.errors import InitError  # lazy, as above

    if isinstance(exc, _locked_classes()):
        return KeyringUnavailable(LOCKED)
    if isinstance(exc, InitError):
        return KeyringUnavailable("the OS keyring has no usable collection (InitError)")
    return KeyStoreError(f"OS keyring {what} failed: {type(exc).__name__}")


def native_keyring(platform: str = sys.platform) -> Any:
    """The platform's native keyring backend, checked to be usable; else ``KeyringUnavailable``."""
    if platform not in SECURE_BACKENDS:
        raise KeyringUnavailable(f"no secure OS keyring is known for platform {platform!r}")
    module, name = SECURE_BACKENDS[platform]
    try:
        mod = __import__(module, fromlist=[name])
        cls = getattr(mod, name)
        available = cls.priority > 0
    except Exception as exc:  # keyring raises RuntimeError/ImportError/D-Bus errors here
        raise KeyringUnavailable(f"the OS keyring ({module}) is not usable: {exc}") from exc
    if not available:
        raise KeyringUnavailable(f"the OS keyring ({module}) is not usable")
    return cls()


class KeyringBackend:
    """Stores each seed base64-encoded under service ``pqselfenc/<store id>``, user ``name/vN``;
    the store's rollback anchor (``keys/_anchor.py``) under service ``pqselfenc-anchor``, user
    ``<store id>``, as the base64 of its record."""

    kind = "keyring"

    def __init__(self, store_id: str, keyring: Any = None) -> None:
        backend = native_keyring() if keyring is None else keyring
        if not _is_secure(backend):
            cls = type(backend)
            raise KeyringUnavailable(
                f"refusing keyring backend {cls.__module__}.{cls.__qualname__}: only a native OS"
                " keyring is allowed (no plaintext or fail backend, no silent fallback)"
            )
        self._kr = backend
        self._store_id = store_id
        self._service = f"pqselfenc/{store_id}"

    def __repr__(self) -> str:
        return f"KeyringBackend({self._service!r}, {type(self._kr).__module__})"

    def _call(self, fn: Callable[[], T], what: str) -> T:
        try:
            return fn()
        except Error:
            raise
        except Exception as exc:  # keyring, secretstorage and jeepney raise many types
            raise _translate(exc, what) from exc

    def put(self, name: str, version: int, secret: bytes) -> None:
        """Store ``secret`` (base64) as user ``NAME/vN`` of this store's service (replacing)."""
        text = base64.b64encode(secret).decode("ascii")
        user = f"{name}/v{version}"
        self._call(lambda: self._kr.set_password(self._service, user, text), "write")

    def get(self, name: str, version: int) -> bytes:
        """The secret: ``KeyNotFound`` if the keyring has none, ``InvalidDataError`` if the entry
        is not base64, ``KeyringUnavailable`` if the keyring is locked."""
        user = f"{name}/v{version}"
        text = self._call(lambda: self._kr.get_password(self._service, user), "read")
        if text is None:
            raise KeyNotFound(f"no secret for {name} v{version} in the OS keyring")
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidDataError(f"keyring entry of {name} v{version} is malformed") from exc

    def delete(self, name: str, version: int) -> bool:
        """Remove the keyring entry; False if it was absent (the keyring decides how it erases)."""
        user = f"{name}/v{version}"
        if self._call(lambda: self._kr.get_password(self._service, user), "read") is None:
            return False
        self._call(lambda: self._kr.delete_password(self._service, user), "delete")
        return True

    # -- rollback anchor -------------------------------------------------------------------

    @property
    def anchor_location(self) -> str:
        """Where the anchor is, for messages."""
        return f"the OS keyring (service {P.ANCHOR_KEYRING_SERVICE!r}, user {self._store_id!r})"

    def read_anchor(self) -> Anchor | None:
        """The anchor entry, or None; ``InvalidDataError`` if it does not parse."""
        service, user = P.ANCHOR_KEYRING_SERVICE, self._store_id
        text = self._call(lambda: self._kr.get_password(service, user), "anchor read")
        if text is None:
            return None
        try:
            record = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidDataError("the OS keyring's anchor entry is malformed") from exc
        return Anchor.decode(record, self._store_id)

    def write_anchor(self, anchor: Anchor) -> None:
        """Replace the anchor entry (the caller holds the store lock): ``IntegrityError`` if
        ``anchor`` is behind the entry or forks it; the same anchor again writes nothing."""
        if not isinstance(anchor, Anchor):
            raise TypeError("anchor must be an Anchor")
        if not advances(self.read_anchor(), anchor):
            return
        text = base64.b64encode(anchor.encode(self._store_id)).decode("ascii")
        service, user = P.ANCHOR_KEYRING_SERVICE, self._store_id
        self._call(lambda: self._kr.set_password(service, user, text), "anchor write")

    def delete_anchor(self) -> int:
        """Remove the anchor entry (an audited reset); 1 if there was one, else 0."""
        service, user = P.ANCHOR_KEYRING_SERVICE, self._store_id
        if self._call(lambda: self._kr.get_password(service, user), "anchor read") is None:
            return 0
        self._call(lambda: self._kr.delete_password(service, user), "anchor delete")
        return 1
