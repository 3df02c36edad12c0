"""Recipients and identities: HPKE public keys that wrap a DMK, private keys that unwrap it.

As in age, the envelope only talks to two tiny protocols: a ``Recipient`` wraps the data-map key
(DMK) into a ``Stanza``, an ``Identity`` unwraps a stanza or says "not mine" (``None``).
``PublicKey`` and ``PrivateKey`` are the built-in ones, over the suites in ``_suites``.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag

from pqselfenc.core import _primitives as P
from pqselfenc.error import InvalidDataError, WeakSecretError
from pqselfenc.kem import _suites, _text
from pqselfenc.kem._backend import CryptographyBackend, KemBackend
from pqselfenc.kem._text import fingerprint

SUITE_NAMES = ("x-wing", "ml-kem-1024", "ml-kem-768")
assert set(SUITE_NAMES) == set(P.SUITE_IDS)


@dataclass(frozen=True)
class Stanza:
    """One recipient's share of an envelope: key id and HPKE ``enc || wrapped DMK``."""

    key_id: bytes
    body: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, bytes) or len(self.key_id) != P.KEY_ID_SIZE:
            raise ValueError(f"a stanza key id is {P.KEY_ID_SIZE} bytes")
        if not isinstance(self.body, bytes):
            raise TypeError("a stanza body is bytes")

    def __repr__(self) -> str:
        return f"Stanza(key_id={self.key_id[:8].hex()}.., body={len(self.body)} bytes)"


@runtime_checkable
class Recipient(Protocol):
    """Wraps a DMK for one reader. ``suite`` names the HPKE suite of its stanzas."""

    @property
    def suite(self) -> str:
        """The suite name (``"x-wing"``, ``"ml-kem-1024"``, ``"ml-kem-768"``) of its stanzas."""
        ...

    def wrap(self, dmk: bytes, envelope_id: bytes) -> Stanza:
        """A stanza that gives ``dmk`` to this reader only, bound to ``envelope_id``."""
        ...


@runtime_checkable
class Identity(Protocol):
    """Unwraps a stanza addressed to it; returns ``None`` for any stanza it cannot open."""

    @property
    def suite(self) -> str:
        """The suite name of the stanzas this identity can open."""
        ...

    def unwrap(self, stanza: Stanza, envelope_id: bytes) -> bytes | None:
        """The DMK if ``stanza`` is for this identity and opens under ``envelope_id``; else
        ``None`` (never an exception, so callers cannot tell "not mine" from "tampered")."""
        ...


@dataclass(frozen=True, repr=False)
class PublicKey:
    """A recipient's public key: a frozen value. ``str()`` is pasteable text; ``parse`` reads it."""

    suite: str
    _raw: bytes
    _key: _suites.HpkePublic = field(compare=False, hash=False)

    @classmethod
    def from_bytes(cls, suite: str, raw: bytes) -> PublicKey:
        """The key of raw bytes; ``InvalidDataError`` unless they are a valid ``suite`` key."""
        info = _suites.suite(suite)
        if not isinstance(raw, bytes | bytearray | memoryview):
            raise TypeError("a public key is bytes")
        raw = bytes(raw)
        return cls(info.name, raw, _suites.public_key(info, raw))

    @classmethod
    def parse(cls, text: str) -> PublicKey:
        """Read ``str(key)`` back; ``InvalidDataError`` on a typo or a wrong kind of key."""
        name, raw = _text.decode(text, P.PUBLIC_KEY_TEXT_PREFIX)
        if name not in _suites.SUITES:
            raise InvalidDataError(f"unknown suite {name!r} in key text")
        return cls.from_bytes(name, raw)

    def to_bytes(self) -> bytes:
        """The raw public key bytes (ML-KEM encapsulation key, then X25519 for x-wing)."""
        return self._raw

    @property
    def key_id(self) -> bytes:
        """16-byte id that stanzas carry: SHA3-256(``KEY_ID_LABEL`` || suite id || key bytes),
        truncated. Public, stable, and the same for every envelope sealed to this key."""
        return P.key_id(P.KEY_ID_LABEL, _suites.SUITES[self.suite].id, self._raw)

    @property
    def fingerprint(self) -> str:
        """Short form of ``key_id`` (``xxxxxxxx-xxxxxxxx``) for people to compare out of band."""
        return fingerprint(self.key_id)

    def wrap(self, dmk: bytes, envelope_id: bytes) -> Stanza:
        """HPKE-encrypt the DMK to this key, bound to the envelope id and the suite."""
        info = _suites.SUITES[self.suite]
        body = info.hpke().encrypt(dmk, self._key, P.stanza_info(envelope_id, info.id))
        return Stanza(self.key_id, body)

    def __str__(self) -> str:
        return _text.encode(f"{P.PUBLIC_KEY_TEXT_PREFIX}{self.suite}:", self._raw)

    def __repr__(self) -> str:
        return f"PublicKey({self.suite!r}, fingerprint={self.fingerprint!r})"


