"""Opening a store (create, unlock, recover) and opening / rewrapping envelopes."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from pqselfenc.core._durable import check_private_directory
from pqselfenc.core.datamap import DataMap
from pqselfenc.error import (
    Error,
    IntegrityError,
    InvalidDataError,
    KeyNotFound,
    KeyStoreError,
)
from pqselfenc.kem import inspect
from pqselfenc.keys import _metadata as M
from pqselfenc.keys._material import StoreSecret
from pqselfenc.keys._metadata import KeyState, Metadata
from pqselfenc.keys.audit import AuditLog
from pqselfenc.keys.backends import FileBackend, SecretBackend
from pqselfenc.keys.config import KeyConfig
from pqselfenc.keys.keyring_backend import KeyringBackend

if TYPE_CHECKING:
    from collections.abc import Callable

    from pqselfenc.keys.store import KeyStore

__all__ = ["open_envelope", "open_store", "rewrap"]

STORE_SECRET = ("_store", 1)  # the store's own secret; "_" is never a valid identity name


def _backend(kind: str, directory: Path, store_id: str, passphrase: str | None,
             config: KeyConfig, keyring: Any) -> SecretBackend:  # fmt: skip
    if kind == "keyring":
        return KeyringBackend(store_id, keyring)
    assert passphrase is not None
    return FileBackend.open(directory, passphrase, min_passphrase_bits=config.min_passphrase_bits)


def _create(directory: Path, kind: str, passphrase: str | None, config: KeyConfig,
            keyring: Any, now: datetime) -> tuple[Metadata, SecretBackend]:  # fmt: skip
    store_id = os.urandom(16).hex()
    backend = _backend(kind, directory, store_id, passphrase, config, keyring)
    secret = StoreSecret.generate(config.signature)
    backend.put(*STORE_SECRET, secret.to_bytes())  # secret first, then the metadata naming it
    audit_key = str(secret.audit_key.verifying_key())
    meta = Metadata(store_id=store_id, backend=kind, created=now, audit_key=audit_key)
    meta = M.write_metadata(directory / "keystore.json", meta, secret.metadata_mac_key())
    return meta, backend


def _load_secret(meta: Metadata, backend: SecretBackend) -> StoreSecret:
    from pqselfenc.kem import VerifyingKey

    audit_key = VerifyingKey.parse(meta.audit_key)
    secret = StoreSecret.from_bytes(backend.get(*STORE_SECRET), audit_key.algorithm)
    if str(secret.audit_key.verifying_key()) != meta.audit_key:
        raise IntegrityError("the store secret does not match this store's metadata")
    return secret


def _finish_destroys(meta: Metadata, backend: SecretBackend) -> None:
    for ident in meta.identities.values():
        for version in ident.versions:
            if version.state is KeyState.DESTROYED:
                backend.delete(ident.name, version.version)


def _check_generation(directory: Path, meta: Metadata, audit: AuditLog, mac_key: bytes) -> Metadata:
    """Catch a rollback of keystore.json: its generation must be at least the last one the
    audit log records (``IntegrityError``, nothing written). A write that crashed after its
    audit event but before its commit left its staged next generation: that is renamed into
    place first (and a stale staged file, whose event never landed, is deleted)."""
    recorded = audit.last_generation()
    staged_path = directory / M.STAGED_NAME
    staged = None
    if staged_path.exists():
        try:
            staged = M.read_metadata(staged_path, mac_key)
        except (IntegrityError, InvalidDataError):
            staged = None  # not a file this store wrote: never trusted, deleted below if safe
    if (
        staged is not None
        and recorded is not None
        and staged.generation == recorded == meta.generation + 1
        and staged.store_id == meta.store_id
    ):
        M.commit_staged(staged_path, directory / "keystore.json")
        return staged
    if recorded is not None and meta.generation < recorded:
        raise IntegrityError(
            f"keystore.json generation {meta.generation} is older than generation {recorded} "
            "recorded in the audit log: rolled back? (restore the newest keystore.json, or "
            "the whole store directory from one backup)"
        )
    staged_path.unlink(missing_ok=True)
    return meta


def open_store(cls: type[KeyStore], directory: Path, config: KeyConfig, kind: str,
               passphrase: str | None, clock: Callable[[], datetime], actor: str,
               keyring: Any) -> KeyStore:  # fmt: skip
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_private_directory(directory, KeyStoreError, subfolders=("secrets",))
    meta_path = directory / "keystore.json"
    with FileLock(directory / "keystore.lock"):
        created = not meta_path.exists()
        if created:
            meta, backend = _create(directory, kind, passphrase, config, keyring, clock())
        else:
            # Unauthenticated until the secret is unlocked: used only to find that secret (the
            # backend, the store id naming it in a keyring, the audit key's algorithm), then the
            # same bytes are checked against their MAC before anything else is trusted or written.
            raw = M.read_bytes(meta_path)
            meta = M.from_json(raw, None)
            if meta.backend != kind:
                raise KeyStoreError(f"this store keeps its secrets in the {meta.backend} backend")
            backend = _backend(kind, directory, meta.store_id, passphrase, config, keyring)
        secret = _load_secret(meta, backend)
        mac_key = secret.metadata_mac_key()
        if not created:
            meta = M.from_json(raw, mac_key)  # IntegrityError: nothing written
        audit = AuditLog(directory, clock=clock, signer=secret.audit_key,
                         verifier=secret.audit_key.verifying_key(),
                         checkpoint_every=config.checkpoint_every, actor=actor)  # fmt: skip
        audit.recover_torn_tail()
        if created:
            audit.record("store-create", key_id=secret.audit_key.key_id.hex(), detail=kind,
                         generation=meta.generation)  # fmt: skip
        else:
            meta = _check_generation(directory, meta, audit, mac_key)
        _finish_destroys(meta, backend)
    return cls(directory, config, backend, secret, audit, clock)


def open_envelope(store: KeyStore, sealed: bytes, signer: str | None) -> DataMap:
    """Open ``sealed``; audit success or failure (the failure is re-raised)."""
    envelope_id = None
    meta = store._read()  # outside the try: a failed MAC check writes nothing, not even audit
    try:
        envelope_id = inspect(sealed).envelope_id.hex()
        data_map, ident, version = store._open_with(sealed, meta, signer)
    except Error as exc:
        store._record_failure("open", exc, envelope_id=envelope_id)
        raise
    store._record("open", ident.name, version, envelope_id=envelope_id)
    return data_map


def _names_for(meta: Metadata, key_ids: tuple[bytes, ...]) -> list[str]:
    owners: dict[str, str] = {}
    for ident in meta.identities.values():
        owners.update({v.key_id: ident.name for v in ident.versions})
    for r in meta.recipients.values():
        owners.update({k: r.name for k in (r.key_id, *r.previous_key_ids)})
    unknown = [k.hex()[:16] for k in key_ids if k.hex() not in owners]
    if unknown:
        raise KeyNotFound(f"envelope recipients not in this store: {', '.join(unknown)}")
    return list(dict.fromkeys(owners[k.hex()] for k in key_ids))


def _default_signer(meta: Metadata, signer_key_id: bytes | None) -> str | None:
    if signer_key_id is None:
        return None
    from pqselfenc.kem import VerifyingKey

    for ident in meta.identities.values():
        for v in ident.versions:
            if VerifyingKey.parse(v.verifying_key).key_id == signer_key_id:
                return ident.name
    return None


def rewrap(store: KeyStore, sealed: bytes, sign_as: str | None) -> bytes:
    """Open ``sealed`` with any usable version, re-seal to the same names' current keys."""
    try:
        info = inspect(sealed)
    except InvalidDataError as exc:
        store._record_failure("rewrap", exc)
        raise
    meta = store._read()
    names = _names_for(meta, info.recipients)
    signer = sign_as or _default_signer(meta, info.signer_key_id)
    data_map = store.open_envelope(sealed)
    try:
        new = store.seal(data_map, names, signer)
    except Error as exc:
        store._record_failure("rewrap", exc, envelope_id=info.envelope_id.hex())
        raise
    detail = f"from envelope {info.envelope_id.hex()}"
    store._record("rewrap", ",".join(names), None,
                  envelope_id=inspect(new).envelope_id.hex(), detail=detail)  # fmt: skip
    return new
