"""Key management: versioned post-quantum identities, rotation, sealing, crypto-shredding, audit.

CRYPTO.md section 4::

    from pqselfenc.keys import KeyStore, KeyConfig
    ks = KeyStore.open(path, config=KeyConfig(rotation_interval=timedelta(days=30)),
                       backend="file", passphrase=...)     # or backend="keyring"
    ks = KeyStore(EncryptionConfig(keys=KeyConfig(rotation_interval=30 * 24 * 3600)))
                 # the default store, HOME/keys, as the command opens it (keys.defaults)
    ks.generate("alice")
    ks.recipients.add("bob", bob_public_key_text)
    ks.escrow.add("org-escrow")    # a recipient every sealed map also goes to (audited)
    sealed = ks.seal(data_map, to=["alice", "bob"], sign_as="alice")
    data_map = ks.open_envelope(sealed)
    ks.rotate_due(); ks.rewrap(sealed); ks.destroy("alice", version=1)
    SelfEncryptor(data, key_store=ks)

Secrets live behind ``SecretBackend`` (``FileBackend``: argon2id -> AES-256-GCM files;
``KeyringBackend``: the OS keyring, pinned, never a plaintext fallback). Every key operation is
recorded in a hash-chained, checkpoint-signed audit log (``ks.audit.verify()``).
"""

from pqselfenc.keys._entropy import estimate_passphrase_bits
from pqselfenc.keys._metadata import Identity, KeyState, KeyVersion, RecipientEntry
from pqselfenc.keys.audit import AuditLog, AuditReport
from pqselfenc.keys.backends import FileBackend, SecretBackend
from pqselfenc.keys.config import KeyConfig
from pqselfenc.keys.escrow import EscrowPolicy
from pqselfenc.keys.keyring_backend import KeyringBackend
from pqselfenc.keys.recipients import RecipientDirectory
from pqselfenc.keys.store import KeyStore, RotationDue

__all__ = [
    "AuditLog",
    "AuditReport",
    "EscrowPolicy",
    "FileBackend",
    "Identity",
    "KeyConfig",
    "KeyState",
    "KeyStore",
    "KeyVersion",
    "KeyringBackend",
    "RecipientDirectory",
    "RecipientEntry",
    "RotationDue",
    "SecretBackend",
    "estimate_passphrase_bits",
]
