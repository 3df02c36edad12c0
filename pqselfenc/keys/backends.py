"""Where secrets live: the ``SecretBackend`` protocol and the passphrase-protected file backend.

A secret is addressed by ``(name, version)``. The key store writes a secret before the metadata
that refers to it, so a crash leaves at worst an orphan secret, never an entry without one.
The OS keyring backend is in ``pqselfenc.keys.keyring_backend``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pqselfenc.core import _durable
from pqselfenc.core import _primitives as P
from pqselfenc.error import IntegrityError, InvalidDataError, KeyNotFound, KeyStoreError
from pqselfenc.keys._entropy import check_passphrase
from pqselfenc.keys._vault import passphrase_decrypt, passphrase_encrypt

__all__ = ["FileBackend", "SecretBackend"]

_FILE_HEAD = struct.Struct(">8sB")
_VERSION = struct.Struct(">I")


def _read_key_file(path: Path) -> bytes:
    """A secret or vault file: regular, never through a link, bounded; ``FileNotFoundError``
    if absent, ``KeyStoreError`` for anything else that stops the read."""
    try:
        return _durable.read_file(path, limit=P.MAX_SECRET_FILE_SIZE)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise KeyStoreError(f"cannot read {_durable.describe(exc)}") from exc


def _write_key_file(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data`` (0600 from the first byte, durable)."""
    try:
        _durable.replace_file(path, data)
    except OSError as exc:
        raise KeyStoreError(f"cannot write {path.name}: {exc.strerror}") from exc


@runtime_checkable
class SecretBackend(Protocol):
    """Stores small secrets (seeds) by ``(name, version)``."""

    kind: str

    def put(self, name: str, version: int, secret: bytes) -> None:
        """Store (or replace) one secret durably."""

    def get(self, name: str, version: int) -> bytes:
        """The secret; ``KeyNotFound`` if there is none."""

    def delete(self, name: str, version: int) -> bool:
        """Remove the secret (overwriting what can be overwritten); False if it was absent."""


class FileBackend:
    """Secrets in files, each AES-256-GCM encrypted under a vault key.

    The random 32-byte vault key is itself wrapped under argon2id(passphrase) in ``vault.key``,
    so argon2 runs once per ``open``. Every file is 0600 and written atomically.
    """

    kind = "file"

    def __init__(self, directory: Path, vault_key: bytes) -> None:
        if len(vault_key) != P.VAULT_KEY_SIZE:
            raise ValueError("vault key must be 32 bytes")
        self._dir = Path(directory)
        self._aead = AESGCM(P.hkdf_sha3(vault_key, info=P.KEY_FILE_LABEL))

    def __repr__(self) -> str:
        return f"FileBackend({str(self._dir)!r})"

    @classmethod
    def open(cls, directory: Path, passphrase: str, *, min_passphrase_bits: int) -> FileBackend:
        """Unlock the vault in ``directory``, creating it (after a strength check) if absent."""
        if not isinstance(passphrase, str):
            raise TypeError("passphrase must be a str")
        directory = Path(directory)
        header = directory / "vault.key"
        if header.exists():
            blob = _read_key_file(header)
            return cls(
                directory, passphrase_decrypt(P.VAULT_MAGIC, P.VAULT_WRAP_LABEL, blob, passphrase)
            )
        check_passphrase(passphrase, min_passphrase_bits)
        (directory / "secrets").mkdir(mode=0o700, parents=True, exist_ok=True)
        vault_key = os.urandom(P.VAULT_KEY_SIZE)
        _write_key_file(
            header, passphrase_encrypt(P.VAULT_MAGIC, P.VAULT_WRAP_LABEL, vault_key, passphrase)
        )
        return cls(directory, vault_key)

    def _path(self, name: str, version: int) -> Path:
        return self._dir / "secrets" / f"{name}.v{version}.key"

    def _aad(self, header: bytes, name: str, version: int) -> bytes:
        return P.KEY_FILE_LABEL + header + name.encode() + b"\x00" + _VERSION.pack(version)

    def put(self, name: str, version: int, secret: bytes) -> None:
        """Encrypt ``secret`` under the vault key (AAD binds name and version) and write it
        atomically to ``secrets/NAME.vN.key``."""
        header = _FILE_HEAD.pack(P.KEY_FILE_MAGIC, P.KEY_FILE_VERSION)
        nonce = os.urandom(P.GCM_NONCE_SIZE)
        body = self._aead.encrypt(nonce, secret, self._aad(header, name, version))
        (self._dir / "secrets").mkdir(mode=0o700, exist_ok=True)
        _write_key_file(self._path(name, version), header + nonce + body)

    def get(self, name: str, version: int) -> bytes:
        """The decrypted secret: ``KeyNotFound`` without a file, ``InvalidDataError`` for a
        malformed one, ``IntegrityError`` if it fails authentication (e.g. another name's file)."""
        try:
            blob = _read_key_file(self._path(name, version))
        except FileNotFoundError as exc:
            raise KeyNotFound(f"no secret for {name} v{version} in the file backend") from exc
        head = _FILE_HEAD.size
        if len(blob) < head + P.GCM_NONCE_SIZE + P.TAG_SIZE or blob[:head] != _FILE_HEAD.pack(
            P.KEY_FILE_MAGIC, P.KEY_FILE_VERSION
        ):
            raise InvalidDataError(f"key file of {name} v{version} is malformed")
        nonce, body = blob[head : head + P.GCM_NONCE_SIZE], blob[head + P.GCM_NONCE_SIZE :]
        try:
            return self._aead.decrypt(nonce, body, self._aad(blob[:head], name, version))
        except InvalidTag as exc:
            raise IntegrityError(f"key file of {name} v{version} failed authentication") from exc

    def delete(self, name: str, version: int) -> bool:
        """Overwrite the file with zeros, then unlink it (best effort: see threat-model/keys.md);
        False if it was absent. A link or a hard link under the name is only unlinked."""
        path = self._path(name, version)
        try:
            return _durable.wipe_file(path)
        except OSError as exc:
            raise KeyStoreError(f"cannot wipe {path.name}: {exc.strerror}") from exc


def change_passphrase(
    directory: Path,
    old: str,
    new: str,
    *,
    min_passphrase_bits: int,
    before_commit: Callable[[], None] = lambda: None,
) -> None:
    """Rewrap the vault key under ``new`` (the secret files stay as they are).

    ``before_commit`` runs after both passphrases are checked, just before the new header is
    written (the key store records its audit event there).
    """
    header = Path(directory) / "vault.key"
    try:
        blob = _read_key_file(header)
    except FileNotFoundError as exc:
        raise KeyStoreError("no vault.key in this directory") from exc
    vault_key = passphrase_decrypt(P.VAULT_MAGIC, P.VAULT_WRAP_LABEL, blob, old)
    check_passphrase(new, min_passphrase_bits)
    before_commit()
    _write_key_file(header, passphrase_encrypt(P.VAULT_MAGIC, P.VAULT_WRAP_LABEL, vault_key, new))
