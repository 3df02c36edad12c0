"""Opening a store: create it, or unlock it and settle what a crash left; the parts it is made of.

``open_parts`` returns the ``StoreParts`` that ``KeyStore`` composes: the ledger (lock, metadata,
audit log), the secrets (backend, key pairs) and the store secret. Order on creation: the store
secret is written before the metadata that names it. Order on reopening: keystore.json is read
unauthenticated only to find the secret (its backend, the store id naming it in a keyring, the
audit key's algorithm); the same bytes are MAC-checked before anything else is trusted or written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from pqselfenc.core._durable import check_private_directory
from pqselfenc.error import KeyStoreError
from pqselfenc.keys import _metadata as M
from pqselfenc.keys._audit_format import Verifier
from pqselfenc.keys._destroy import finish_destroys
from pqselfenc.keys._ledger import METADATA_NAME, Clock, Ledger, store_lock
from pqselfenc.keys._material import StoreSecret
from pqselfenc.keys._metadata import Metadata
from pqselfenc.keys._secrets import Secrets
from pqselfenc.keys.audit import AuditLog, AuditReport
from pqselfenc.keys.backends import FileBackend, SecretBackend
from pqselfenc.keys.config import KeyConfig
from pqselfenc.keys.keyring_backend import KeyringBackend

__all__ = ["OpenRequest", "StoreParts", "open_parts", "read_only_audit", "verify_audit"]


@dataclass(frozen=True)
class OpenRequest:
    """How to open a store: where, its policy, which backend (and its passphrase or keyring),
    the clock, and who acts in the audit log."""

    directory: Path
    config: KeyConfig
    backend: str
    passphrase: str | None = field(repr=False)
    clock: Clock
    actor: str
    keyring: Any = None


@dataclass(frozen=True)
class StoreParts:
    """An open store's parts, which ``KeyStore`` composes."""

    directory: Path
    config: KeyConfig
    ledger: Ledger
    secrets: Secrets
    secret: StoreSecret  # the root of convergence secrets, the MAC key and the audit key


def _backend(request: OpenRequest, store_id: str) -> SecretBackend:
    if request.backend == "keyring":
        return KeyringBackend(store_id, request.keyring)
    assert request.passphrase is not None
    bits = request.config.min_passphrase_bits
    return FileBackend.open(request.directory, request.passphrase, min_passphrase_bits=bits)


def _secrets(request: OpenRequest, store_id: str) -> Secrets:
    return Secrets(_backend(request, store_id), min_entropy=request.config.min_entropy)


def _ledger(request: OpenRequest, lock: FileLock, secret: StoreSecret) -> Ledger:
    directory, mac_key = request.directory, secret.metadata_mac_key()
    audit = AuditLog(
        directory,
        clock=request.clock,
        signer=secret.audit_key,
        verifier=secret.audit_key.verifying_key(),
        checkpoint_every=request.config.checkpoint_every,
        actor=request.actor,
        mac_key=secret.audit_mac_key(),
        lock=lock,
        committed=lambda: M.read_committed(directory, mac_key),
    )
    return Ledger(directory, lock=lock, mac_key=mac_key, audit=audit, clock=request.clock)


def _refuse_a_lost_store(directory: Path) -> None:
    """``KeyStoreError`` if an audit log is here without keystore.json: a store was here (its
    keystore.json was deleted or lost), and creating a new one would replace its secret."""
    try:
        size = os.lstat(directory / "audit.jsonl").st_size
    except FileNotFoundError:
        return
    if size > 0:
        raise KeyStoreError(
            f"{directory} holds an audit log but no keystore.json: a key store was here. "
            "Restore its keystore.json from a backup, or move the folder aside to start anew"
        )


def _create(request: OpenRequest, lock: FileLock) -> StoreParts:
    _refuse_a_lost_store(request.directory)
    now, store_id = request.clock(), os.urandom(16).hex()
    secrets = _secrets(request, store_id)
    secret = secrets.create_store_secret(request.config.signature)  # before the metadata
    ledger = _ledger(request, lock, secret)
    audit_key = str(secret.audit_key.verifying_key())
    meta = Metadata(store_id=store_id, backend=request.backend, created=now, audit_key=audit_key)
    ledger.create(meta, key_id=secret.audit_key.key_id.hex(), detail=request.backend)
    return StoreParts(request.directory, request.config, ledger, secrets, secret)


def _reopen(request: OpenRequest, lock: FileLock) -> StoreParts:
    raw = M.read_bytes(request.directory / METADATA_NAME)
    unverified = M.from_json(raw, None)  # only to find the secret: see the module docstring
    if unverified.backend != request.backend:
        raise KeyStoreError(f"this store keeps its secrets in the {unverified.backend} backend")
    secrets = _secrets(request, unverified.store_id)
    secret = secrets.store_secret(unverified.audit_key)
    ledger = _ledger(request, lock, secret)
    create = {"key_id": secret.audit_key.key_id.hex(), "detail": request.backend}
    ledger.recover(ledger.authenticate(raw), **create)  # IntegrityError: nothing written
    finish_destroys(ledger, secrets)  # a delete that fails is recorded, never blocks the open
    return StoreParts(request.directory, request.config, ledger, secrets, secret)


def verify_audit(request: OpenRequest, trusted_key: Verifier | None = None) -> AuditReport:
    """The audit report of the store of ``request``, without opening it for use: the secret is
    unlocked only to check keystore.json's MAC and the line MACs; nothing is recovered,
    upgraded, deleted or appended, so a damaged log is reported, never refused."""
    return read_only_audit(request).verify(trusted_key)


def read_only_audit(request: OpenRequest) -> AuditLog:
    """The audit log of the store of ``request``, unlocked only to check MACs (what
    ``verify_audit`` and the audit export read): nothing is recovered, upgraded or deleted, and
    the caller appends nothing to it."""
    raw = M.read_bytes(request.directory / METADATA_NAME)
    unverified = M.from_json(raw, None)
    if unverified.backend != request.backend:
        raise KeyStoreError(f"this store keeps its secrets in the {unverified.backend} backend")
    secret = _secrets(request, unverified.store_id).store_secret(unverified.audit_key)
    ledger = _ledger(request, store_lock(request.directory), secret)
    ledger.audit.require_macs_from(ledger.authenticate(raw).audit_mac_from)
    return ledger.audit


def open_parts(request: OpenRequest) -> StoreParts:
    """Open (or create) the store of ``request``, under its lock."""
    request.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_private_directory(request.directory, KeyStoreError, subfolders=("secrets",))
    lock = store_lock(request.directory)
    with lock:
        if (request.directory / METADATA_NAME).exists():
            return _reopen(request, lock)
        return _create(request, lock)