@dataclass(frozen=True, repr=False, eq=False)
class PrivateKey:
    """An identity: the secret seed of a suite. Never printed; ``seed_bytes()`` exports it."""

    suite: str
    _seed: bytes
    _key: _suites.HpkePrivate
    _public: PublicKey

    @classmethod
    def generate(
        cls, suite: str = "x-wing", rng: Callable[[int], bytes] = os.urandom
    ) -> PrivateKey:
        """A new identity from ``rng`` (the OS CSPRNG by default), with a pairwise self-test."""
        key = cls.from_seed(suite, rng(_suites.suite(suite).seed_size))
        key.self_test()
        return key

    @classmethod
    def from_seed(cls, suite: str, seed: bytes) -> PrivateKey:
        """The identity of a seed: 64-byte ML-KEM ``d || z``, + 32-byte X25519 key for x-wing."""
        info = _suites.suite(suite)
        if not isinstance(seed, bytes | bytearray) or len(seed) != info.seed_size:
            raise ValueError(f"a {info.name} seed is {info.seed_size} bytes")
        seed = bytes(seed)
        raw = _suites.public_bytes(info, seed)
        public = PublicKey(info.name, raw, _suites.public_key(info, raw))
        return cls(info.name, seed, _suites.private_key(info, seed), public)

    def seed_bytes(self) -> bytes:
        """The secret seed: the one explicit export (for the key store)."""
        return self._seed

    def recipient(self) -> PublicKey:
        """The public key that seals to this identity (give its ``str()`` to senders)."""
        return self._public

    @property
    def key_id(self) -> bytes:
        """The ``key_id`` of this identity's public key: stanzas addressed to it carry it."""
        return self._public.key_id

    @property
    def fingerprint(self) -> str:
        """The ``fingerprint`` of this identity's public key."""
        return self._public.fingerprint

    def unwrap(self, stanza: Stanza, envelope_id: bytes) -> bytes | None:
        """The DMK in ``stanza`` if it is addressed to this key and opens; else ``None``."""
        info = _suites.SUITES[self.suite]
        if stanza.key_id != self.key_id or len(stanza.body) != info.stanza_body_size:
            return None
        try:
            dmk = info.hpke().decrypt(stanza.body, self._key, P.stanza_info(envelope_id, info.id))
        except (InvalidTag, ValueError):
            return None
        return dmk if len(dmk) == P.DMK_SIZE else None

    def self_test(self, backend: KemBackend | None = None) -> None:
        """Pairwise consistency: a DMK wrapped to this key unwraps; with a second ``backend``,
        its ML-KEM key from the seed, its encapsulation and its decapsulation agree with
        `cryptography`.
        ``WeakSecretError`` on any mismatch."""
        dmk, envelope_id = os.urandom(P.DMK_SIZE), os.urandom(P.ENVELOPE_ID_SIZE)
        ok = self.unwrap(self._public.wrap(dmk, envelope_id), envelope_id) == dmk
        if ok and backend is not None:
            ok = _backends_agree(_suites.SUITES[self.suite], self._seed, backend)
        if not ok:
            raise WeakSecretError(f"{self.suite} key failed its pairwise consistency test")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PrivateKey):
            return NotImplemented
        return self.suite == other.suite and hmac.compare_digest(self._seed, other._seed)

    def __hash__(self) -> int:
        return hash(self.key_id)

    def __repr__(self) -> str:
        return f"PrivateKey({self.suite!r}, fingerprint={self.fingerprint!r})"

    __str__ = __repr__


def _backends_agree(info: _suites.SuiteInfo, seed: bytes, backend: KemBackend) -> bool:
    mlkem_seed = seed[: P.MLKEM_SEED_SIZE]
    reference = CryptographyBackend()
    public = backend.public_key(info.mlkem, mlkem_seed)
    if public != _suites.mlkem_public_bytes(info, seed):
        return False
    ciphertext, secret = backend.encapsulate(info.mlkem, public)
    if not hmac.compare_digest(reference.decapsulate(info.mlkem, mlkem_seed, ciphertext), secret):
        return False
    ciphertext, secret = reference.encapsulate(info.mlkem, public)  # and the other way round
    return hmac.compare_digest(backend.decapsulate(info.mlkem, mlkem_seed, ciphertext), secret)


def generate_identity(suite: str = "x-wing") -> PrivateKey:
    """A new identity (``PrivateKey.generate``) for ``"x-wing"``, ``"ml-kem-1024"`` or
    ``"ml-kem-768"``."""
    return PrivateKey.generate(suite)
