"""``KeyStore``: identities with versioned keys, rotation, sealing, crypto-shredding, audit.

Layout of a store directory (0700)::

    keystore.json      metadata (identities, versions, states, public keys, recipients)
    keystore.lock      the file lock every change and every audit append holds
    audit.jsonl        hash-chained audit log; audit.checkpoint: its last signed checkpoint
    vault.key          file backend only: argon2id-wrapped vault key
    secrets/NAME.vN.key  file backend only: one AES-256-GCM encrypted seed file per version
    secrets/NAME.vN.p11  pkcs11 backend only: one seed per version, AES-256-GCM in the token

Ordering that makes crashes safe: a secret is written before the metadata that names it (a
crash leaves an orphan secret, never an entry without its secret); a metadata write is staged
in ``keystore.json.staged`` (generation n+1, MACed), then its audit event records
``generation`` n+1, then the staged file is renamed over keystore.json (a crash before the event
leaves a stale staged file that ``open`` deletes; a crash after it leaves one that ``open``
renames into place, so an event's change is never lost and never present without its event);
destroy marks the version destroy-pending (audited intent) before it deletes the secret, then
records the outcome; every later ``open`` of the store retries a delete that failed or was
interrupted. ``open`` refuses keystore.json that is not exactly what the last commit event of the
(MACed) audit log recorded (a rollback to an older copy, a forged event, a truncated log), and,
for the pkcs11 and keyring backends, a folder older than its rollback anchor (``RollbackError``:
a rollback of the whole folder, or a cut of its audit tail).
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pqselfenc.core.config import EncryptionConfig
from pqselfenc.core.datamap import DataMap
from pqselfenc.error import KeyNotFound, KeyStoreError
from pqselfenc.kem import SigningKey, VerifyingKey
from pqselfenc.keys import _metadata as M
from pqselfenc.keys._destroy import destroy
from pqselfenc.keys._envelopes import Envelopes
from pqselfenc.keys._ledger import NO_ANCHOR, Clock, Ledger
from pqselfenc.keys._material import KeyPair, StoreSecret, generate_pair
from pqselfenc.keys._metadata import Identity, KeyState, KeyVersion, Metadata
from pqselfenc.keys._opening import (
    OpenRequest,
    StoreParts,
    export_audit,
    open_parts,
    verify_audit,
)
from pqselfenc.keys._secrets import Secrets
from pqselfenc.keys._transfer import export_identity, import_identity
from pqselfenc.keys.audit import AuditExport, AuditLog, AuditReport, ExportState
from pqselfenc.keys.backends import change_passphrase
from pqselfenc.keys.config import KeyConfig, check_name
from pqselfenc.keys.defaults import default_key_store, existing_backend
from pqselfenc.keys.escrow import EscrowPolicy
from pqselfenc.keys.pkcs11_backend import Pkcs11Backend
from pqselfenc.keys.recipients import RecipientDirectory

__all__ = ["KeyStore", "RotationDue"]


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


def _policy(config: EncryptionConfig | KeyConfig | None) -> KeyConfig:
    """The ``KeyConfig`` in ``config``: itself, an ``EncryptionConfig``'s ``keys``, or the
    default."""
    if isinstance(config, EncryptionConfig):
        config = config.keys
    if config is None:
        return KeyConfig()
    if not isinstance(config, KeyConfig):
        raise TypeError("config must be an EncryptionConfig, a KeyConfig or None")
    return config


class KeyStore:
    """A directory of local identities (versioned KEM + ML-DSA keys) and named recipients.

    ``KeyStore(config)`` opens (creating it if needed) the default store, ``HOME/keys``, as the
    ``pqselfenc`` command does (``pqselfenc.keys.defaults`` says where and with which backend),
    with the policy of ``config`` (an ``EncryptionConfig``'s ``keys``, a ``KeyConfig``, or the
    default). ``KeyStore.open(path, ...)`` opens any other. Every method re-reads the
    metadata under the store lock, so several processes may share one store.
    """

    directory: Path
    config: KeyConfig
    audit: AuditLog
    recipients: RecipientDirectory
    escrow: EscrowPolicy
    _ledger: Ledger
    _secrets: Secrets
    _secret: StoreSecret
    _envelopes: Envelopes

    def __init__(self, config: EncryptionConfig | KeyConfig | None = None) -> None:
        policy = _policy(config)
        where = default_key_store()
        request = OpenRequest(where.path, policy, where.backend, where.passphrase, _utc_now,
                              _default_actor(), where.keyring)  # fmt: skip
        self._attach(open_parts(request))

    @classmethod
    def _compose(cls, parts: StoreParts) -> KeyStore:
        """A store made of ``parts`` (what ``open`` calls; ``__init__`` opens the default)."""
        store = cls.__new__(cls)
        store._attach(parts)
        return store

    def _attach(self, parts: StoreParts) -> None:
        self.directory, self.config = parts.directory, parts.config
        self._ledger, self._secrets, self._secret = parts.ledger, parts.secrets, parts.secret
        self.audit = parts.ledger.audit
        self._envelopes = Envelopes(parts.ledger, parts.secrets, parts.config)
        self.recipients = RecipientDirectory(parts.ledger, parts.config)
        self.escrow = EscrowPolicy(parts.ledger, parts.config)

    def __repr__(self) -> str:
        return f"KeyStore({str(self.directory)!r}, backend={self._secrets.kind!r})"

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        config: KeyConfig | None = None,
        backend: str = "file",
        passphrase: str | None = None,
        clock: Clock | None = None,
        actor: str | None = None,
        keyring: Any = None,
        pin: str | None = None,
        module: str | None = None,
        token: str | None = None,
        reset_anchor: bool = False,
    ) -> KeyStore:
        """Open (or create) the store at ``path``.

        ``backend="file"`` needs ``passphrase`` (strength-checked when the store is created);
        ``backend="keyring"`` uses the OS keyring (``KeyringUnavailable`` if there is no secure
        one); ``backend="pkcs11"`` a PKCS#11 token: ``module`` (the vendor's .so), ``token``
        (its label) and ``pin``, each defaulting to ``$PQSELFENC_PKCS11_MODULE``, ``..._TOKEN``
        (an existing store: the token it was created on) and ``..._PIN``. The keyring and
        pkcs11 backends keep a rollback anchor: a folder older than it is ``RollbackError``;
        ``reset_anchor=True`` accepts the folder as it is instead (audited: ``anchor-reset``).
        ``clock`` returns aware UTC datetimes (rotation and audit); ``actor`` names who acts in
        the audit log (default ``user/pidN``). Envelopes open with ``open_envelope``;
        ``close()`` when done (it checkpoints the log and gives back the token session).
        """
        config = KeyConfig() if config is None else config
        if not isinstance(config, KeyConfig):
            raise TypeError("config must be a KeyConfig")
        if backend not in M.BACKENDS:
            raise ValueError(f"backend must be {' or '.join(map(repr, M.BACKENDS))}")
        if backend == "file" and not isinstance(passphrase, str):
            raise ValueError("the file backend needs a passphrase")
        request = OpenRequest(Path(path), config, backend, passphrase, clock or _utc_now,
                              actor or _default_actor(), keyring, pin, module, token,
                              reset_anchor)  # fmt: skip
        return cls._compose(open_parts(request))

    @staticmethod
    def verify_audit(
        path: str | os.PathLike[str],
        *,
        backend: str = "file",
        passphrase: str | None = None,
        keyring: Any = None,
        pin: str | None = None,
        module: str | None = None,
        token: str | None = None,
    ) -> AuditReport:
        """Verify the audit log of the store at ``path`` without opening it for use (what
        ``pqselfenc audit verify`` runs): MACs, links, signatures, truncation and keystore.json
        against the log, on a consistent snapshot, then the folder against its rollback anchor
        (``kind="rolled-back"``). Nothing is written, recovered or upgraded, so a damaged store
        is reported (``AuditReport``) rather than refused as ``open`` does."""
        request = OpenRequest(Path(path), KeyConfig(), backend, passphrase, _utc_now,
                              "verify", keyring, pin, module, token)  # fmt: skip
        return verify_audit(request)

    @staticmethod
    def export_audit(
        path: str | os.PathLike[str],
        *,
        since: int | datetime | ExportState | None = None,
        backend: str = "file",
        passphrase: str | None = None,
        keyring: Any = None,
        pin: str | None = None,
        module: str | None = None,
        token: str | None = None,
    ) -> AuditExport:
        """The audit log of the store at ``path`` for a SIEM (what ``pqselfenc audit export``
        runs), unlocked as ``verify_audit`` does, without opening the store for use:
        ``AuditLog.export(since)``, each line verified before it is yielded. A folder older than
        its rollback anchor is ``RollbackError`` before any line is (as ``verify_audit``
        reports it ``rolled-back``)."""
        request = OpenRequest(Path(path), KeyConfig(), backend, passphrase, _utc_now,
                              "export", keyring, pin, module, token)  # fmt: skip
        return export_audit(request, since)

    @staticmethod
    def backend_of(path: str | os.PathLike[str]) -> str:
        """``"file"``, ``"keyring"`` or ``"pkcs11"``: the backend the store at ``path`` was
        created with.

        Reads only the (non-secret) metadata: no passphrase, no keyring access, no audit event.
        ``KeyNotFound`` if there is no store at ``path``, ``InvalidDataError`` if its metadata
        does not parse. Open the store with this backend: it never changes. The answer is not
        authenticated (the MAC needs the secret it helps to unlock): ``open`` checks it.
        ``KeyStoreError``, before anything is read, if the folder is not private or not in a
        private place (``open`` refuses it too).
        """
        backend = existing_backend(path)
        if backend is None:
            raise KeyNotFound(f"no key store in {Path(path)}")
        return backend

    # -- what protects the store -------------------------------------------------------------

    @property
    def backend(self) -> str:
        """Where this store's secrets are: ``"file"``, ``"keyring"`` or ``"pkcs11"``."""
        return self._secrets.kind

    def rollback_protection(self) -> str:
        """One line: where this store's rollback anchor is and what it records now, or that
        it has none (the file backend)."""
        where = self._ledger.anchor_location()
        if where is None:
            return f"no rollback anchor: {NO_ANCHOR}"
        anchor = self._ledger.read_anchor()
        return f"rollback anchor in {where}: {anchor if anchor is not None else 'missing'}"

    @property
    def anchor_problem(self) -> str | None:
        """Why the last write of the rollback anchor failed (the change it followed stands;
        the next change or open catches up), or None."""
        return self._ledger.anchor_problem

    def token_capabilities(self) -> str | None:
        """pkcs11 backend: one line saying which ML-KEM/ML-DSA mechanisms the token has and
        what pqselfenc does with them (probed, never assumed); None for other backends."""
        backend = self._secrets.backend
        if isinstance(backend, Pkcs11Backend):
            return backend.capabilities().statement()
        return None

    # -- metadata --------------------------------------------------------------------------

    @property
    def identities(self) -> dict[str, Identity]:
        """Every local identity with its versions (a fresh read of the metadata)."""
        return dict(self._ledger.read().identities)

    def identity(self, name: str) -> Identity:
        """The local identity ``name`` with all its versions; ``KeyNotFound`` if there is none."""
        return self._ledger.read().identity(name)

    # -- generation and rotation -----------------------------------------------------------

    def generate(self, name: str, *, suite: str | None = None,
                 signature: str | None = None) -> KeyVersion:  # fmt: skip
        """A new identity ``name`` with version 1 active."""
        check_name(name, "identity name")
        suite = self.config.check_suite(suite or self.config.suite)
        signature = self.config.check_signature(signature or self.config.signature)
        pair = generate_pair(suite, signature)
        with self._ledger.locked() as meta:
            if name in meta.identities or name in meta.recipients:
                raise KeyStoreError(f"{name!r} already exists (use rotate for a new version)")
            ident = Identity(name, suite, signature, ())
            return self._add_version(meta, ident, pair, "generate")

    def rotate(self, name: str) -> KeyVersion:
        """Version n+1 becomes active; the previous active version becomes decrypt-only.
        ``ValueError`` if the identity's algorithms are below this store's policy."""
        with self._ledger.locked() as meta:
            ident = meta.identity(name)
            self.config.check_suite(ident.suite)
            self.config.check_signature(ident.signature)
            pair = generate_pair(ident.suite, ident.signature)
            return self._add_version(meta, ident, pair, "rotate")

    def _add_version(
        self, meta: Metadata, ident: Identity, pair: KeyPair, action: str
    ) -> KeyVersion:
        now, number = self._ledger.clock(), ident.latest + 1
        version = KeyVersion(
            version=number, state=KeyState.ACTIVE, created=now,
            public_key=str(pair.kem.recipient()), verifying_key=str(pair.signing.verifying_key()),
            key_id=pair.kem.key_id.hex(), fingerprint=pair.kem.fingerprint,
        )  # fmt: skip
        self._secrets.put(ident.name, number, pair)  # secret first
        old = ident.active
        if old is not None:
            ident = ident.with_version(replace(old, state=KeyState.DECRYPT_ONLY, retired=now))
        self._ledger.commit(meta.with_identity(ident.with_version(version)), action, ident.name,
                            version)  # fmt: skip
        self._secrets.keep(ident.name, number, pair)
        return version

    def due(self) -> list[RotationDue]:
        """Identities whose active key is at least ``rotation_interval`` old, or has none."""
        now, out = self._ledger.clock(), []
        for ident in self._ledger.read().identities.values():
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
        """Crypto-shred one version: mark it destroy-pending (audited intent: nothing uses it
        again), delete its secret from the backend, record the outcome (destroyed, or the
        backend's error, which is raised: the version stays destroy-pending).

        Idempotent: destroying a pending version retries the delete (so does every ``open``).
        threat-model/keys.md says what this does and does not guarantee.
        """
        return destroy(self._ledger, self._secrets, name, version)

    # -- keys ------------------------------------------------------------------------------

    def signing_key(self, name: str) -> SigningKey:
        """The ML-DSA key of ``name``'s active version (for signing outside ``seal``)."""
        return self._envelopes.signing_key(name)

    def verifying_keys(self, name: str) -> list[VerifyingKey]:
        """Verifying keys trusted for ``name``: its usable versions' (a destroyed version's
        signatures are no longer accepted), or the recipient's."""
        return self._envelopes.verifying_keys(name)

    def convergence_secret(self, domain: str | None = None) -> bytes:
        """The 32-byte convergence secret of ``domain`` (default: ``config.domain``)."""
        return self._secret.convergence_secret(check_name(domain or self.config.domain, "domain"))

    def export_identity(self, name: str, passphrase: str) -> bytes:
        """Every usable version of ``name``, protected by argon2id(passphrase) -> AES-256-GCM."""
        return export_identity(self._ledger, self._secrets, self.config, name, passphrase)

    def import_identity(self, blob: bytes, passphrase: str, *, name: str | None = None) -> Identity:
        """Add an exported identity; seeds below ``min_entropy`` or failing self-tests refused."""
        return import_identity(self._ledger, self._secrets, self.config, blob, passphrase, name)

    def change_passphrase(self, old: str, new: str) -> None:
        """File backend: rewrap the vault key under ``new`` (strength-checked); audited."""
        if self._secrets.kind != "file":
            raise KeyStoreError("only the file backend has a passphrase")

        def record() -> None:
            self._ledger.record("passphrase-change")

        bits = self.config.min_passphrase_bits
        with self._ledger.lock:
            try:
                change_passphrase(self.directory, old, new, min_passphrase_bits=bits,
                                  before_commit=record)  # fmt: skip
            except KeyStoreError as exc:  # wrong or weak passphrase
                self._ledger.record_failure("passphrase-change", exc)
                raise

    # -- sealing ---------------------------------------------------------------------------

    def seal(self, data_map: DataMap, to: Sequence[str], sign_as: str | None = None) -> bytes:
        """Seal ``data_map`` to the current keys of ``to`` (local identities or recipients) and
        of every escrow recipient in force (``escrow``); ``EscrowError`` if one is missing or
        unusable (audited: nothing is sealed)."""
        return self._envelopes.seal(data_map, to, sign_as)

    def open_envelope(self, sealed: bytes, *, signer: str | None = None) -> DataMap:
        """Open ``sealed`` with every usable version of every local identity it names.

        ``signer``: require a valid signature by that identity or recipient. Raises
        ``DecryptionError`` (not for us / wrong key / tampered, one opaque error),
        ``KeyDestroyedError`` when it is addressed only to destroyed local versions.
        """
        return self._envelopes.open(sealed, signer)

    def rewrap(
        self, sealed: bytes, *, sign_as: str | None = None, drop_signature: bool = False
    ) -> bytes:
        """Re-seal to the current versions of the same recipients and to every escrow recipient
        in force (a map sealed before an escrow recipient was added gets it): fresh DMK, chunks
        untouched.

        A signed envelope's signature must verify under a key this store still trusts (a usable
        version of a local identity, or a recipient's verifying key), else ``SignatureError``
        (audited). The new envelope is signed by ``sign_as``, by default by the original signer
        when that is a local identity; an unsigned one stays unsigned. One signed by a recipient
        needs ``sign_as`` or ``drop_signature=True`` (``KeyStoreError`` otherwise).
        """
        return self._envelopes.rewrap(sealed, sign_as, drop_signature)

    def close(self) -> None:
        """Append a signed audit checkpoint if events were written since the last one (and
        anchor it), then close the backend (pkcs11: give back this store's token session;
        the store cannot use the token after that)."""
        try:
            self._ledger.checkpoint()
        finally:
            self._secrets.close()

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
