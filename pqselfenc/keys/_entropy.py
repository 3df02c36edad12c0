"""Generation-process assurance for key material, said honestly.

What this module does, and what it does not claim:

* Keys come only from the OS CSPRNG (``os.urandom``). Nothing here can make a bad generator good.
* The raw bytes drawn for a key pass the SP 800-90B section 4.4 continuous health tests
  (repetition count, adaptive proportion) before any key is built from them. Those tests catch a
  stuck or badly broken source (all zeros, a repeating pattern); a failed draw is retried a bounded
  number of times, then generation stops with ``WeakSecretError``.
* Statistical tests on a finished key prove nothing about its entropy; none are run or claimed.
* Imported secrets are refused when they are shorter than the entropy bound (a length check: the
  only honest bound on the entropy of bytes someone hands us).
* Passphrases get a strength estimate (zxcvbn's guess count, in bits) and weak ones are refused.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Sequence

from pqselfenc.core import _primitives as P
from pqselfenc.error import WeakSecretError

__all__ = [
    "adaptive_proportion_ok",
    "check_passphrase",
    "check_secret_length",
    "draw_seeds",
    "estimate_passphrase_bits",
    "repetition_count_ok",
]

Source = Callable[[int], bytes]

# zxcvbn's matchers are super-linear in the input length; longer passphrases are estimated on
# their first 72 characters (its own cap): a lower bound on the whole, never an over-estimate.
_ZXCVBN_MAX = 72


def repetition_count_ok(samples: bytes, cutoff: int = P.RCT_CUTOFF) -> bool:
    """SP 800-90B 4.4.1: False if any byte value repeats ``cutoff`` or more times in a row."""
    run = 1
    for prev, cur in itertools.pairwise(samples):
        run = run + 1 if cur == prev else 1
        if run >= cutoff:
            return False
    return True


def adaptive_proportion_ok(
    samples: bytes, cutoff: int = P.APT_CUTOFF, window: int = P.APT_WINDOW
) -> bool:
    """SP 800-90B 4.4.2: False if a window's first byte occurs ``cutoff`` or more times in it.

    Windows are consecutive and non-overlapping; a trailing partial window is tested too (a
    proportion reached in fewer samples is no less a failure).
    """
    for start in range(0, len(samples), window):
        block = samples[start : start + window]
        if block.count(block[0]) >= cutoff:
            return False
    return True


def draw_seeds(sizes: Sequence[int], source: Source | None = None) -> list[bytes]:
    """Fresh seeds of the given sizes, from raw CSPRNG bytes that passed both health tests.

    One draw covers at least one full APT window (512 bytes); the seeds are cut from the tested
    bytes, so every seed byte was under test. ``source`` exists for testing the failure path;
    the key store never passes it and so always reads ``os.urandom``.
    """
    read = source if source is not None else os.urandom
    total = sum(sizes)
    if not sizes or min(sizes) <= 0:
        raise ValueError("seed sizes must be positive")
    length = max(total, P.APT_WINDOW)
    for _ in range(P.HEALTH_TEST_RETRIES):
        raw = read(length)
        if len(raw) == length and repetition_count_ok(raw) and adaptive_proportion_ok(raw):
            return _split(raw[:total], sizes)
    raise WeakSecretError(
        f"the random source failed the SP 800-90B health tests {P.HEALTH_TEST_RETRIES} times;"
        " refusing to generate keys"
    )


def _split(raw: bytes, sizes: Sequence[int]) -> list[bytes]:
    out, pos = [], 0
    for size in sizes:
        out.append(raw[pos : pos + size])
        pos += size
    return out


def check_secret_length(secret: bytes, min_entropy: int, what: str = "secret") -> bytes:
    """``secret`` if it can carry ``min_entropy`` bits (8 per byte at best), else refuse."""
    if len(secret) * 8 < min_entropy:
        raise WeakSecretError(
            f"{what} has at most {len(secret) * 8} bits, below the {min_entropy}-bit bound"
        )
    return secret


def estimate_passphrase_bits(passphrase: str) -> float:
    """log2 of zxcvbn's estimated guess count: dictionary words, names, keyboard walks, dates,
    repeats and sequences count for what an attacker's guesser would pay for them."""
    import zxcvbn  # deferred: its dictionaries take ~0.2 s to load

    if not isinstance(passphrase, str):
        raise TypeError("passphrase must be a str")
    if not passphrase:
        return 0.0
    result = zxcvbn.zxcvbn(passphrase[:_ZXCVBN_MAX])
    return float(result["guesses_log10"]) * math.log2(10)


def check_passphrase(passphrase: str, min_bits: int) -> str:
    """``passphrase`` if its estimated strength reaches ``min_bits``, else ``WeakSecretError``."""
    bits = estimate_passphrase_bits(passphrase)
    if bits < min_bits:
        raise WeakSecretError(
            f"passphrase too weak: estimated {bits:.0f} bits, {min_bits} required"
            " (use several random words)"
        )
    return passphrase
