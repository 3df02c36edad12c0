"""Sealed-envelope fixtures (tests/vectors/envelope_*.txt), age-testkit style.

Generated once by tests/vectors/make_envelope_vectors.py and committed: a fixed identity seed,
an envelope and the expected outcome, for success and for each failure class. If the envelope
format, a derivation or a check drifts, these fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pqselfenc import DataMap
from pqselfenc.error import DecryptionError, Error, InvalidDataError, SignatureError
from pqselfenc.kem import PrivateKey, VerifyingKey, inspect, open_sealed

VECTORS = sorted((Path(__file__).parent / "vectors").glob("envelope_*.txt"))
ERRORS: dict[str, type[Error]] = {
    "no match": DecryptionError,
    "malformed": InvalidDataError,
    "signature failure": SignatureError,
}


def load(path: Path) -> tuple[dict[str, str], list[PrivateKey]]:
    fields: dict[str, str] = {}
    identities: list[PrivateKey] = []
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(": ")
        if key == "identity":
            suite, seed = value.split()
            identities.append(PrivateKey.from_seed(suite, bytes.fromhex(seed)))
        else:
            assert key not in fields, f"{path.name}: {key} twice"
            fields[key] = value
    return fields, identities


def test_every_outcome_is_covered() -> None:
    outcomes = {load(p)[0]["expect"] for p in VECTORS}
    assert outcomes == {"success", *ERRORS}
    assert len(VECTORS) >= 20


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.name)
def test_vector(path: Path) -> None:
    fields, identities = load(path)
    envelope = bytes.fromhex(fields["envelope"])
    signer = fields["expected_signer"]
    expected = None if signer == "none" else VerifyingKey.parse(signer)
    if fields["expect"] == "success":
        got = open_sealed(envelope, identities, expected_signer=expected)
        assert got == DataMap.from_bytes(bytes.fromhex(fields["data_map"]))
        assert inspect(envelope).envelope_id  # parses without keys
    else:
        with pytest.raises(ERRORS[fields["expect"]]):
            open_sealed(envelope, identities, expected_signer=expected)
