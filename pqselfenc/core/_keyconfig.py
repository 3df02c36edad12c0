"""``KeyConfig``: the key store's policy (rotation, entropy bound, post-quantum only, escrow).

Pure policy data, so it lives in core: ``EncryptionConfig.keys`` holds one, and the key store
(``pqselfenc.keys``, which re-exports this class) enforces it. Nothing here touches a key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from pqselfenc.core import _primitives as P

__all__ = ["PQ_SIGNATURES", "PQ_SUITES", "KeyConfig", "as_names", "check_name"]

# Every KEM suite this store accepts when ``quantum_safe`` is set: ML-KEM alone or in the
# X-Wing hybrid. A classical-only suite (e.g. plain X25519) is refused.
PQ_SUITES = frozenset({"x-wing", "ml-kem-1024", "ml-kem-768"})
PQ_SIGNATURES = frozenset(P.SIG_IDS)

# Names of identities, recipients and domains: short, printable, safe as file and keyring names.
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")

# min_entropy is the least claimed security strength (bits) of any algorithm the store accepts
# (P.SUITE_STRENGTH_BITS, P.SIG_STRENGTH_BITS: 192 or 256 today) and the least size in bits of
# any secret it accepts (every seed and the root secret are 256 bits). A bound above 256 could
# never be met; one below 128 is not post-quantum.
_MIN_ENTROPY_RANGE = (128, 256)
_DEFAULT_MIN_ENTROPY = 192
# New identities' algorithms when none is named: the first of each list strong enough for the
# policy's min_entropy (so KeyConfig(min_entropy=256) means ML-KEM-1024 and ML-DSA-87).
_PREFERENCE = {
    "suite": (("x-wing", "ml-kem-1024"), P.SUITE_IDS, P.SUITE_STRENGTH_BITS),
    "signature": (("ml-dsa-65", "ml-dsa-87"), P.SIG_IDS, P.SIG_STRENGTH_BITS),
}
_DEFAULT_ROTATION = timedelta(days=90)


def check_name(name: object, what: str = "name") -> str:
    """``name`` if it is a valid identity/recipient/domain name, else ``ValueError``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"{what} must match [a-z0-9][a-z0-9._-]{{0,63}}")
    return name


def as_names(value: object, what: str) -> tuple[str, ...]:
    """A tuple of valid names, each once, in the order given, from an iterable of names (a
    single string is refused: it would be read letter by letter)."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(f"{what} must be a list of names")
    return tuple(dict.fromkeys(check_name(name, what) for name in value))


def as_interval(value: object) -> timedelta:
    """A positive ``timedelta`` from a ``timedelta`` or a number of seconds (int or float)."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError("rotation_interval must be a timedelta or a number of seconds")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError("rotation_interval must be positive")
    try:
        return value if isinstance(value, timedelta) else timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError("rotation_interval is too large") from None


