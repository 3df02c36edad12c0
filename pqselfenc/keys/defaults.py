"""The default key store: where it lives and which backend keeps its secrets.

``KeyStore(config)`` and the ``pqselfenc`` command share this one choice. The store is
``HOME/keys``, with ``HOME`` as ``pqselfenc.core.stores.default.default_home`` says
(``$PQSELFENC_HOME``, else ``$XDG_DATA_HOME/pqselfenc``, else ``~/.local/share/pqselfenc``).
An existing store reopens with the backend it was created with; a new one goes into the OS
keyring when a secure one is usable, else into the passphrase-protected file backend (a PKCS#11
token only when asked for by name: ``pkcs11``). The keyring is the native one, or the one
``$PYTHON_KEYRING_BACKEND`` names (checked against the allowlist: never a plaintext file). The
library reads the file backend's passphrase from ``$PQSELFENC_PASSPHRASE`` and the token's module,
label and PIN from ``$PQSELFENC_PKCS11_MODULE``, ``..._TOKEN``, ``..._PIN``; the command adds
``--backend``, ``--passphrase-file``, ``--pin-file`` and prompts.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pqselfenc.core.stores.default import default_home
from pqselfenc.error import KeyringUnavailable, KeyStoreError
from pqselfenc.keys import _metadata as M
from pqselfenc.keys._folder import check_store_folder
from pqselfenc.keys._ledger import METADATA_NAME
from pqselfenc.keys.keyring_backend import KeyringBackend

__all__ = [
    "BACKEND_LABELS",
    "KEYRING_ENV",
    "PASSPHRASE_ENV",
    "BackendChoice",
    "DefaultKeyStore",
    "choose_backend",
    "default_key_store",
    "existing_backend",
    "key_store_path",
    "probe_keyring",
    "user_keyring",
]

PASSPHRASE_ENV = "PQSELFENC_PASSPHRASE"  # noqa: S105 (the name of a variable, not a value)
KEYRING_ENV = "PYTHON_KEYRING_BACKEND"
BACKEND_LABELS = {"keyring": "OS keyring", "file": "passphrase-protected file",
                  "pkcs11": "PKCS#11 token"}  # fmt: skip
_LOG = logging.getLogger("pqselfenc")


def key_store_path(home: str | os.PathLike[str] | None = None) -> Path:
    """The default key store's folder: ``HOME/keys`` (``home`` overrides the default home)."""
    return default_home(home) / "keys"


def existing_backend(path: str | os.PathLike[str]) -> str | None:
    """The backend of the store at ``path``, or None when there is none yet.

    Reads only the (non-secret, unauthenticated) metadata; ``InvalidDataError`` if it does not
    parse. ``KeyStore.open`` checks the answer against the MACed metadata. ``KeyStoreError``,
    before anything is read, if the folder is not private (``keys/_folder.py``).
    """
    check_store_folder(Path(path))
    try:
        return M.read_metadata(Path(path) / METADATA_NAME, None).backend
    except FileNotFoundError:
        return None


def user_keyring() -> Any:
    """The keyring ``$PYTHON_KEYRING_BACKEND`` names, else None (the native one).

    Loaded afresh each time (never keyring's process-wide default). The key store checks it
    against its allowlist and refuses a plaintext or fail backend.
    """
    name = os.environ.get(KEYRING_ENV)
    if not name:
        return None
    from keyring.core import load_keyring  # lazy: keyring loads only when a keyring is used

    try:
        return load_keyring(name)
    except Exception as exc:  # keyring raises whatever loading or probing the backend raised
        reason = type(exc).__name__
        raise KeyringUnavailable(f"{KEYRING_ENV}={name} does not load: {reason}") from exc


def probe_keyring() -> None:
    """``KeyringUnavailable`` unless a secure OS keyring is usable now."""
    KeyringBackend("probe", user_keyring())


@dataclass(frozen=True)
class BackendChoice:
    """The backend to open a store with: ``kind`` (``"keyring"``, ``"file"``, ``"pkcs11"``),
    whether the store ``exists`` already, and for a new store on the file backend by fallback,
    why the keyring was not usable (``fallback``)."""

    kind: str
    exists: bool
    fallback: str | None = None


def choose_backend(path: str | os.PathLike[str], wanted: str = "auto") -> BackendChoice:
    """The backend for the store at ``path``: an existing store's own (``KeyStoreError`` if
    ``wanted`` names another); for a new one ``wanted``, or with ``"auto"`` the OS keyring when
    a secure one is usable, else the file backend."""
    if wanted != "auto" and wanted not in M.BACKENDS:
        raise ValueError(f"backend must be 'auto' or {' or '.join(map(repr, M.BACKENDS))}")
    existing = existing_backend(path)
    if existing is not None:
        if wanted not in ("auto", existing):
            label = BACKEND_LABELS[existing]
            raise KeyStoreError(f"the key store in {Path(path)} keeps its keys in the {label}")
        return BackendChoice(existing, True)
    if wanted != "auto":
        return BackendChoice(wanted, False)
    try:
        probe_keyring()
    except KeyringUnavailable as exc:
        return BackendChoice("file", False, str(exc))
    return BackendChoice("keyring", False)


@dataclass(frozen=True)
class DefaultKeyStore:
    """Where and how ``KeyStore(config)`` opens the default store: its ``path``, ``backend``,
    the file backend's ``passphrase`` (never printed) and the ``keyring`` to use."""

    path: Path
    backend: str
    passphrase: str | None = field(repr=False)
    keyring: Any = None


def default_key_store(home: str | os.PathLike[str] | None = None) -> DefaultKeyStore:
    """Choose how to open the default key store, as the command does without options.

    ``KeyringUnavailable`` (a new store, no secure keyring) or ``KeyStoreError`` (a file-backend
    store) when the file backend is needed and ``$PQSELFENC_PASSPHRASE`` is not set. The choice
    is logged (logger ``pqselfenc``): the store at INFO, a fallback to the file backend at
    WARNING.
    """
    path = key_store_path(home)
    choice = choose_backend(path)
    passphrase = _passphrase(path, choice) if choice.kind == "file" else None
    if choice.fallback is not None:
        _LOG.warning("no secure OS keyring (%s); keeping keys in the passphrase-protected file "
                     "backend in %s", choice.fallback, path)  # fmt: skip
    keyring = user_keyring() if choice.kind == "keyring" else None
    _LOG.info("key store %s (%s)", path, BACKEND_LABELS[choice.kind])
    return DefaultKeyStore(path, choice.kind, passphrase, keyring)


def _passphrase(path: Path, choice: BackendChoice) -> str:
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value
    remedy = (f"set {PASSPHRASE_ENV}, or open a store yourself with "
              "KeyStore.open(path, backend='file', passphrase=...)")  # fmt: skip
    if choice.exists:
        raise KeyStoreError(f"the key store in {path} keeps its keys in the passphrase-protected "
                            f"file backend and no passphrase was given: {remedy}")  # fmt: skip
    raise KeyringUnavailable(f"no secure OS keyring ({choice.fallback}) and no passphrase for the "
                             f"file backend in {path}: {remedy}")  # fmt: skip
