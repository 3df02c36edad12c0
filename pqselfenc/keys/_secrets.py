"""The secrets of a key store: its backend, addressed by ``(name, version)``, and the key pairs
decoded from it, cached while the store is open, except with the pkcs11 backend (``cache=False``):
there every use unwraps the seed in the token again and drops the pair after it, so destroying
the token key stops even an open store at its next use (issue 15: "unwrap happens per use"; a
use costs ~0.7 ms of token decryption and ~1 ms of decoding, measured with SoftHSM).

A pair is decoded only for a usable version (not destroyed or destroy-pending), and only if it
matches the key id the (authenticated) metadata holds for that version: a backend cannot
substitute a key. The
store's own secret is kept in the same backend under ``STORE_SECRET``.
"""

from __future__ import annotations

from pqselfenc.error import IntegrityError, KeyDestroyedError
from pqselfenc.kem import VerifyingKey
from pqselfenc.keys._material import KeyPair, StoreSecret, decode_pair, encode_pair
from pqselfenc.keys._metadata import Identity, KeyVersion
from pqselfenc.keys.backends import SecretBackend

__all__ = ["STORE_SECRET", "Secrets"]

STORE_SECRET = ("_store", 1)  # the store's own secret; "_" is never a valid identity name


class Secrets:
    """Backend access for one open store, and the cache of its decoded key pairs.

    ``min_entropy``: the bound every decoded seed must meet (``KeyConfig.min_entropy``);
    ``cache``: keep decoded pairs while the store is open (False: decode per use).
    """

    def __init__(self, backend: SecretBackend, *, min_entropy: int, cache: bool = True) -> None:
        self.backend = backend
        self._min_entropy = min_entropy
        self._cache = cache
        self._pairs: dict[tuple[str, int], KeyPair] = {}

    def __repr__(self) -> str:
        return f"Secrets({self.backend!r})"

    @property
    def kind(self) -> str:
        """The backend's kind (``"file"``, ``"keyring"``, ``"pkcs11"``)."""
        return self.backend.kind

    def close(self) -> None:
        """Forget every cached pair and close the backend if it holds something open (the
        pkcs11 backend's share of the token session)."""
        self._pairs.clear()
        close = getattr(self.backend, "close", None)
        if callable(close):
            close()

    # -- the store's own secret ------------------------------------------------------------

    def create_store_secret(self, signature: str) -> StoreSecret:
        """A fresh store secret, written to the backend (before any metadata names it)."""
        secret = StoreSecret.generate(signature)
        self.backend.put(*STORE_SECRET, secret.to_bytes())
        return secret

    def store_secret(self, audit_key: str) -> StoreSecret:
        """The store secret; ``IntegrityError`` unless its audit key is ``audit_key`` (the
        verifying key text the metadata names)."""
        algorithm = VerifyingKey.parse(audit_key).algorithm
        secret = StoreSecret.from_bytes(self.backend.get(*STORE_SECRET), algorithm)
        if str(secret.audit_key.verifying_key()) != audit_key:
            raise IntegrityError("the store secret does not match this store's metadata")
        return secret

    # -- key pairs -------------------------------------------------------------------------

    def put(self, name: str, version: int, pair: KeyPair) -> None:
        """Write ``pair`` as the secret of ``name`` v``version``, before any metadata names it
        (not cached: ``keep`` it once that metadata is committed)."""
        self.backend.put(name, version, encode_pair(pair))

    def keep(self, name: str, version: int, pair: KeyPair) -> None:
        """Cache ``pair`` for ``name`` v``version`` (its metadata is committed), if caching."""
        if self._cache:
            self._pairs[(name, version)] = pair

    def pair(self, ident: Identity, version: KeyVersion) -> KeyPair:
        """The private keys of ``version`` of ``ident``: ``KeyDestroyedError`` if it was
        destroyed (the backend is not asked), ``IntegrityError`` if the backend's secret is not
        the one the metadata names."""
        if not version.usable:
            raise KeyDestroyedError(f"{ident.name} v{version.version} was destroyed")
        cached = self._pairs.get((ident.name, version.version))
        if cached is not None:
            return cached
        blob = self.backend.get(ident.name, version.version)
        pair = decode_pair(blob, ident.suite, ident.signature, self._min_entropy)
        if pair.kem.key_id.hex() != version.key_id:
            raise IntegrityError(f"the secret of {ident.name} v{version.version} does not match")
        self.keep(ident.name, version.version, pair)
        return pair

    def forget(self, name: str, version: int) -> None:
        """Drop the cached pair of ``name`` v``version`` (if any)."""
        self._pairs.pop((name, version), None)

    def delete(self, name: str, version: int) -> bool:
        """Forget, then delete the secret of ``name`` v``version``; False if it was absent."""
        self.forget(name, version)
        return self.backend.delete(name, version)
