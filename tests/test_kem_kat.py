"""Known answers from outside: NIST ML-KEM / ML-DSA KATs and the HPKE-PQ vectors shipped in
`cryptography-vectors`, run through pqselfenc.kem's own key derivation from seeds.

- ML-KEM-768/1024 (every vector): ``PrivateKey.from_seed(d || z)`` gives ``pk``; the backend's
  decapsulation of ``ct`` gives ``ss`` and of the invalid ``ct_n`` gives the implicit-rejection
  secret ``ss_n``.
- ML-DSA-65/87 (every vector): ``SigningKey.from_seed(xi)`` gives ``pk``; the deterministic KAT
  signature over (msg, ctx) verifies through ``VerifyingKey``, and fails on a changed message.
- HPKE-PQ (draft-ietf-hpke-pq) vectors for our three KEMs: the recipient key from ``skRm``
  (X-Wing: SHAKE256-expanded to our 96-byte seed) gives ``pkRm`` and opens the first message.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import cryptography_vectors
import pytest
from cryptography.hazmat.bindings._rust import openssl as rust_openssl
from cryptography.hazmat.primitives import hpke

from pqselfenc.error import SignatureError
from pqselfenc.kem import CryptographyBackend, PrivateKey, SigningKey, VerifyingKey, _suites

VECTORS = Path(os.path.dirname(cryptography_vectors.__file__))


def rsp_records(path: Path) -> Iterator[dict[str, str]]:
    """The ``key = value`` blocks of a NIST .rsp file, one dict per ``count``."""
    record: dict[str, str] = {}
    with path.open() as f:
        for line in f:
            key, sep, value = line.strip().partition(" = ")
            if not sep:
                continue
            if key == "count" and record:
                yield record
                record = {}
            record[key] = value
    if record:
        yield record


MLKEM = [
    ("ml-kem-768", "ML-KEM-768", "kat_MLKEM_768.rsp"),
    ("ml-kem-1024", "ML-KEM-1024", "kat_MLKEM_1024.rsp"),
]
MLDSA = [("ml-dsa-65", "kat_MLDSA_65_det_pure.rsp"), ("ml-dsa-87", "kat_MLDSA_87_det_pure.rsp")]


@pytest.mark.parametrize(("suite", "algorithm", "filename"), MLKEM)
def test_mlkem_kat_keygen_and_decaps(suite: str, algorithm: str, filename: str) -> None:
    backend = CryptographyBackend()
    n = 0
    for v in rsp_records(VECTORS / "asymmetric" / "MLKEM" / filename):
        seed = bytes.fromhex(v["d"] + v["z"])
        key = PrivateKey.from_seed(suite, seed)
        assert key.recipient().to_bytes().hex() == v["pk"], f"count {v['count']}"
        assert backend.public_key(algorithm, seed).hex() == v["pk"]
        ss = backend.decapsulate(algorithm, seed, bytes.fromhex(v["ct"]))
        assert ss.hex() == v["ss"], f"count {v['count']}"
        ss_n = backend.decapsulate(algorithm, seed, bytes.fromhex(v["ct_n"]))
        assert ss_n.hex() == v["ss_n"], f"count {v['count']} (implicit rejection)"
        n += 1
    assert n == 1000


@pytest.mark.parametrize(("algorithm", "filename"), MLDSA)
def test_mldsa_kat_keygen_and_verify(algorithm: str, filename: str) -> None:
    n = 0
    for v in rsp_records(VECTORS / "asymmetric" / "MLDSA" / filename):
        key = SigningKey.from_seed(algorithm, bytes.fromhex(v["xi"]))
        public = key.verifying_key()
        assert public.to_bytes().hex() == v["pk"], f"count {v['count']}"
        msg, sm, ctx = (bytes.fromhex(v[k]) for k in ("msg", "sm", "ctx"))
        sig = sm[: len(sm) - len(msg)]
        assert sm[len(sig) :] == msg
        VerifyingKey.from_bytes(algorithm, bytes.fromhex(v["pk"])).verify(sig, msg, ctx)
        with pytest.raises(SignatureError):
            public.verify(sig, msg + b"\x00", ctx)
        n += 1
    assert n == 100


KEMS = {0x0041: "ml-kem-768", 0x0042: "ml-kem-1024", 0x647A: "x-wing"}
KDFS = {
    0x0001: hpke.KDF.HKDF_SHA256,
    0x0002: hpke.KDF.HKDF_SHA384,
    0x0003: hpke.KDF.HKDF_SHA512,
    0x0010: hpke.KDF.SHAKE128,
    0x0011: hpke.KDF.SHAKE256,
}
AEADS = {
    0x0001: hpke.AEAD.AES_128_GCM,
    0x0002: hpke.AEAD.AES_256_GCM,
    0x0003: hpke.AEAD.CHACHA20_POLY1305,
}


def hpke_pq_vectors() -> list[dict[str, object]]:
    doc = json.loads((VECTORS / "HPKE" / "hpke-pq-test-vectors.json").read_text())
    return [v for v in doc if v["kem_id"] in KEMS and v["kdf_id"] in KDFS and v["mode"] == 0]


def our_seed(suite: str, sk: bytes) -> bytes:
    # X-Wing's 32-byte decapsulation key expands with SHAKE256 to ML-KEM d || z || X25519 key,
    # which is exactly the 96-byte seed pqselfenc stores; ML-KEM keys are the 64-byte d || z.
    return hashlib.shake_256(sk).digest(96) if suite == "x-wing" else sk


def test_hpke_pq_vectors_cover_every_suite() -> None:
    assert {KEMS[int(str(v["kem_id"]))] for v in hpke_pq_vectors()} == set(KEMS.values())


@pytest.mark.parametrize("v", hpke_pq_vectors(), ids=lambda v: f"kem{v['kem_id']}-kdf{v['kdf_id']}")
def test_hpke_pq_vector_through_our_keys(v: dict[str, str]) -> None:
    suite = KEMS[int(v["kem_id"])]
    key = PrivateKey.from_seed(suite, our_seed(suite, bytes.fromhex(v["skRm"])))
    assert key.recipient().to_bytes().hex() == v["pkRm"]
    first = v["encryptions"][0]  # type: ignore[index]
    kem, kdf, aead = _suites.SUITES[suite].kem, KDFS[int(v["kdf_id"])], AEADS[int(v["aead_id"])]
    hpke_suite = hpke.Suite(kem, kdf, aead)
    # Single-shot HPKE with the vector's AAD: cryptography's public decrypt() fixes AAD empty.
    pt = rust_openssl.hpke._decrypt_with_aad(
        hpke_suite,
        bytes.fromhex(v["enc"] + first["ct"]),
        key._key,
        info=bytes.fromhex(v["info"]),
        aad=bytes.fromhex(first["aad"]),
    )
    assert pt.hex() == first["pt"]


# -- ML-DSA against an independent implementation ---------------------------------------------


@pytest.mark.parametrize("algorithm", ["ml-dsa-65", "ml-dsa-87"])
def test_ml_dsa_agrees_with_dilithium_py(algorithm: str) -> None:
    """dilithium-py (pure-Python FIPS 204, no code shared with OpenSSL) derives the same public
    key from a seed, verifies our context-bound signatures, and makes ones we verify; a wrong
    context or a flipped bit fails in both."""
    from dilithium_py.ml_dsa import ML_DSA_65, ML_DSA_87

    other = {"ml-dsa-65": ML_DSA_65, "ml-dsa-87": ML_DSA_87}[algorithm]
    for _ in range(3):
        seed = os.urandom(32)
        ours = SigningKey.from_seed(algorithm, seed)
        pk, sk = other.key_derive(seed)
        assert ours.verifying_key().to_bytes() == bytes(pk)
        message, context = os.urandom(100), b"pqselfenc test context"
        signature = ours.sign(message, context)
        assert other.verify(pk, message, signature, ctx=context)
        assert not other.verify(pk, message, signature, ctx=b"another context")
        theirs = bytes(other.sign(sk, message, ctx=context))
        ours.verifying_key().verify(theirs, message, context)
        flipped = bytes([theirs[0] ^ 1]) + theirs[1:]
        with pytest.raises(SignatureError):
            ours.verifying_key().verify(flipped, message, context)
