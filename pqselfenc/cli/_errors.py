"""Library exceptions as one error line and a hint a person can act on."""

from __future__ import annotations

from pqselfenc import error as err

__all__ = ["describe"]

# Most specific first: the first class that matches gives the hint.
_HINTS: tuple[tuple[type[BaseException], str], ...] = (
    (
        err.WrongPassphrase,
        "check $PQSELFENC_PASSPHRASE or --passphrase-file (or the export passphrase)",
    ),
    (
        err.TokenPinError,
        "check $PQSELFENC_PKCS11_PIN or --pin-file (the token's user PIN); a token locks "
        "after a few wrong PINs",
    ),
    (
        err.TokenUnavailable,
        "check $PQSELFENC_PKCS11_MODULE (absolute path of the vendor's .so), "
        "$PQSELFENC_PKCS11_TOKEN (the token's label) and that the token is present",
    ),
    (
        err.KeyringUnavailable,
        "unlock the OS keyring (log in to the desktop session, or unlock the login keyring) "
        "and retry; a new key store can use a passphrase-protected file: --backend file",
    ),
    (
        err.KeyDestroyedError,
        "that key was destroyed and nothing brings it back: for one key version, ask the "
        "sender to reseal for your current key ('pqselfenc keys list' shows it); a store whose "
        "token key was destroyed is crypto-shredded as a whole",
    ),
    (
        err.EscrowError,
        "every map is also sealed to each escrow recipient: 'pqselfenc recipients escrow list' "
        "shows them; restore the missing one with 'recipients add' or change the policy",
    ),
    (err.KeyNotFound, "'pqselfenc keys list' and 'pqselfenc recipients list' show what exists"),
    (err.WeakSecretError, "use a longer passphrase or secret (several random words)"),
    (err.KeyStoreError, "check the key store with 'pqselfenc keys list'"),
    (
        err.ChunkNotFound,
        "is --store the store the file was encrypted into? 'pqselfenc store verify' checks it",
    ),
    (
        err.StoreLockedError,
        "a gc or writers are using the store: retry later; 'pqselfenc store stats' lists the "
        "locks, and 'pqselfenc store unlock ID' removes a stale one whose process is gone",
    ),
    (err.ChunkStoreError, "check that the chunk store exists, is readable and is reachable"),
    (err.AuditError, "the audit log was altered or truncated; keep a copy and investigate"),
    (
        err.TokenKeyError,
        "someone with the token's PIN changed the objects under the store's label: list them "
        "(e.g. 'pkcs11-tool --list-objects --login') and compare their CKA_ID with "
        "keystore.json's pkcs11 key_id; only the key the token generated for the store is used",
    ),
    (
        err.RollbackError,
        "'pqselfenc keys anchor' shows the anchor; compare the folder with your latest backup",
    ),
    (
        err.IntegrityError,
        "the chunk store or the map was altered or damaged; "
        "'pqselfenc store verify' finds damaged chunks",
    ),
    (err.InvalidDataError, "the file is damaged or is not what this command expects"),
    (err.DecryptionError, "the map is not sealed for any of your keys, or it was tampered with"),
    (
        err.SignatureError,
        "--signer NAME accepts only maps NAME signed: check who sealed it (their "
        "verifying key comes with 'recipients add'), or drop --signer",
    ),
    (err.EncryptionError, "check the options and the input"),
)


def describe(exc: BaseException) -> tuple[str, str | None]:
    """``(message, hint)`` for a library error or an ``OSError``."""
    if isinstance(exc, OSError):
        return _os_message(exc), None
    message = str(exc) or type(exc).__name__
    return message, next((h for cls, h in _HINTS if isinstance(exc, cls)), None)


def _os_message(exc: OSError) -> str:
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is not None:
        return f"{exc.filename}: {reason}"
    return reason
