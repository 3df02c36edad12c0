"""Fuzz targets for the kem layer: sealed envelopes (parse, and open) and key text."""

from __future__ import annotations

import functools
from collections.abc import Callable

from fuzz_targets import Target, core_samples, det_bytes

from pqselfenc.core import _primitives as P
from pqselfenc.core.datamap import DataMap
from pqselfenc.error import Error, SignatureError
from pqselfenc.kem import (
    PrivateKey,
    PublicKey,
    SigningKey,
    VerifyingKey,
    inspect,
    open_sealed,
    seal,
)


def _rng(label: str) -> Callable[[int], bytes]:
    """A deterministic 'rng' for seeds (fixed DMK and envelope id per label)."""
    return lambda n: det_bytes(label + str(n), n)


def _identity(suite: str, k: int) -> PrivateKey:
    size = P.SUITE_SEED_SIZE[P.SUITE_IDS[suite]]
    return PrivateKey.from_seed(suite, det_bytes(f"{suite}/{k}", size))


@functools.cache
def identities() -> dict[str, tuple[PrivateKey, PrivateKey]]:
    """Two deterministic identities per suite."""
    return {suite: (_identity(suite, 0), _identity(suite, 1)) for suite in P.SUITE_IDS}


@functools.cache
def signers() -> dict[str, SigningKey]:
    return {a: SigningKey.from_seed(a, det_bytes(a, P.MLDSA_SEED_SIZE)) for a in P.SIG_IDS}


@functools.cache
def sealed_samples() -> tuple[tuple[bytes, DataMap], ...]:
    """(envelope, map) for: each suite unsigned, two recipients, each signature algorithm."""
    maps = [m for m, _, _ in core_samples()[:3]]
    ids = identities()
    sig = signers()
    plan = [
        ("x-wing", 1, None, maps[0]),
        ("ml-kem-1024", 1, "ml-dsa-87", maps[1]),
        ("ml-kem-768", 2, None, maps[2]),
        ("x-wing", 2, "ml-dsa-65", maps[1]),
    ]
    out = []
    for suite, n, alg, m in plan:
        readers = [k.recipient() for k in ids[suite][:n]]
        signer = None if alg is None else sig[alg]
        out.append((seal(m, readers, signer, rng=_rng(f"{suite}{n}{alg}")), m))
    return tuple(out)


def _parse_envelope(data: bytes) -> object:
    return inspect(data)


def _open_envelope(data: bytes) -> object:
    """Open a (mutated) envelope with every identity. Only an ``Error`` may come out; a map that
    opens must be one that was sealed; a signer check passes exactly for the real signers."""
    readers = [k for pair in identities().values() for k in pair]
    opened = open_sealed(data, readers)
    assert opened in [m for _, m in sealed_samples()], "a forged envelope opened to another map"
    expected = [s.verifying_key() for s in signers().values()]
    signer = inspect(data).signer
    if signer is None:
        try:
            open_sealed(data, readers, expected)
        except SignatureError:
            return opened
        raise AssertionError("an unsigned envelope passed a signer check")
    assert signer in expected, "an envelope opened under a signer nobody used"
    assert open_sealed(data, readers, expected) == opened
    return opened


def _key_text_seeds() -> list[bytes]:
    keys: list[PublicKey | VerifyingKey] = [p[0].recipient() for p in identities().values()]
    keys += [s.verifying_key() for s in signers().values()]
    return [str(k).encode() for k in keys]


def _parse_key_text(data: bytes) -> object:
    """Both key-text parsers on the input (as UTF-8 when it decodes, else Latin-1); a key that
    parses must print back to text that parses to the same key."""
    text = data.decode("utf-8", errors="strict") if _is_utf8(data) else data.decode("latin-1")
    parsed = []
    for cls in (PublicKey, VerifyingKey):
        try:
            key = cls.parse(text)
        except Error:
            continue
        assert cls.parse(str(key)) == key
        parsed.append(key)
    return parsed


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _envelope_seeds() -> list[bytes]:
    return [e for e, _ in sealed_samples()]


def kem_targets() -> list[Target]:
    return [
        Target("envelope_parse", _parse_envelope, _envelope_seeds),
        Target("envelope_open", _open_envelope, _envelope_seeds),
        Target("public_key_text", _parse_key_text, _key_text_seeds),
    ]
