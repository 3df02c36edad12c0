"""Regenerate tests/vectors/envelope_*.txt (sealed-envelope fixtures, age-testkit style).

Run only on purpose (a format change): the committed files are what pins the format. HPKE draws
its ephemeral keys from OpenSSL, so a rerun gives other (equally valid) envelope bytes.
    python3 tests/vectors/make_envelope_vectors.py

Each file: ``# comment``, ``expect:`` (success | no match | malformed | signature failure),
``identity: <suite> <seed hex>`` (one or more), ``expected_signer:`` (key text or none),
``data_map:`` (hex, success only) and ``envelope:`` (hex).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pqselfenc import DataMap, EncryptionConfig, SelfEncryptor
from pqselfenc.core import _primitives as P
from pqselfenc.kem import PrivateKey, SigningKey, VerifyingKey, _envelope, _suites, seal

HERE = Path(__file__).parent


def identity(suite: str, name: str) -> PrivateKey:
    seed = hashlib.shake_256(f"envelope-vector/{name}".encode()).digest(
        _suites.SUITES[suite].seed_size
    )
    return PrivateKey.from_seed(suite, seed)


def signer(alg: str, name: str) -> SigningKey:
    return SigningKey.from_seed(alg, hashlib.sha3_256(f"envelope-vector/{name}".encode()).digest())


def rng_for(label: str) -> Callable[[int], bytes]:
    counter = iter(range(1 << 20))
    return lambda n: hashlib.shake_256(f"{label}/{next(counter)}".encode()).digest(n)


def write(
    name: str,
    comment: str,
    expect: str,
    identities: list[PrivateKey],
    envelope: bytes,
    data_map: DataMap | None = None,
    expected: VerifyingKey | None = None,
) -> None:
    lines = [f"# {comment}", f"expect: {expect}"]
    lines += [f"identity: {i.suite} {i.seed_bytes().hex()}" for i in identities]
    lines.append(f"expected_signer: {expected if expected is not None else 'none'}")
    if data_map is not None:
        lines.append(f"data_map: {data_map.to_bytes().hex()}")
    lines.append(f"envelope: {envelope.hex()}")
    (HERE / f"envelope_{name}.txt").write_text("\n".join(lines) + "\n")


def flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def stanza_end(suite: str, count: int = 1) -> int:
    return 28 + count * (P.KEY_ID_SIZE + _suites.SUITES[suite].stanza_body_size)


def authentic_garbage(alice: PrivateKey) -> bytes:
    """A correctly sealed envelope whose payload is not a DataMap (a hostile sender)."""
    info, dmk, eid = _suites.SUITES[alice.suite], rng_for("garbage")(32), bytes(range(16))
    body = b"this is not a DataMap"
    stanza = alice.recipient().wrap(dmk, eid)
    header = _envelope._header(info, eid, [stanza], None, len(body) + P.TAG_SIZE)
    mac = P.header_mac(dmk, header)
    return (
        header + mac + AESGCM(P.payload_key(dmk, eid)).encrypt(P.PAYLOAD_NONCE, body, header + mac)
    )


def success_vectors(big: DataMap, small: DataMap) -> None:
    alice, bob = identity("x-wing", "alice"), identity("x-wing", "bob")
    sealed = seal(big, [alice.recipient(), bob.recipient()], rng=rng_for("xwing"))
    write(
        "success_xwing_two_recipients",
        "X-Wing, alice and bob; bob opens",
        "success",
        [bob],
        sealed,
        big,
    )
    a1024 = identity("ml-kem-1024", "alice")
    s87 = signer("ml-dsa-87", "carol")
    sealed = seal(small, [a1024.recipient()], s87, rng=rng_for("1024"))
    write(
        "success_mlkem1024_signed87",
        "ML-KEM-1024, signed ML-DSA-87, signer named",
        "success",
        [a1024],
        sealed,
        small,
        s87.verifying_key(),
    )
    a768, s65 = identity("ml-kem-768", "alice"), signer("ml-dsa-65", "carol")
    sealed = seal(small, [a768.recipient()], s65, rng=rng_for("768"))
    write(
        "success_mlkem768_signed65",
        "ML-KEM-768, signed ML-DSA-65, signer named",
        "success",
        [a768],
        sealed,
        small,
        s65.verifying_key(),
    )
    write(
        "success_signed_signer_not_named",
        "signed, no signer named: still verified, opens",
        "success",
        [a768],
        sealed,
        small,
    )
    other = identity("x-wing", "dave")
    write(
        "success_second_identity_matches",
        "two identities given, the second is addressed",
        "success",
        [other, a768],
        sealed,
        small,
    )


def failure_vectors(small: DataMap) -> None:
    a768, carol = identity("ml-kem-768", "alice"), identity("ml-kem-768", "carol")
    sealed = seal(small, [a768.recipient()], rng=rng_for("base"))
    end = stanza_end("ml-kem-768")
    mac_at = end + 5
    no_match = [
        ("no_match_other_identity", "addressed to alice, opened by carol", [carol], sealed),
        (
            "no_match_other_suite",
            "ML-KEM-768 envelope, X-Wing identity",
            [identity("x-wing", "alice")],
            sealed,
        ),
        ("no_match_bad_envelope_id", "envelope id byte flipped", [a768], flip(sealed, 10)),
        ("no_match_bad_stanza", "wrapped DMK byte flipped", [a768], flip(sealed, end - 1)),
        ("no_match_bad_mac", "header MAC byte flipped", [a768], flip(sealed, mac_at)),
        ("no_match_bad_payload", "payload tag byte flipped", [a768], flip(sealed, len(sealed) - 1)),
    ]
    other = seal(small, [a768.recipient()], rng=rng_for("other"))
    no_match.append(
        (
            "no_match_stanza_transplant",
            "alice's stanza from another envelope",
            [a768],
            sealed[:28] + other[28:end] + sealed[end:],
        )
    )
    for name, comment, ids, blob in no_match:
        write(name, comment, "no match", ids, blob)
    malformed = [
        ("malformed_truncated", "one byte short", sealed[:-1]),
        ("malformed_trailing", "one byte extra", sealed + b"\x00"),
        ("malformed_bad_magic", "magic changed", b"PQSESEAX" + sealed[8:]),
        ("malformed_version_2", "version 2", sealed[:8] + b"\x02" + sealed[9:]),
        ("malformed_unknown_suite", "suite id 9", sealed[:9] + b"\x09" + sealed[10:]),
        ("malformed_zero_stanzas", "stanza count 0", sealed[:26] + b"\x00\x00" + sealed[end:]),
        (
            "malformed_duplicate_stanza",
            "the same stanza twice",
            sealed[:26] + struct.pack(">H", 2) + sealed[28:end] * 2 + sealed[end:],
        ),
        (
            "malformed_payload_length",
            "payload length 0",
            sealed[: end + 1] + bytes(4) + sealed[mac_at:],
        ),
        (
            "malformed_payload_not_a_data_map",
            "authentic payload that is not a DataMap",
            authentic_garbage(a768),
        ),
    ]
    for name, comment, blob in malformed:
        write(name, comment, "malformed", [a768], blob)
    signature_vectors(small, a768, sealed)


def signature_vectors(small: DataMap, a768: PrivateKey, unsigned: bytes) -> None:
    real, mallory = signer("ml-dsa-65", "carol"), signer("ml-dsa-65", "mallory")
    signed = seal(small, [a768.recipient()], real, rng=rng_for("signed"))
    write(
        "signature_wrong_signer",
        "signed by carol, mallory expected",
        "signature failure",
        [a768],
        signed,
        expected=mallory.verifying_key(),
    )
    write(
        "signature_unsigned_but_expected",
        "unsigned, carol expected",
        "signature failure",
        [a768],
        unsigned,
        expected=real.verifying_key(),
    )
    write(
        "signature_bad_signature",
        "last signature byte flipped, no signer named",
        "signature failure",
        [a768],
        flip(signed, len(signed) - 1),
    )
    bad_payload = flip(signed, len(signed) - P.SIG_SIZE[P.SIG_MLDSA65] - 1)
    write(
        "signature_bad_payload",
        "payload byte flipped under a signature, carol expected",
        "signature failure",
        [a768],
        bad_payload,
        expected=real.verifying_key(),
    )


def main() -> None:
    big = SelfEncryptor(bytes(range(256)) * 4, EncryptionConfig(chunk_size=256)).encrypt()[0]
    small = SelfEncryptor(b"hi", EncryptionConfig()).encrypt()[0]
    for old in HERE.glob("envelope_*.txt"):
        old.unlink()
    success_vectors(big, small)
    failure_vectors(small)


if __name__ == "__main__":
    main()