@dataclass(frozen=True, init=False)
class KeyConfig:
    """Policy of a ``KeyStore``.

    ``rotation_interval``: an active key older than this is due for rotation; a ``timedelta``
    or a number of seconds (``30 * 24 * 60 * 60``), kept as a ``timedelta``.
    ``min_entropy``: the least security strength in bits the store accepts: a KEM suite or
    signature whose claimed strength is lower is refused (192: every suite; 256: only
    ml-kem-1024 and ml-dsa-87), and so is a secret shorter than this many bits. It is a policy
    on algorithms and lengths, not a measurement of randomness (docs/guide.md).
    ``quantum_safe``: refuse any KEM suite or signature that is not post-quantum.
    ``suite`` / ``signature``: algorithms of new identities; by default the first strong enough
    for ``min_entropy`` (x-wing / ml-dsa-65 at 192 bits, ml-kem-1024 / ml-dsa-87 at 256).
    ``min_passphrase_bits``: estimated strength (zxcvbn) a new passphrase must reach.
    ``domain``: the convergence domain whose secret ``KeyStore.convergence_secret()`` returns.
    ``checkpoint_every``: the audit log gets a signed checkpoint after this many events.
    ``escrow``: names of recipients (an organisation's break-glass keys) that every map this
    store seals is also sealed to; a seal is refused when one of them is missing or unusable.
    The store's own escrow policy (``KeyStore.escrow``, kept in keystore.json) applies as well:
    the policy in force is the union of both.
    """

    rotation_interval: timedelta
    min_entropy: int
    quantum_safe: bool
    suite: str
    signature: str
    min_passphrase_bits: int
    domain: str
    checkpoint_every: int
    escrow: tuple[str, ...]

    def __init__(
        self,
        rotation_interval: timedelta | float = _DEFAULT_ROTATION,
        min_entropy: int = _DEFAULT_MIN_ENTROPY,
        quantum_safe: bool = True,
        suite: str | None = None,
        signature: str | None = None,
        min_passphrase_bits: int = 64,
        domain: str = "default",
        checkpoint_every: int = 32,
        escrow: Iterable[str] = (),
    ) -> None:
        _check_min_entropy(min_entropy)
        suite = suite if suite is not None else _default("suite", min_entropy)
        signature = signature if signature is not None else _default("signature", min_entropy)
        values = {
            "rotation_interval": as_interval(rotation_interval), "min_entropy": min_entropy,
            "quantum_safe": quantum_safe, "suite": suite, "signature": signature,
            "min_passphrase_bits": min_passphrase_bits, "domain": domain,
            "checkpoint_every": checkpoint_every, "escrow": as_names(escrow, "escrow"),
        }  # fmt: skip
        for name, value in values.items():
            object.__setattr__(self, name, value)
        self._validate()

    def _validate(self) -> None:
        if not isinstance(self.quantum_safe, bool):
            raise TypeError("quantum_safe must be a bool")
        if type(self.min_passphrase_bits) is not int or not 40 <= self.min_passphrase_bits <= 256:
            raise ValueError("min_passphrase_bits must be an int in [40, 256]")
        if type(self.checkpoint_every) is not int or not 1 <= self.checkpoint_every <= 1 << 16:
            raise ValueError("checkpoint_every must be an int in [1, 65536]")
        check_name(self.domain, "domain")
        self.check_suite(self.suite)
        self.check_signature(self.signature)

    def check_suite(self, suite: str) -> str:
        """``suite`` if this policy allows it (post-quantum, at least ``min_entropy`` bits
        strong), else ``ValueError``."""
        if isinstance(suite, str) and self.quantum_safe and suite not in PQ_SUITES:
            raise ValueError(f"suite {suite!r:.40} is not post-quantum (quantum_safe=True)")
        if not isinstance(suite, str) or suite not in P.SUITE_IDS:
            raise ValueError(f"unknown suite {suite!r:.40}; expected one of {list(P.SUITE_IDS)}")
        return self._strong(suite, P.SUITE_STRENGTH_BITS[P.SUITE_IDS[suite]])

    def check_signature(self, alg: str) -> str:
        """``alg`` if this policy allows it (ML-DSA, at least ``min_entropy`` bits strong), else
        ``ValueError``."""
        if not isinstance(alg, str) or alg not in PQ_SIGNATURES:
            raise ValueError(f"signature {alg!r:.40} is not one of {sorted(PQ_SIGNATURES)}")
        return self._strong(alg, P.SIG_STRENGTH_BITS[P.SIG_IDS[alg]])

    def _strong(self, alg: str, bits: int) -> str:
        if bits < self.min_entropy:
            raise ValueError(f"{alg} is {bits}-bit strong, below min_entropy={self.min_entropy}")
        return alg


def _check_min_entropy(value: object) -> None:
    low, high = _MIN_ENTROPY_RANGE
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"min_entropy must be an int in [{low}, {high}] bits")


def _default(kind: str, min_entropy: int) -> str:
    """The first preferred ``kind`` of algorithm whose claimed strength meets ``min_entropy``."""
    names, ids, bits = _PREFERENCE[kind]
    return next(name for name in names if bits[ids[name]] >= min_entropy)
