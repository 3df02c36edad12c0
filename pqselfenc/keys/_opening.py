"""Opening a store: create it, or unlock it and settle what a crash left; the parts it is made of.

``open_parts`` returns the ``StoreParts`` that ``KeyStore`` composes: the ledger (lock, metadata,
audit log, rollback anchor), the secrets (backend, key pairs) and the store secret. Order on
creation: the pkcs11 backend's token key, then the store secret, are made before the metadata
that names them (and removed again if the creation fails before keystore.json exists). Order on
reopening: keystore.json is read unauthenticated only to find the secret (its backend, the store
id naming it in a keyring or a token, the token key's id, the audit key's algorithm); the same
bytes are MAC-checked before anything else is trusted or written. The backends that hold a
rollback anchor (pkcs11: the token; keyring: the OS keyring) are also the ledger's anchor.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock

from pqselfenc.error import AuditError, Error, IntegrityError, KeyStoreError, RollbackError
from pqselfenc.keys import _metadata as M
from pqselfenc.keys._anchor import AnchorHolder
from pqselfenc.keys._audit_format import Verifier
from pqselfenc.keys._destroy import finish_destroys
from pqselfenc.keys._folder import check_store_folder, make_store_folder
from pqselfenc.keys._ledger import METADATA_NAME, Clock, Ledger, store_lock
from pqselfenc.keys._material import StoreSecret
from pqselfenc.keys._metadata import Metadata, TokenKey
from pqselfenc.keys._pkcs11 import ENV_TOKEN
from pqselfenc.keys._secrets import STORE_SECRET, Secrets
from pqselfenc.keys.audit import AuditExport, AuditLog, AuditReport, ExportState
from pqselfenc.keys.backends import FileBackend, SecretBackend
from pqselfenc.keys.config import KeyConfig
from pqselfenc.keys.keyring_backend import KeyringBackend
from pqselfenc.keys.pkcs11_backend import Pkcs11Backend

T = TypeVar("T")

__all__ = ["OpenRequest", "StoreParts", "export_audit", "open_parts", "verify_audit"]


@dataclass(frozen=True)
class OpenRequest:
    """How to open a store: where, its policy, which backend (and its passphrase, keyring, or
    token: PKCS#11 module path, token label and PIN, each None for its ``PQSELFENC_PKCS11_*``
    variable; an existing pkcs11 store's recorded token label before the variable), the clock,
    who acts in the audit log, and whether to accept the folder over its rollback anchor."""

    directory: Path
    config: KeyConfig
    backend: str
    passphrase: str | None = field(repr=False)
    clock: Clock
    actor: str
    keyring: Any = None
    pin: str | None = field(default=None, repr=False)
    module: str | None = None
    token: str | None = None
    reset_anchor: bool = False


@dataclass(frozen=True)
class StoreParts:
    """An open store's parts, which ``KeyStore`` composes."""

    directory: Path
    config: KeyConfig
    ledger: Ledger
    secrets: Secrets
    secret: StoreSecret  # the root of convergence secrets, the MAC key and the audit key


def _backend(request: OpenRequest, store_id: str, recorded: TokenKey | None = None,
             *, create: bool = False) -> SecretBackend:  # fmt: skip
    if request.backend == "keyring":
        return KeyringBackend(store_id, request.keyring)
    if request.backend == "pkcs11":
        token = request.token or os.environ.get(ENV_TOKEN)
        if not token and recorded is not None:
            token = recorded.token  # the token the store was created on
        key_id = bytes.fromhex(recorded.key_id) if recorded is not None else None
        return Pkcs11Backend.open(request.directory, store_id, module=request.module,
                                  token=token or None, pin=request.pin, create=create,
                                  key_id=key_id)  # fmt: skip
    assert request.passphrase is not None
    bits = request.config.min_passphrase_bits
    return FileBackend.open(request.directory, request.passphrase, min_passphrase_bits=bits)


def _secrets(request: OpenRequest, store_id: str, recorded: TokenKey | None = None,
             *, create: bool = False) -> Secrets:  # fmt: skip
    backend = _backend(request, store_id, recorded, create=create)
    per_use = backend.kind == "pkcs11"  # unwrap per use: see _secrets.py
    return Secrets(backend, min_entropy=request.config.min_entropy, cache=not per_use)


def _anchor_of(secrets: Secrets) -> AnchorHolder | None:
    """The backend itself when it keeps a rollback anchor (token, keyring), else None."""
    backend = secrets.backend
    return backend if isinstance(backend, Pkcs11Backend | KeyringBackend) else None


def _ledger(request: OpenRequest, lock: FileLock, secret: StoreSecret,
            anchor: AnchorHolder | None) -> Ledger:  # fmt: skip
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
    return Ledger(directory, lock=lock, mac_key=mac_key, audit=audit, clock=request.clock,
                  anchor=anchor)


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
    secrets = _secrets(request, store_id, create=True)
    try:
        secret = secrets.create_store_secret(request.config.signature)  # before the metadata
        ledger = _ledger(request, lock, secret, _anchor_of(secrets))
        meta = Metadata(store_id=store_id, backend=request.backend, created=now,
                        audit_key=str(secret.audit_key.verifying_key()))  # fmt: skip
        ledger.create(_with_anchor(meta, secrets), key_id=secret.audit_key.key_id.hex(),
                      detail=request.backend)  # fmt: skip
    except BaseException:
        _undo_creation(request.directory, secrets)
        raise
    return StoreParts(request.directory, request.config, ledger, secrets, secret)


def _with_anchor(meta: Metadata, secrets: Secrets) -> Metadata:
    """A new store's metadata names its anchor, and a pkcs11 store its token key."""
    backend = secrets.backend
    if isinstance(backend, Pkcs11Backend):
        key = TokenKey(backend.token_label, backend.key_label, backend.key_id.hex())
        return replace(meta, anchor="token", token_key=key)
    return replace(meta, anchor="keyring") if isinstance(backend, KeyringBackend) else meta


def _undo_creation(directory: Path, secrets: Secrets) -> None:
    """A creation that failed before keystore.json was written leaves nothing that names its
    secrets: remove them (store secret, anchor, token key) and close the backend. Best effort;
    once keystore.json exists the store is kept (``recover`` finishes it)."""
    backend = secrets.backend
    with suppress(Error, OSError):
        if not (directory / METADATA_NAME).exists():
            secrets.delete(*STORE_SECRET)
            if isinstance(backend, Pkcs11Backend | KeyringBackend):
                backend.delete_anchor()
            if isinstance(backend, Pkcs11Backend):
                backend.destroy_wrapping_key()
    with suppress(Error):
        secrets.close()


def _reopen(request: OpenRequest, lock: FileLock) -> StoreParts:
    raw = M.read_bytes(request.directory / METADATA_NAME)
    unverified = M.from_json(raw, None)  # only to find the secret: see the module docstring
    if unverified.backend != request.backend:
        raise KeyStoreError(f"this store keeps its secrets in the {unverified.backend} backend")
    secrets = _secrets(request, unverified.store_id, unverified.token_key)
    try:
        secret = secrets.store_secret(unverified.audit_key)
        ledger = _ledger(request, lock, secret, _anchor_of(secrets))
        create = {"key_id": secret.audit_key.key_id.hex(), "detail": request.backend}
        meta = ledger.authenticate(raw)  # IntegrityError: nothing written
        ledger.recover(meta, reset_anchor=request.reset_anchor, **create)
        finish_destroys(ledger, secrets)  # a delete that fails is recorded, never blocks open
    except BaseException:
        with suppress(Error):
            secrets.close()
        raise
    return StoreParts(request.directory, request.config, ledger, secrets, secret)


def verify_audit(request: OpenRequest, trusted_key: Verifier | None = None) -> AuditReport:
    """The audit report of the store of ``request``, without opening it for use: the secret is
    unlocked only to check keystore.json's MAC and the line MACs; nothing is recovered,
    upgraded, deleted or appended, so a damaged log is reported, never refused. A log that
    verifies but is older than the store's rollback anchor (or cannot be compared with it) is
    reported as ``rolled-back``; when that comparison could not read the log (it changed after
    it verified), the whole check runs once more."""
    for _round in range(2):
        report, problem = _read_only(request, lambda log: log.verify(trusted_key))
        if not (report.ok and isinstance(problem, AuditError)):
            break
    if report.ok and problem is not None:
        return _rolled_back(report, problem)
    return report


def export_audit(request: OpenRequest, since: int | datetime | ExportState | None) -> AuditExport:
    """``AuditLog.export(since)`` of the store of ``request``, unlocked only to check MACs:
    nothing is recovered, upgraded or deleted, and nothing is appended. The folder must be at
    or after its rollback anchor, as ``verify_audit`` checks it: else ``RollbackError`` (or
    ``AuditError`` when the log cannot be compared with the anchor) before a line is read."""
    export, problem = _read_only(request, lambda log: log.export(since))
    if problem is not None:
        raise problem
    return export


def _read_only(request: OpenRequest,
               read: Callable[[AuditLog], T]) -> tuple[T, IntegrityError | None]:  # fmt: skip
    """``read(log)`` on the store of ``request`` (its metadata authenticated, the audit log told
    where line MACs start), then the folder checked against its rollback anchor with the
    backend still open: the result and the anchor's verdict (None: at or after it). The one
    read-only opening: ``audit verify`` and ``audit export`` both get the check."""
    check_store_folder(request.directory)  # before any file in it is read
    raw = M.read_bytes(request.directory / METADATA_NAME)
    unverified = M.from_json(raw, None)
    if unverified.backend != request.backend:
        raise KeyStoreError(f"this store keeps its secrets in the {unverified.backend} backend")
    secrets = _secrets(request, unverified.store_id, unverified.token_key)
    try:
        secret = secrets.store_secret(unverified.audit_key)
        ledger = _ledger(request, store_lock(request.directory), secret, _anchor_of(secrets))
        ledger.audit.require_macs_from(ledger.authenticate(raw).audit_mac_from)
        result = read(ledger.audit)
        return result, _anchor_problem(ledger)
    finally:
        with suppress(Error):
            secrets.close()


def _anchor_problem(ledger: Ledger) -> IntegrityError | None:
    """Why the folder is not at or after its rollback anchor (``RollbackError``), or cannot be
    compared with it (``AuditError``, a changed keystore.json); None when it is, or has none.
    Metadata, log head and anchor are read together under the store lock (others may be
    writing: no false alarm); a torn tail is left out, as ``open`` would move it aside."""
    try:
        ledger.check_anchor()
    except IntegrityError as exc:
        return exc
    return None


def _rolled_back(report: AuditReport, problem: IntegrityError) -> AuditReport:
    """``report`` (a log that verifies) turned into the ``rolled-back`` report of ``problem``."""
    detail = str(problem)
    if not isinstance(problem, RollbackError):
        detail = f"the folder could not be compared with its rollback anchor: {problem}"
    return replace(report, ok=False, kind="rolled-back", seq=report.last_seq,
                   line=report.events, detail=detail)  # fmt: skip


def open_parts(request: OpenRequest) -> StoreParts:
    """Open (or create) the store of ``request``, under its lock."""
    make_store_folder(request.directory)  # checked before any file in it is read
    lock = store_lock(request.directory)
    with lock:
        if (request.directory / METADATA_NAME).exists():
            return _reopen(request, lock)
        return _create(request, lock)
