"""Private key material of one key version, as seeds: generation, self-tests, encoding.

A version's secret is ``format (1) | KEM seed length (1) | KEM seed | ML-DSA seed (32)``: the
64-byte ML-KEM seed (+ the 32-byte X25519 key for x-wing) and the 32-byte ML-DSA seed, never
expanded keys, so it fits every OS keyring (Windows limits secrets to 2.5 KB).
The store's own secret is ``format (2) | root secret (32) | ML-DSA seed (32)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pqselfenc.core import _primitives as P
from pqselfenc.error import InvalidDataError
from pqselfenc.kem import PrivateKey, SigningKey
from pqselfenc.keys._entropy import check_secret_length, check_seed, draw_seeds

__all__ = ["KeyPair", "StoreSecret", "decode_pair", "encode_pair", "generate_pair"]

_PAIR_FORMAT = 1
_STORE_FORMAT = 2
ROOT_SECRET_SIZE = 32


@dataclass(frozen=True, repr=False)
class KeyPair:
    """One version's private halves: the KEM identity and the ML-DSA signing key."""

    kem: PrivateKey
    signing: SigningKey

    def __repr__(self) -> str:
        return f"KeyPair({self.kem!r}, {self.signing!r})"

    def self_test(self) -> None:
        """Pairwise consistency of both keys (wrap/unwrap, sign/verify); ``WeakSecretError``."""
        self.kem.self_test()
        self.signing.self_test()


def kem_seed_size(suite: str) -> int:
    return P.SUITE_SEED_SIZE[P.SUITE_IDS[suite]]


def generate_pair(suite: str, signature: str) -> KeyPair:
    """Fresh seeds from the OS CSPRNG that passed the health tests, then the pairwise tests."""
    kem_seed, dsa_seed = draw_seeds([kem_seed_size(suite), P.MLDSA_SEED_SIZE])
    pair = KeyPair(PrivateKey.from_seed(suite, kem_seed), SigningKey.from_seed(signature, dsa_seed))
    pair.self_test()
    return pair


def encode_pair(pair: KeyPair) -> bytes:
    kem_seed = pair.kem.seed_bytes()
    return bytes([_PAIR_FORMAT, len(kem_seed)]) + kem_seed + pair.signing.seed_bytes()


def _seed_parts(kem_seed: bytes, dsa_seed: bytes) -> dict[str, bytes]:
    """Each independent seed of a version: ML-KEM d and z, the X25519 scalar (x-wing), ML-DSA xi."""
    half = P.MLKEM_SEED_SIZE // 2
    parts = {"ML-KEM seed d": kem_seed[:half], "ML-KEM seed z": kem_seed[half : 2 * half]}
    if len(kem_seed) > P.MLKEM_SEED_SIZE:
        parts["X25519 key"] = kem_seed[P.MLKEM_SEED_SIZE :]
    return parts | {"ML-DSA seed": dsa_seed}


def decode_pair(
    blob: bytes, suite: str, signature: str, min_entropy: int, *, imported: bool = False
) -> KeyPair:
    """The pair of a stored (or ``imported``) secret; ``InvalidDataError`` if it is malformed,
    ``WeakSecretError`` if a seed is shorter than ``min_entropy`` bits or, when imported, fails
    the health tests a generated seed passes (``check_seed``)."""
    size = kem_seed_size(suite)
    if len(blob) != 2 + size + P.MLDSA_SEED_SIZE or blob[:2] != bytes([_PAIR_FORMAT, size]):
        raise InvalidDataError(f"stored {suite} key material has the wrong format or length")
    kem_seed, dsa_seed = blob[2 : 2 + size], blob[2 + size :]
    for what, seed in _seed_parts(kem_seed, dsa_seed).items():
        check_secret_length(seed, min_entropy, what)
        if imported:
            check_seed(seed, f"the imported {what}")
    return KeyPair(PrivateKey.from_seed(suite, kem_seed), SigningKey.from_seed(signature, dsa_seed))


@dataclass(frozen=True, repr=False)
class StoreSecret:
    """The store's own secret: the root of its convergence secrets and its audit signing key."""

    root: bytes
    audit_key: SigningKey

    def __repr__(self) -> str:
        return f"StoreSecret(audit_key={self.audit_key!r})"

    @classmethod
    def generate(cls, signature: str) -> StoreSecret:
        root, dsa_seed = draw_seeds([ROOT_SECRET_SIZE, P.MLDSA_SEED_SIZE])
        secret = cls(root, SigningKey.from_seed(signature, dsa_seed))
        secret.audit_key.self_test()
        return secret

    def to_bytes(self) -> bytes:
        return bytes([_STORE_FORMAT]) + self.root + self.audit_key.seed_bytes()

    @classmethod
    def from_bytes(cls, blob: bytes, signature: str) -> StoreSecret:
        if len(blob) != 1 + ROOT_SECRET_SIZE + P.MLDSA_SEED_SIZE or blob[0] != _STORE_FORMAT:
            raise InvalidDataError("the store secret has the wrong format or length")
        root = blob[1 : 1 + ROOT_SECRET_SIZE]
        return cls(root, SigningKey.from_seed(signature, blob[1 + ROOT_SECRET_SIZE :]))

    def convergence_secret(self, domain: str) -> bytes:
        """32-byte secret of ``domain``: HKDF-SHA3-256(root, info = label || domain)."""
        info = P.CONVERGENCE_SECRET_LABEL + domain.encode("ascii")
        return P.hkdf_sha3(self.root, info=info, length=P.CONVERGENCE_SECRET_SIZE)

    def metadata_mac_key(self) -> bytes:
        """Key of keystore.json's MAC: HKDF-SHA3-256(root, info = label)."""
        return P.metadata_mac_key(self.root)

    def audit_mac_key(self) -> bytes:
        """Key of the audit line MACs: HKDF-SHA3-256(root, info = P.AUDIT_MAC_LABEL)."""
        return P.audit_mac_key(self.root)
