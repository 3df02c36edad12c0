"""ML-DSA sender keys: ``SigningKey`` (secret: a 32-byte FIPS 204 seed) and ``VerifyingKey``.

``"ml-dsa-65"`` (default, category 3 like ML-KEM-768) or ``"ml-dsa-87"`` (CNSA 2.0 level).
Every signature carries a FIPS 204 context string, so a signature made for one purpose never
verifies for another. Signing is hedged (randomised) by `cryptography`.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import mldsa

from pqselfenc.core import _primitives as P
from pqselfenc.error import InvalidDataError, SignatureError, WeakSecretError
from pqselfenc.kem import _text
from pqselfenc.kem._text import fingerprint

_Private: TypeAlias = mldsa.MLDSA65PrivateKey | mldsa.MLDSA87PrivateKey
_Public: TypeAlias = mldsa.MLDSA65PublicKey | mldsa.MLDSA87PublicKey

ALGORITHMS = tuple(P.SIG_IDS)
_PRIVATE: dict[int, Any] = {
    P.SIG_MLDSA65: mldsa.MLDSA65PrivateKey,
    P.SIG_MLDSA87: mldsa.MLDSA87PrivateKey,
}
_PUBLIC: dict[int, Any] = {
    P.SIG_MLDSA65: mldsa.MLDSA65PublicKey,
    P.SIG_MLDSA87: mldsa.MLDSA87PublicKey,
}
_NAMES = {v: k for k, v in P.SIG_IDS.items()}
_MAX_CONTEXT = 255  # FIPS 204: ctx is at most 255 bytes


def algorithm_id(name: str) -> int:
    """Our id of the signature algorithm ``name``; ``ValueError`` for anything else."""
    if not isinstance(name, str):
        raise TypeError("algorithm must be a str such as 'ml-dsa-65'")
    try:
        return P.SIG_IDS[name]
    except KeyError:
        raise ValueError(f"unknown signature algorithm {name!r}; expected {ALGORITHMS}") from None


def _context(context: bytes) -> bytes:
    if not isinstance(context, bytes) or len(context) > _MAX_CONTEXT:
        raise ValueError(f"context must be at most {_MAX_CONTEXT} bytes")
    return context


@dataclass(frozen=True, repr=False)
class VerifyingKey:
    """A signer's public key: a frozen value; ``str()`` is pasteable text that ``parse`` reads."""

    algorithm: str
    _raw: bytes
    _key: _Public = field(compare=False, hash=False)

    @classmethod
    def from_bytes(cls, algorithm: str, raw: bytes) -> VerifyingKey:
        """The verifying key of raw FIPS 204 bytes; ``InvalidDataError`` if they are not one."""
        alg = algorithm_id(algorithm)
        raw = bytes(raw)
        if len(raw) != P.SIG_PUBLIC_KEY_SIZE[alg]:
            raise InvalidDataError(
                f"{algorithm} verifying key must be {P.SIG_PUBLIC_KEY_SIZE[alg]} bytes"
            )
        try:
            key = _PUBLIC[alg].from_public_bytes(raw)
        except ValueError as exc:
            raise InvalidDataError(f"not a valid {algorithm} verifying key") from exc
        return cls(algorithm, raw, key)

    @classmethod
    def parse(cls, text: str) -> VerifyingKey:
        """Read ``str(key)`` back; ``InvalidDataError`` on a typo or a wrong kind of key."""
        name, raw = _text.decode(text, P.VERIFYING_KEY_TEXT_PREFIX)
        if name not in P.SIG_IDS:
            raise InvalidDataError(f"unknown signature algorithm {name!r} in key text")
        return cls.from_bytes(name, raw)

    def to_bytes(self) -> bytes:
        """The raw FIPS 204 verifying key bytes."""
        return self._raw

    @property
    def algorithm_id(self) -> int:
        """The one-byte id of the signature algorithm as the envelope encodes it."""
        return P.SIG_IDS[self.algorithm]

    @property
    def key_id(self) -> bytes:
        """16-byte id: SHA3-256(``VERIFYING_KEY_ID_LABEL`` || algorithm id || key bytes), truncated;
        the audit log names checkpoint signers by it."""
        return P.key_id(P.VERIFYING_KEY_ID_LABEL, self.algorithm_id, self._raw)

    @property
    def fingerprint(self) -> str:
        """Short form of ``key_id`` for people (``xxxxxxxx-xxxxxxxx``)."""
        return fingerprint(self.key_id)

    def verify(self, signature: bytes, message: bytes, context: bytes) -> None:
        """Return if ``signature`` is this key's over (message, context), else SignatureError."""
        try:
            self._key.verify(signature, message, _context(context))
        except InvalidSignature as exc:
            raise SignatureError(f"signature by {self.fingerprint} does not verify") from exc

    def __str__(self) -> str:
        return _text.encode(f"{P.VERIFYING_KEY_TEXT_PREFIX}{self.algorithm}:", self._raw)

    def __repr__(self) -> str:
        return f"VerifyingKey({self.algorithm!r}, fingerprint={self.fingerprint!r})"


