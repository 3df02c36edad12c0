"""The three HPKE suites: names, ids, sizes, and the `cryptography` key objects behind them.

Every suite is HPKE (RFC 9180, base mode) with KDF SHAKE256 and AEAD AES-256-GCM; only the KEM
differs. The bytes carry our own suite ids (``_primitives.SUITE_*``), never cryptography's enum
values. This module is the only place that builds `cryptography` key objects for the KEMs and
translates their exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from pqselfenc.core import _primitives as P
from pqselfenc.error import InvalidDataError

HpkePrivate: TypeAlias = (
    hpke.MLKEM768X25519PrivateKey | mlkem.MLKEM768PrivateKey | mlkem.MLKEM1024PrivateKey
)
HpkePublic: TypeAlias = (
    hpke.MLKEM768X25519PublicKey | mlkem.MLKEM768PublicKey | mlkem.MLKEM1024PublicKey
)

# A fixed X25519 scalar used only to reject low-order public points at parse time: any clamped
# scalar maps a low-order point to the identity, which `exchange` refuses.
_LOW_ORDER_PROBE = x25519.X25519PrivateKey.from_private_bytes(bytes(range(32)))


@dataclass(frozen=True)
class SuiteInfo:
    """One suite: its text name, byte id, ML-KEM parameter set and exact sizes."""

    name: str
    id: int
    mlkem: str  # "ML-KEM-768" / "ML-KEM-1024": the name backends use
    kem: hpke.KEM

    @property
    def public_key_size(self) -> int:
        return P.SUITE_PUBLIC_KEY_SIZE[self.id]

    @property
    def enc_size(self) -> int:
        return P.SUITE_ENC_SIZE[self.id]

    @property
    def seed_size(self) -> int:
        return P.SUITE_SEED_SIZE[self.id]

    @property
    def stanza_body_size(self) -> int:
        return self.enc_size + P.WRAPPED_DMK_SIZE

    @property
    def hybrid(self) -> bool:
        return self.id == P.SUITE_XWING

    def hpke(self) -> hpke.Suite:
        return hpke.Suite(self.kem, hpke.KDF.SHAKE256, hpke.AEAD.AES_256_GCM)


SUITES: dict[str, SuiteInfo] = {
    "x-wing": SuiteInfo("x-wing", P.SUITE_XWING, "ML-KEM-768", hpke.KEM.MLKEM768_X25519),
    "ml-kem-1024": SuiteInfo("ml-kem-1024", P.SUITE_MLKEM1024, "ML-KEM-1024", hpke.KEM.MLKEM1024),
    "ml-kem-768": SuiteInfo("ml-kem-768", P.SUITE_MLKEM768, "ML-KEM-768", hpke.KEM.MLKEM768),
}
SUITES_BY_ID: dict[int, SuiteInfo] = {s.id: s for s in SUITES.values()}
assert {s.id: s.name for s in SUITES.values()} == {v: k for k, v in P.SUITE_IDS.items()}


def suite(name: str) -> SuiteInfo:
    """The suite called ``name``; ``ValueError`` (misuse) for anything else."""
    if not isinstance(name, str):
        raise TypeError("suite must be a str such as 'x-wing'")
    try:
        return SUITES[name]
    except KeyError:
        raise ValueError(f"unknown suite {name!r}; expected one of {sorted(SUITES)}") from None


def private_key(info: SuiteInfo, seed: bytes) -> HpkePrivate:
    """The HPKE private key of a seed (length already checked by the caller)."""
    d_z = seed[: P.MLKEM_SEED_SIZE]
    if info.id == P.SUITE_MLKEM1024:
        return mlkem.MLKEM1024PrivateKey.from_seed_bytes(d_z)
    mlkem_key = mlkem.MLKEM768PrivateKey.from_seed_bytes(d_z)
    if not info.hybrid:
        return mlkem_key
    x_key = x25519.X25519PrivateKey.from_private_bytes(seed[P.MLKEM_SEED_SIZE :])
    return hpke.MLKEM768X25519PrivateKey(mlkem_key, x_key)


def mlkem_public_bytes(info: SuiteInfo, seed: bytes) -> bytes:
    """The ML-KEM part of the public key of a seed."""
    d_z = seed[: P.MLKEM_SEED_SIZE]
    if info.id == P.SUITE_MLKEM1024:
        return mlkem.MLKEM1024PrivateKey.from_seed_bytes(d_z).public_key().public_bytes_raw()
    return mlkem.MLKEM768PrivateKey.from_seed_bytes(d_z).public_key().public_bytes_raw()


def public_bytes(info: SuiteInfo, seed: bytes) -> bytes:
    """Raw public key of a seed: the ML-KEM key, then (X-Wing) the X25519 key."""
    raw = mlkem_public_bytes(info, seed)
    if info.hybrid:
        x_key = x25519.X25519PrivateKey.from_private_bytes(seed[P.MLKEM_SEED_SIZE :])
        raw += x_key.public_key().public_bytes_raw()
    return raw


def public_key(info: SuiteInfo, raw: bytes) -> HpkePublic:
    """The HPKE public key of raw bytes; ``InvalidDataError`` if they are not a valid key."""
    if len(raw) != info.public_key_size:
        raise InvalidDataError(
            f"{info.name} public key must be {info.public_key_size} bytes, got {len(raw)}"
        )
    try:
        return _public_key(info, raw)
    except ValueError as exc:
        raise InvalidDataError(f"not a valid {info.name} public key") from exc


def _public_key(info: SuiteInfo, raw: bytes) -> HpkePublic:
    if info.id == P.SUITE_MLKEM1024:
        return mlkem.MLKEM1024PublicKey.from_public_bytes(raw)
    if not info.hybrid:
        return mlkem.MLKEM768PublicKey.from_public_bytes(raw)
    split = len(raw) - P.X25519_KEY_SIZE
    mlkem_key = mlkem.MLKEM768PublicKey.from_public_bytes(raw[:split])
    x_key = x25519.X25519PublicKey.from_public_bytes(raw[split:])
    _LOW_ORDER_PROBE.exchange(x_key)  # ValueError on a low-order point
    return hpke.MLKEM768X25519PublicKey(mlkem_key, x_key)
