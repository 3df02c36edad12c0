"""Every exception pqselfenc raises on purpose.

The tree::

    Error                          base class: catch this to catch everything below
    ├── InvalidDataError           malformed input: DataMap bytes/JSON, envelope, key text,
    │                              key store metadata that does not parse
    ├── IntegrityError             authenticated data failed verification (chunk name,
    │   │                          GCM tag, size, content hash, MAC, hash chain)
    │   ├── AuditError             the audit log is broken (incl. a line that does not
    │   │                          parse), truncated, or cannot be written
    │   ├── RollbackError          the key store folder is older than its rollback anchor
    │   │                          (kept in a token or the OS keyring), or the anchor is gone
    │   └── TokenKeyError          a store's wrapping key in the PKCS#11 token is not the one
    │                              it made and recorded (several, another id, importable)
    ├── EncryptionError            an operation could not be carried out (missing or wrong
    │   │                          convergence secret, compression failure, worker failure)
    │   ├── DecryptionError        a sealed envelope did not open: "not for me", wrong key and
    │   │                          tampering are one opaque error (no partitioning oracle)
    │   └── SignatureError         a sender signature is missing, from an untrusted signer,
    │                              or does not verify
    ├── ChunkStoreError            a chunk store failed (I/O, permissions, server errors)
    │   ├── ChunkNotFound          the store has no chunk under that name
    │   └── StoreLockedError       another process holds a conflicting store lock (a gc, a
    │                              writer, or a stale lock left by one), or ours was lost
    └── KeyStoreError              the key store failed or was misused
        ├── KeyNotFound            no identity, recipient or version under that name
        ├── KeyringUnavailable     no secure OS keyring (and no silent plaintext fallback)
        ├── TokenUnavailable       the PKCS#11 module does not load, or the token is absent
        │   └── TokenPinError      the token refused the PIN (wrong, locked, expired, none)
        ├── KeyDestroyedError      the key version was crypto-shredded
        ├── EscrowError            the escrow policy cannot be met: an escrow recipient is
        │                          missing, its key unusable, or of another suite (no seal)
        ├── WeakSecretError        a secret or passphrase below the entropy bound, or a
        │                          generated key that failed its health or pairwise test
        └── WrongPassphrase        a passphrase did not unlock what it protects (the vault,
                                   an identity export): wrong, or the file was altered

Misuse of the API (wrong argument types, impossible parameters) raises the built-in
``TypeError`` / ``ValueError`` at construction, as ``cryptography`` does. Exceptions from
``cryptography``, ``zstandard``, ``keyring``, ``argon2`` and ``boto3`` never escape: they are
translated at the boundary with ``raise ... from exc``.

Messages never contain key material, plaintext or full content hashes.
"""

from __future__ import annotations

__all__ = [
    "AuditError",
    "ChunkNotFound",
    "ChunkStoreError",
    "DecryptionError",
    "EncryptionError",
    "Error",
    "EscrowError",
    "IntegrityError",
    "InvalidDataError",
    "KeyDestroyedError",
    "KeyNotFound",
    "KeyStoreError",
    "KeyringUnavailable",
    "RollbackError",
    "SignatureError",
    "StoreLockedError",
    "TokenKeyError",
    "TokenPinError",
    "TokenUnavailable",
    "WeakSecretError",
    "WrongPassphrase",
]


class Error(Exception):
    """Base class of every pqselfenc exception."""


class InvalidDataError(Error):
    """Input is malformed: it does not parse under the format it claims."""


class IntegrityError(Error):
    """Authenticated data failed verification; nothing unverified is returned."""


class AuditError(IntegrityError):
    """The audit log's hash chain, checkpoint or signature is broken, or a write failed."""


class RollbackError(IntegrityError):
    """The key store folder is older than the rollback anchor kept outside it (a token data
    object, an OS keyring entry), its audit log is not the one anchored, or the anchor of an
    anchored store is missing; the message gives the anchor's values."""


class TokenKeyError(IntegrityError):
    """A store's wrapping key in the PKCS#11 token is not the one pqselfenc generated there and
    recorded: several keys under its label, another ``CKA_ID``, or a key that is not private,
    sensitive, never extractable and generated in the token. It is never used."""


class EncryptionError(Error):
    """An encryption or decryption operation could not be carried out."""


class DecryptionError(EncryptionError):
    """A sealed envelope did not open with any of the identities given (opaque on purpose)."""


class SignatureError(EncryptionError):
    """A sender signature is missing, untrusted or invalid."""


class ChunkStoreError(Error):
    """A chunk store operation failed."""


class ChunkNotFound(ChunkStoreError):
    """The store holds no chunk under the requested name."""


class StoreLockedError(ChunkStoreError):
    """A store lock could not be taken or kept: a gc or writers hold a conflicting lock, a stale
    lock is in the way (reported, never broken silently), or our own lock was lost."""


class KeyStoreError(Error):
    """The key store failed or was misused."""


class KeyNotFound(KeyStoreError):
    """No identity, recipient or key version under that name."""


class KeyringUnavailable(KeyStoreError):
    """No secure OS keyring is usable; pqselfenc refuses plaintext fallbacks."""


class TokenUnavailable(KeyStoreError):
    """The PKCS#11 module cannot be loaded, or the token is absent or not usable."""


class TokenPinError(TokenUnavailable):
    """The token refused the PIN (wrong, locked, expired), or no PIN was given."""


class KeyDestroyedError(KeyStoreError):
    """The key version was destroyed (crypto-shredded) and cannot be used."""


class EscrowError(KeyStoreError):
    """A map cannot be sealed as the escrow policy requires: an escrow recipient is not in the
    directory, its key does not parse or is refused by the policy, or its suite is not the
    envelope's. Nothing is sealed, and the refusal is audited."""


class WeakSecretError(KeyStoreError):
    """A secret is below the entropy bound or a new key failed its self-tests."""


class WrongPassphrase(KeyStoreError):
    """A passphrase did not unlock the vault or an identity export: it is wrong, or the
    protected file was altered (AES-GCM cannot tell the two apart, and does not try)."""
