"""``KeyConfig``: the key store's policy (rotation, entropy bound, post-quantum only)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from pqselfenc.core import _primitives as P
from pqselfenc.kem import SUITE_NAMES

__all__ = ["PQ_SIGNATURES", "PQ_SUITES", "KeyConfig", "check_name"]

# Every KEM suite this store accepts when ``quantum_safe`` is set: ML-KEM alone or in the
# X-Wing hybrid. A classical-only suite (e.g. plain X25519) is refused.
PQ_SUITES = frozenset({"x-wing", "ml-kem-1024", "ml-kem-768"})
PQ_SIGNATURES = frozenset({"ml-dsa-65", "ml-dsa-87"})

# Names of identities, recipients and domains: short, printable, safe as file and keyring names.
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")

# min_entropy is the least claimed security strength (bits) of any algorithm the store accepts
# (P.SUITE_STRENGTH_BITS, P.SIG_STRENGTH_BITS: 192 or 256 today) and the least size in bits of
# any secret it accepts (every seed and the root secret are 256 bits). A bound above 256 could
# never be met; one below 128 is not post-quantum.
_MIN_ENTROPY_RANGE = (128, 256)


def check_name(name: object, what: str = "name") -> str:
    """``name`` if it is a valid identity/recipient/domain name, else ``ValueError``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"{what} must match [a-z0-9][a-z0-9._-]{{0,63}}")
    return name


@dataclass(frozen=True)
class KeyConfig:
    """Policy of a ``KeyStore``.

    ``rotation_interval``: an active key older than this is due for rotation.
    ``min_entropy``: the least security strength in bits the store accepts: a KEM suite or
    signature whose claimed strength is lower is refused (192: every suite; 256: only
    ml-kem-1024 and ml-dsa-87), and so is a secret shorter than this many bits.
    ``quantum_safe``: refuse any KEM suite or signature that is not post-quantum.
    ``suite`` / ``signature``: algorithms of new identities.
    ``min_passphrase_bits``: estimated strength (zxcvbn) a new passphrase must reach.
    ``domain``: the convergence domain whose secret ``KeyStore.convergence_secret()`` returns.
    ``checkpoint_every``: the audit log gets a signed checkpoint after this many events.
    """

    rotation_interval: timedelta = timedelta(days=90)
    min_entropy: int = 192
    quantum_safe: bool = True
    suite: str = "x-wing"
    signature: str = "ml-dsa-65"
    min_passphrase_bits: int = 64
    domain: str = "default"
    checkpoint_every: int = 32

    def __post_init__(self) -> None:
        if not isinstance(self.rotation_interval, timedelta) or self.rotation_interval <= timedelta(
            0
        ):
            raise ValueError("rotation_interval must be a positive timedelta")
        low, high = _MIN_ENTROPY_RANGE
        if type(self.min_entropy) is not int or not low <= self.min_entropy <= high:
            raise ValueError(f"min_entropy must be an int in [{low}, {high}] bits")
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
        if not isinstance(suite, str) or suite not in SUITE_NAMES:
            raise ValueError(f"unknown suite {suite!r:.40}; expected one of {list(SUITE_NAMES)}")
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
