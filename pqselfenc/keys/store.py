"""``KeyStore``: identities with versioned keys, rotation, sealing, crypto-shredding, audit.

Layout of a store directory (0700)::

    keystore.json      metadata (identities, versions, states, public keys, recipients)
    keystore.lock      the file lock every change and every audit append holds
    audit.jsonl        hash-chained audit log; audit.checkpoint: its last signed checkpoint
    vault.key          file backend only: argon2id-wrapped vault key
    secrets/NAME.vN.key  file backend only: one AES-256-GCM encrypted seed file per version

Ordering that makes crashes safe: a secret is written before the metadata that names it (a
crash leaves an orphan secret, never an entry without its secret); a metadata write is staged
in ``keystore.json.staged`` (generation n+1, MACed), then its audit event records
``generation`` n+1, then the staged file is renamed over keystore.json (a crash before the event
leaves a stale staged file that ``open`` deletes; a crash after it leaves one that ``open``
renames into place, so an event's change is never lost and never present without its event);
destroy marks the version destroyed before it deletes the secret, and every later ``open`` of
the store finishes an interrupted delete. ``open`` refuses keystore.json whose generation is
below the last one the audit log records (a rollback to an older copy).
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, overload

from filelock import FileLock

from pqselfenc.core.datamap import DataMap
from pqselfenc.error import (
    DecryptionError,
    Error,
    IntegrityError,
    KeyDestroyedError,
    KeyNotFound,
    KeyStoreError,
)
from pqselfenc.kem import PublicKey, SigningKey, VerifyingKey, inspect, open_sealed, seal
from pqselfenc.keys import _metadata as M
from pqselfenc.keys._material import KeyPair, StoreSecret, decode_pair, encode_pair, generate_pair
from pqselfenc.keys._metadata import Identity, KeyState, KeyVersion, Metadata
from pqselfenc.keys.audit import AuditLog
from pqselfenc.keys.backends import SecretBackend
from pqselfenc.keys.config import KeyConfig, check_name
from pqselfenc.keys.recipients import RecipientDirectory

__all__ = ["KeyStore", "RotationDue"]

Clock = Callable[[], datetime]
_STORE = "_store"  # backend name of the store's own secret; never a valid identity name


@dataclass(frozen=True)
class RotationDue:
    """An identity whose active key is past the rotation interval (or which has none)."""

    name: str
    version: int | None
    created: datetime | None
    due_at: datetime | None


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _default_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"{user}/pid{os.getpid()}"


class _StoreOrEnvelope:
    """``KeyStore.open(path, ...)`` opens a store; ``store.open(sealed)`` opens an envelope.

    The issue's API uses one name for both; this descriptor dispatches on class vs instance to
    ``KeyStore.open_store`` and ``KeyStore.open_envelope`` (use those names to be explicit).
    """

    @overload
    def __get__(self, obj: None, objtype: type[KeyStore]) -> Callable[..., KeyStore]: ...

    @overload
    def __get__(self, obj: KeyStore, objtype: type[KeyStore] | None) -> Callable[..., DataMap]: ...

    def __get__(self, obj: KeyStore | None, objtype: type[KeyStore] | None = None) -> Any:
        if obj is None:
            assert objtype is not None
            return objtype.open_store
        return obj.open_envelope


class KeyStore:
    """A directory of local identities (versioned KEM + ML-DSA keys) and named recipients.

    Open with ``KeyStore.open``. Every method re-reads the metadata under the store lock, so
    several processes may share one store.
    """

    def __init__(self, directory: Path, config: KeyConfig, backend: SecretBackend,
                 secret: StoreSecret, audit: AuditLog, clock: Clock) -> None:  # fmt: skip
        self.directory, self.config, self.audit = directory, config, audit
        self._backend, self._secret, self._clock = backend, secret, clock
        self._lock = FileLock(directory / "keystore.lock")
        self._meta_path = directory / "keystore.json"
        self._meta_key = secret.metadata_mac_key()
        self._pairs: dict[tuple[str, int], KeyPair] = {}
        self.recipients = RecipientDirectory(self)

    def __repr__(self) -> str:
        return f"KeyStore({str(self.directory)!r}, backend={self._backend.kind!r})"

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open_store(
        cls,
        path: str | os.PathLike[str],
        *,
        config: KeyConfig | None = None,
        backend: str = "file",
        passphrase: str | None = None,
        clock: Clock | None = None,
        actor: str | None = None,
        keyring: Any = None,
    ) -> KeyStore:
        """Open (or create) the store at ``path``.

        ``backend="file"`` needs ``passphrase`` (strength-checked when the store is created);
        ``backend="keyring"`` uses the OS keyring (``KeyringUnavailable`` if there is no secure
        one). ``clock`` returns aware UTC datetimes (rotation and audit); ``actor`` names who
        acts in the audit log (default ``user/pidN``).
        """
        from pqselfenc.keys._opening import open_store

        config = KeyConfig() if config is None else config
        if not isinstance(config, KeyConfig):
            raise TypeError("config must be a KeyConfig")
        if backend not in ("file", "keyring"):
            raise ValueError("backend must be 'file' or 'keyring'")
        if backend == "file" and not isinstance(passphrase, str):
            raise ValueError("the file backend needs a passphrase")
        return open_store(cls, Path(path), config, backend, passphrase,
                          clock or _utc_now, actor or _default_actor(), keyring)  # fmt: skip

    @staticmethod
    def backend_of(path: str | os.PathLike[str]) -> str:
        """``"file"`` or ``"keyring"``: the backend the store at ``path`` was created with.

        Reads only the (non-secret) metadata: no passphrase, no keyring access, no audit event.
        ``KeyNotFound`` if there is no store at ``path``, ``InvalidDataError`` if its metadata
        does not parse. Open the store with this backend: it never changes. The answer is not
        authenticated (the MAC needs the secret it helps to unlock): ``open`` checks it.
        """
        meta_path = Path(path) / "keystore.json"
        try:
            return M.read_metadata(meta_path, None).backend
        except FileNotFoundError:
            raise KeyNotFound(f"no key store in {Path(path)}") from None

    # -- metadata --------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[Metadata]:
        with self._lock:
            yield self._read()

    def _read(self) -> Metadata:
        """The metadata, its MAC checked (``IntegrityError`` if it was changed behind our back)."""
        return M.read_metadata(self._meta_path, self._meta_key)

    def _write(self, meta: Metadata, record: Callable[[int], None]) -> None:
        """Write ``meta`` (read under the lock we hold) as the next generation, with its MAC.

        Staged first, then ``record(generation)`` appends the audit event (``AuditError``: the
        staged file is dropped, nothing changes), then the staged file replaces keystore.json.
        """
        staged = self._meta_path.with_name(M.STAGED_NAME)
        written = M.write_metadata(staged, meta, self._meta_key)
        try:
            record(written.generation)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        M.commit_staged(staged, self._meta_path)

    @property
    def identities(self) -> dict[str, Identity]:
        """Every local identity with its versions (a fresh read of the metadata)."""
        return dict(self._read().identities)

    def identity(self, name: str) -> Identity:
        """The local identity ``name`` with all its versions; ``KeyNotFound`` if there is none."""
        return self._read().identity(name)

    # -- generation and rotation -----------------------------------------------------------

    def generate(self, name: str, *, suite: str | None = None,
                 signature: str | None = None) -> KeyVersion:  # fmt: skip
        """A new identity ``name`` with version 1 active."""
        check_name(name, "identity name")
        suite = self.config.check_suite(suite or self.config.suite)
        signature = self.config.check_signature(signature or self.config.signature)
        pair = generate_pair(suite, signature)
        with self._locked() as meta:
            if name in meta.identities or name in meta.recipients:
                raise KeyStoreError(f"{name!r} already exists (use rotate for a new version)")
            ident = Identity(name, suite, signature, ())
            return self._add_version(meta, ident, pair, "generate")

    def rotate(self, name: str) -> KeyVersion:
        """Version n+1 becomes active; the previous active version becomes decrypt-only."""
        with self._locked() as meta:
            ident = meta.identity(name)
            pair = generate_pair(ident.suite, ident.signature)
            return self._add_version(meta, ident, pair, "rotate")

    def _add_version(
        self, meta: Metadata, ident: Identity, pair: KeyPair, action: str
    ) -> KeyVersion:
        now, number = self._clock(), ident.latest + 1
        version = KeyVersion(
            version=number, state=KeyState.ACTIVE, created=now,
            public_key=str(pair.kem.recipient()), verifying_key=str(pair.signing.verifying_key()),
            key_id=pair.kem.key_id.hex(), fingerprint=pair.kem.fingerprint,
        )  # fmt: skip
        self._backend.put(ident.name, number, encode_pair(pair))  # secret first
        old = ident.active
        if old is not None:
            ident = ident.with_version(replace(old, state=KeyState.DECRYPT_ONLY, retired=now))
        self._write(
            meta.with_identity(ident.with_version(version)),
            lambda g: self._record(action, ident.name, version, generation=g),
        )
        self._pairs[(ident.name, number)] = pair
        return version

    def due(self) -> list[RotationDue]:
        """Identities whose active key is at least ``rotation_interval`` old, or has none."""
        now, out = self._clock(), []
        for ident in self._read().identities.values():
            active = ident.active
            if active is None:
                out.append(RotationDue(ident.name, None, None, None))
            elif now >= active.created + self.config.rotation_interval:
                due_at = active.created + self.config.rotation_interval
                out.append(RotationDue(ident.name, active.version, active.created, due_at))
        return sorted(out, key=lambda d: d.name)

    def rotate_due(self) -> list[KeyVersion]:
        """Rotate every identity ``due()`` reports (for cron or a systemd timer)."""
        return [self.rotate(item.name) for item in self.due()]

    # -- destroy ---------------------------------------------------------------------------

    def destroy(self, name: str, version: int) -> KeyVersion:
        """Crypto-shred one version: mark it destroyed, then delete its secret from the backend.

        Idempotent: destroying a destroyed version retries the delete (finishing one that a
        crash interrupted). threat-model/keys.md says what this does and does not guarantee.
        """
        with self._locked() as meta:
            ident = meta.identity(name)
            old = ident.version(version)
            self._pairs.pop((name, version), None)
            if old.state is KeyState.DESTROYED:
                if self._backend.delete(name, version):
                    self._record("destroy", name, old, detail="finished an interrupted delete")
                return old
            now = self._clock()
            new = replace(old, state=KeyState.DESTROYED, destroyed=now, retired=old.retired or now)
            self._write(
                meta.with_identity(ident.with_version(new)),
                lambda g: self._record("destroy", name, new, generation=g),
            )
            self._backend.delete(name, version)
            return new

    # -- keys ------------------------------------------------------------------------------

    def _pair(self, ident: Identity, version: KeyVersion) -> KeyPair:
        if version.state is KeyState.DESTROYED:
            raise KeyDestroyedError(f"{ident.name} v{version.version} was destroyed")
        cached = self._pairs.get((ident.name, version.version))
        if cached is not None:
            return cached
        blob = self._backend.get(ident.name, version.version)
        pair = decode_pair(blob, ident.suite, ident.signature, self.config.min_entropy)
        if pair.kem.key_id.hex() != version.key_id:
            raise IntegrityError(f"the secret of {ident.name} v{version.version} does not match")
        self._pairs[(ident.name, version.version)] = pair
        return pair

    def _active(self, meta: Metadata, name: str) -> tuple[Identity, KeyVersion]:
        ident = meta.identity(name)
        if ident.active is None:
            raise KeyNotFound(f"identity {name!r} has no active version (rotate it)")
        return ident, ident.active

    def _public_key(self, meta: Metadata, name: str) -> PublicKey:
        if name in meta.recipients:
            return PublicKey.parse(meta.recipients[name].public_key)
        return PublicKey.parse(self._active(meta, name)[1].public_key)

    def signing_key(self, name: str) -> SigningKey:
        """The ML-DSA key of ``name``'s active version (for signing outside ``seal``)."""
        meta = self._read()
        return self._pair(*self._active(meta, name)).signing

    def verifying_keys(self, name: str) -> list[VerifyingKey]:
        """Verifying keys trusted for ``name``: its usable versions' (a destroyed version's
        signatures are no longer accepted), or the recipient's."""
        meta = self._read()
        if name in meta.recipients:
            text = meta.recipients[name].verifying_key
            if text is None:
                raise KeyNotFound(f"recipient {name!r} has no verifying key")
            return [VerifyingKey.parse(text)]
        versions = meta.identity(name).versions
        return [VerifyingKey.parse(v.verifying_key) for v in versions if v.usable]

    def convergence_secret(self, domain: str | None = None) -> bytes:
        """The 32-byte convergence secret of ``domain`` (default: ``config.domain``)."""
        return self._secret.convergence_secret(check_name(domain or self.config.domain, "domain"))

    def export_identity(self, name: str, passphrase: str) -> bytes:
        """Every usable version of ``name``, protected by argon2id(passphrase) -> AES-256-GCM."""
        from pqselfenc.keys._transfer import export_identity

        return export_identity(self, name, passphrase)

    def import_identity(self, blob: bytes, passphrase: str, *, name: str | None = None) -> Identity:
        """Add an exported identity; seeds below ``min_entropy`` or failing self-tests refused."""
        from pqselfenc.keys._transfer import import_identity

        return import_identity(self, blob, passphrase, name)

    def change_passphrase(self, old: str, new: str) -> None:
        """File backend: rewrap the vault key under ``new`` (strength-checked); audited."""
        from pqselfenc.keys.backends import change_passphrase

        if self._backend.kind != "file":
            raise KeyStoreError("only the file backend has a passphrase")

        def record() -> None:
            self._record("passphrase-change", None, None)

        bits = self.config.min_passphrase_bits
        with self._lock:
            try:
                change_passphrase(self.directory, old, new, min_passphrase_bits=bits,
                                  before_commit=record)  # fmt: skip
            except KeyStoreError as exc:  # wrong or weak passphrase
                self._record_failure("passphrase-change", exc)
                raise

    # -- sealing ---------------------------------------------------------------------------

    def seal(self, data_map: DataMap, to: Sequence[str], sign_as: str | None = None) -> bytes:
        """Seal ``data_map`` to the current keys of ``to`` (local identities or recipients)."""
        if isinstance(to, str) or not to:
            raise ValueError("to must be a non-empty list of names")
        meta = self._read()
        keys = [self._public_key(meta, name) for name in to]
        for key in keys:
            self.config.check_suite(key.suite)
        signer = None if sign_as is None else self._pair(*self._active(meta, sign_as)).signing
        sealed = seal(data_map, keys, signer)
        info = inspect(sealed)
        self._record("seal", ",".join(to), None, envelope_id=info.envelope_id.hex(),
                     key_id=",".join(k.key_id.hex() for k in keys))  # fmt: skip
        return sealed

    def open_envelope(self, sealed: bytes, *, signer: str | None = None) -> DataMap:
        """Open ``sealed`` with every usable version of every local identity it names.

        ``signer``: require a valid signature by that identity or recipient. Raises
        ``DecryptionError`` (not for us / wrong key / tampered, one opaque error),
        ``KeyDestroyedError`` when it is addressed only to destroyed local versions.
        """
        from pqselfenc.keys._opening import open_envelope

        return open_envelope(self, sealed, signer)

    open = _StoreOrEnvelope()

    def rewrap(self, sealed: bytes, *, sign_as: str | None = None) -> bytes:
        """Re-seal to the current versions of the same recipients: fresh DMK, chunks untouched.

        ``sign_as`` defaults to the original signer when that is a local identity.
        """
        from pqselfenc.keys._opening import rewrap

        return rewrap(self, sealed, sign_as)

    def _record(self, action: str, name: str | None, version: KeyVersion | None,
                **fields: Any) -> None:  # fmt: skip
        if version is not None:
            fields = {"key_id": version.key_id, "version": version.version,
                      "fingerprint": version.fingerprint, **fields}  # fmt: skip
        with self._lock:
            self.audit.record(action, name=name, **fields)

    def _record_fields(self, action: str, name: str, key_id: str, fingerprint: str,
                       generation: int) -> None:  # fmt: skip
        with self._lock:
            self.audit.record(action, name=name, key_id=key_id, fingerprint=fingerprint,
                              generation=generation)  # fmt: skip

    def _record_failure(self, action: str, exc: Error, **fields: Any) -> None:
        with self._lock:
            self.audit.record(action, outcome="failure", detail=type(exc).__name__, **fields)

    def _check_open(
        self, meta: Metadata, key_ids: Sequence[bytes]
    ) -> list[tuple[Identity, KeyVersion]]:
        """Local versions an envelope is addressed to, usable first; raise if none is usable."""
        wanted = {k.hex() for k in key_ids}
        found = [(i, v) for i in meta.identities.values() for v in i.versions if v.key_id in wanted]
        usable = [(i, v) for i, v in found if v.usable]
        if found and not usable:
            raise KeyDestroyedError("the envelope is addressed only to destroyed key versions")
        if not usable:
            raise DecryptionError("the envelope did not open with any local identity")
        return sorted(usable, key=lambda iv: -iv[1].version)

    def _open_with(
        self, sealed: bytes, meta: Metadata, signer: str | None
    ) -> tuple[DataMap, Identity, KeyVersion]:
        info = inspect(sealed)
        expected = None if signer is None else self.verifying_keys(signer)
        for ident, version in self._check_open(meta, info.recipients):
            try:
                return (
                    open_sealed(sealed, [self._pair(ident, version).kem], expected),
                    ident,
                    version,
                )
            except DecryptionError:
                continue
        raise DecryptionError("the envelope did not open with any local identity")

    def close(self) -> None:
        """Append a signed audit checkpoint if events were written since the last one."""
        with self._lock:
            self.audit.checkpoint_if_needed()

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