@dataclass(frozen=True, repr=False, eq=False)
class SigningKey:
    """A signer's secret key (the FIPS 204 seed). Never printed; ``seed_bytes()`` exports it."""

    algorithm: str
    _seed: bytes
    _key: _Private

    @classmethod
    def generate(
        cls, algorithm: str = "ml-dsa-65", rng: Callable[[int], bytes] = os.urandom
    ) -> SigningKey:
        """A new key from ``rng`` (the OS CSPRNG by default), with a pairwise sign/verify test."""
        key = cls.from_seed(algorithm, rng(P.MLDSA_SEED_SIZE))
        key.self_test()
        return key

    @classmethod
    def from_seed(cls, algorithm: str, seed: bytes) -> SigningKey:
        """The key of a 32-byte FIPS 204 seed (xi)."""
        alg = algorithm_id(algorithm)
        if not isinstance(seed, bytes | bytearray) or len(seed) != P.MLDSA_SEED_SIZE:
            raise ValueError(f"an ML-DSA seed is {P.MLDSA_SEED_SIZE} bytes")
        return cls(algorithm, bytes(seed), _PRIVATE[alg].from_seed_bytes(bytes(seed)))

    def seed_bytes(self) -> bytes:
        """The secret seed: the one explicit export (for the key store)."""
        return self._seed

    def verifying_key(self) -> VerifyingKey:
        """The public half: give its ``str()`` to the people who check your signatures."""
        public = self._key.public_key()
        return VerifyingKey(self.algorithm, public.public_bytes_raw(), public)

    @property
    def key_id(self) -> bytes:
        """The ``key_id`` of this key's verifying key."""
        return self.verifying_key().key_id

    @property
    def fingerprint(self) -> str:
        """The ``fingerprint`` of this key's verifying key."""
        return fingerprint(self.key_id)

    def sign(self, message: bytes, context: bytes) -> bytes:
        """ML-DSA signature over ``message`` under the FIPS 204 ``context`` string."""
        return bytes(self._key.sign(message, _context(context)))

    def self_test(self) -> None:
        """Pairwise consistency: a fresh signature verifies; else ``WeakSecretError``."""
        message = os.urandom(32)
        try:
            self.verifying_key().verify(self.sign(message, b""), message, b"")
        except SignatureError as exc:
            raise WeakSecretError("ML-DSA key failed its pairwise consistency test") from exc

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SigningKey):
            return NotImplemented
        return self.algorithm == other.algorithm and hmac.compare_digest(self._seed, other._seed)

    def __hash__(self) -> int:
        return hash(self.key_id)

    def __repr__(self) -> str:
        return f"SigningKey({self.algorithm!r}, fingerprint={self.fingerprint!r})"

    __str__ = __repr__


def algorithm_name(alg: int) -> str:
    return _NAMES[alg]
