"""Generation-process assurance for key material, said honestly.

What this module does, and what it does not claim:

* Keys come only from the OS CSPRNG (``os.urandom``). Nothing here can make a bad generator good.
* The raw bytes drawn for a key pass the SP 800-90B section 4.4 continuous health tests
  (repetition count, adaptive proportion) before any key is built from them. Those tests catch a
  stuck or badly broken source (all zeros, a repeating pattern); a failed draw is retried a bounded
  number of times, then generation stops with ``WeakSecretError``.
* Statistical tests on a finished key prove nothing about its entropy; none are run or claimed.
* Imported seeds (an identity export) pass the same health tests as a generated draw, on their
  own bytes: no byte value repeated 4 or more times in a row (repetition count), none taking 13
  or more of the seed (adaptive proportion), and no period of 16 bytes or less (all-zero and
  constant seeds have period 1). These refuse trivial, stuck or hand-made seeds; a seed that
  passes can still be known to someone else (a deterministic generator passes them too).
* Imported secrets are refused when they are shorter than ``min_entropy`` bits (a length check:
  the only honest upper bound on the entropy of bytes someone hands us; every seed a store
  holds is 256 bits, so with today's seeds it never refuses one).
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
    "check_seed",
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


def shortest_period(seed: bytes, limit: int = P.SEED_MAX_PERIOD) -> int | None:
    """The smallest p <= ``limit`` with ``seed[i] == seed[i + p]`` everywhere, or None."""
    for period in range(1, min(limit, len(seed) - 1) + 1):
        if seed[period:] == seed[:-period]:
            return period
    return None


def check_seed(seed: bytes, what: str = "seed") -> bytes:
    """``seed`` if it passes the SP 800-90B continuous health tests a generated draw passes
    (repetition count, adaptive proportion) on its own bytes and repeats with no period of at
    most ``P.SEED_MAX_PERIOD`` bytes; else ``WeakSecretError``. A check against trivial seeds,
    never a measure of entropy (see the module docstring)."""
    if not seed or not repetition_count_ok(seed) or not adaptive_proportion_ok(seed):
        raise WeakSecretError(f"{what} fails the SP 800-90B health tests (a stuck or made-up seed)")
    period = shortest_period(seed)
    if period is not None:
        raise WeakSecretError(f"{what} repeats every {period} bytes (a made-up seed)")
    return seed


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
