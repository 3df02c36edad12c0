"""Key values: text round trips, typo detection, raw bytes, key ids, secrets kept out of text."""

from __future__ import annotations

import base64
import contextlib
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pqselfenc.core import _primitives as P
from pqselfenc.error import Error, InvalidDataError, SignatureError, WeakSecretError
from pqselfenc.kem import (
    SIGNATURE_ALGORITHMS,
    SUITE_NAMES,
    CryptographyBackend,
    PrivateKey,
    PublicKey,
    SigningKey,
    VerifyingKey,
    _suites,
    generate_identity,
)


def seed_for(suite: str, name: str = "k") -> bytes:
    return hashlib.shake_256(name.encode()).digest(_suites.SUITES[suite].seed_size)


@pytest.fixture(params=SUITE_NAMES)
def suite(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=SIGNATURE_ALGORITHMS)
def alg(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- text ------------------------------------------------------------------------------------


def test_public_key_text_round_trip(suite: str) -> None:
    key = PrivateKey.from_seed(suite, seed_for(suite)).recipient()
    text = str(key)
    assert text.startswith(f"pqse-pub-{suite}:")
    assert PublicKey.parse(text) == key
    assert PublicKey.parse(text).to_bytes() == key.to_bytes()
    assert str(PublicKey.parse(text)) == text


def test_verifying_key_text_round_trip(alg: str) -> None:
    key = SigningKey.from_seed(alg, bytes(32)).verifying_key()
    text = str(key)
    assert text.startswith(f"pqse-sig-{alg}:")
    assert VerifyingKey.parse(text) == key and str(VerifyingKey.parse(text)) == text


def test_pastes_may_wrap_lines_and_change_case() -> None:
    key = PrivateKey.from_seed("x-wing", seed_for("x-wing")).recipient()
    text = str(key)
    wrapped = "\n".join(text[i : i + 64] for i in range(0, len(text), 64))
    assert PublicKey.parse(f"  {wrapped}\r\n") == key
    assert PublicKey.parse(text.upper()) == key


def test_every_single_character_typo_is_caught() -> None:
    text = str(PrivateKey.from_seed("ml-kem-768", seed_for("ml-kem-768")).recipient())
    body_start = text.index(":") + 1
    for i in range(len(text)):
        typo = text[:i] + ("a" if text[i] != "a" else "7") + text[i + 1 :]
        with pytest.raises(InvalidDataError):
            PublicKey.parse(typo)
        if i % 5 == 0 and body_start <= i < len(text) - 1 and text[i] != text[i + 1]:
            swapped = text[:i] + text[i + 1] + text[i] + text[i + 2 :]
            with pytest.raises(InvalidDataError, match="checksum"):
                PublicKey.parse(swapped)


def test_truncated_or_extended_paste_is_caught() -> None:
    text = str(PrivateKey.from_seed("x-wing", seed_for("x-wing")).recipient())
    for cut in (1, 2, 8, 100, len(text) - text.index(":") - 2):
        with pytest.raises(InvalidDataError):
            PublicKey.parse(text[:-cut])
    for extra in ("a", "aaaaaaaa"):
        with pytest.raises(InvalidDataError):
            PublicKey.parse(text + extra)


def test_the_checksum_covers_the_suite_name() -> None:
    # An ML-KEM-768 key is a valid X-Wing ML-KEM part: relabelling must not parse silently.
    text = str(PrivateKey.from_seed("ml-kem-768", seed_for("ml-kem-768")).recipient())
    relabelled = text.replace("pqse-pub-ml-kem-768:", "pqse-pub-x-wing:")
    with pytest.raises(InvalidDataError, match="checksum"):
        PublicKey.parse(relabelled)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "must start with"),
        ("pqse-pub-x-wing", "must start with"),
        ("pqse-sig-ml-dsa-65:aaaa", "must start with"),
        ("pqse-pub-x-wing:aaaa", "too short"),
        ("pqse-pub-x-wing:", "base32"),
        ("pqse-pub-x-wing:0189", "base32"),
        ("pqse-pub-x-wing:aaaa=", "base32"),
        ("pqse-pub-x-wing:é", "base32"),
        ("pqse-pub-x-wing:b", "base32"),
        ("pqse-pub-x-wing:" + "a" * 20_000, "too long"),
    ],
)
def test_malformed_key_text(text: str, message: str) -> None:
    with pytest.raises(InvalidDataError, match=message):
        PublicKey.parse(text)


def test_unknown_suite_with_a_valid_checksum_is_invalid_data() -> None:
    raw = PrivateKey.from_seed("x-wing", seed_for("x-wing")).recipient().to_bytes()
    prefix = "pqse-pub-x-wing-2:"
    body = raw + P.key_text_checksum(prefix.encode(), raw)
    text = prefix + base64.b32encode(body).decode().rstrip("=").lower()
    with pytest.raises(InvalidDataError, match="unknown suite"):
        PublicKey.parse(text)


def test_verifying_key_text_is_not_a_public_key() -> None:
    text = str(SigningKey.from_seed("ml-dsa-65", bytes(32)).verifying_key())
    with pytest.raises(InvalidDataError):
        PublicKey.parse(text)
    with pytest.raises(InvalidDataError):
        VerifyingKey.parse(str(generate_identity().recipient()))


# -- raw bytes -------------------------------------------------------------------------------


def test_public_key_bytes_round_trip(suite: str) -> None:
    key = PrivateKey.from_seed(suite, seed_for(suite)).recipient()
    assert len(key.to_bytes()) == P.SUITE_PUBLIC_KEY_SIZE[P.SUITE_IDS[suite]]
    assert PublicKey.from_bytes(suite, key.to_bytes()) == key
    assert PublicKey.from_bytes(suite, bytearray(key.to_bytes())) == key


def test_invalid_public_key_bytes(suite: str) -> None:
    size = P.SUITE_PUBLIC_KEY_SIZE[P.SUITE_IDS[suite]]
    with pytest.raises(InvalidDataError, match="bytes"):
        PublicKey.from_bytes(suite, bytes(size - 1))
    with pytest.raises(InvalidDataError, match="not a valid"):
        PublicKey.from_bytes(suite, b"\xff" * size)  # coefficients >= q: FIPS 203 check


def test_low_order_x25519_point_is_refused() -> None:
    good = PrivateKey.from_seed("x-wing", seed_for("x-wing")).recipient().to_bytes()
    for point in (bytes(32), (1).to_bytes(32, "little")):
        with pytest.raises(InvalidDataError, match="not a valid x-wing"):
            PublicKey.from_bytes("x-wing", good[:-32] + point)


def test_verifying_key_bytes(alg: str) -> None:
    key = SigningKey.from_seed(alg, bytes(32)).verifying_key()
    assert VerifyingKey.from_bytes(alg, key.to_bytes()) == key
    with pytest.raises(InvalidDataError):
        VerifyingKey.from_bytes(alg, key.to_bytes()[:-1])


def test_unknown_names_are_misuse() -> None:
    with pytest.raises(ValueError, match="unknown suite"):
        PrivateKey.generate("kyber")
    with pytest.raises(ValueError, match="unknown suite"):
        PublicKey.from_bytes("ML-KEM-768", bytes(1184))
    with pytest.raises(ValueError, match="unknown signature algorithm"):
        SigningKey.generate("ml-dsa-44")
    with pytest.raises(TypeError):
        PrivateKey.generate(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="96 bytes"):
        PrivateKey.from_seed("x-wing", bytes(64))
    with pytest.raises(ValueError, match="32 bytes"):
        SigningKey.from_seed("ml-dsa-65", bytes(31))


# -- identity values -------------------------------------------------------------------------


def test_seed_export_round_trip(suite: str) -> None:
    key = generate_identity(suite)
    again = PrivateKey.from_seed(suite, key.seed_bytes())
    assert again == key and again.recipient() == key.recipient() and hash(again) == hash(key)
    assert generate_identity(suite) != key


def test_randomness_is_injected() -> None:
    def rng(n: int) -> bytes:
        return hashlib.shake_256(b"fixed").digest(n)

    assert PrivateKey.generate("x-wing", rng) == PrivateKey.generate("x-wing", rng)
    assert PrivateKey.generate("x-wing", rng).seed_bytes() == rng(96)
    assert SigningKey.generate("ml-dsa-87", rng).seed_bytes() == rng(32)


def test_key_ids_and_fingerprints(suite: str) -> None:
    key = PrivateKey.from_seed(suite, seed_for(suite))
    assert len(key.key_id) == P.KEY_ID_SIZE == 16
    assert key.key_id == key.recipient().key_id
    assert key.fingerprint == f"{key.key_id[:4].hex()}-{key.key_id[4:8].hex()}"
    other_suites = [s for s in SUITE_NAMES if s != suite]
    assert all(PrivateKey.from_seed(s, seed_for(s)).key_id != key.key_id for s in other_suites)
    sk = SigningKey.from_seed("ml-dsa-65", bytes(32))
    assert len(sk.key_id) == 16 and sk.key_id == sk.verifying_key().key_id


def test_key_id_pins_the_derivation() -> None:
    key = PrivateKey.from_seed("ml-kem-768", seed_for("ml-kem-768")).recipient()
    label = b"pqselfenc/v1/key-id"
    expected = hashlib.sha3_256(label + bytes((P.SUITE_MLKEM768,)) + key.to_bytes()).digest()
    assert key.key_id == expected[:16]


# -- secrets stay out of text ----------------------------------------------------------------


def secret_forms(seed: bytes) -> list[str]:
    return [seed.hex(), seed.hex().upper(), base64.b32encode(seed).decode().lower()[:40],
            base64.b64encode(seed).decode()[:40], repr(seed)[2:40]]  # fmt: skip


def test_secrets_are_absent_from_repr_and_str(suite: str, alg: str) -> None:
    identity = PrivateKey.from_seed(suite, seed_for(suite, "secret"))
    signing = SigningKey.from_seed(alg, hashlib.sha3_256(b"secret").digest())
    for key, seed in ((identity, identity.seed_bytes()), (signing, signing.seed_bytes())):
        for text in (repr(key), str(key), f"{key}", f"{key!r}", repr([key]), repr({"k": key})):
            assert all(form not in text for form in secret_forms(seed)), text
            assert key.fingerprint in text
    assert repr(identity) == f"PrivateKey({suite!r}, fingerprint={identity.fingerprint!r})"


def test_secrets_are_absent_from_exceptions() -> None:
    seed = seed_for("x-wing", "secret")
    for bad in (seed[:-1], seed + b"\x00"):
        with pytest.raises(ValueError) as caught:
            PrivateKey.from_seed("x-wing", bad)
        assert all(form not in str(caught.value) for form in secret_forms(seed))


# -- self-tests and signatures ---------------------------------------------------------------


def test_self_test_with_the_default_backend(suite: str) -> None:
    PrivateKey.from_seed(suite, seed_for(suite)).self_test(CryptographyBackend())


class LyingBackend(CryptographyBackend):
    """A backend whose ML-KEM key generation disagrees with FIPS 203: self_test must notice."""

    name = "lying"

    def public_key(self, algorithm: str, seed: bytes) -> bytes:
        return super().public_key(algorithm, bytes(64))


def test_self_test_catches_a_backend_that_disagrees() -> None:
    with pytest.raises(WeakSecretError, match="pairwise"):
        PrivateKey.from_seed("ml-kem-768", seed_for("ml-kem-768")).self_test(LyingBackend())


def test_sign_and_verify(alg: str) -> None:
    key = SigningKey.generate(alg)
    sig = key.sign(b"message", b"context")
    assert len(sig) == P.SIG_SIZE[P.SIG_IDS[alg]]
    key.verifying_key().verify(sig, b"message", b"context")
    for msg, ctx in ((b"messagf", b"context"), (b"message", b"contexu"), (b"message", b"")):
        with pytest.raises(SignatureError):
            key.verifying_key().verify(sig, msg, ctx)
    with pytest.raises(SignatureError):
        key.verifying_key().verify(sig[:-1], b"message", b"context")
    with pytest.raises(ValueError, match="255"):
        key.sign(b"m", bytes(256))


def test_signing_key_equality_is_by_seed() -> None:
    a, b = (
        SigningKey.from_seed("ml-dsa-65", bytes(32)),
        SigningKey.from_seed("ml-dsa-65", bytes(32)),
    )
    assert a == b and hash(a) == hash(b)
    assert a != SigningKey.from_seed("ml-dsa-87", bytes(32))


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300))
def test_random_text_raises_only_our_errors(text: str) -> None:
    for parse in (PublicKey.parse, VerifyingKey.parse):
        with pytest.raises(Error):
            parse(text)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_random_key_bytes_raise_only_our_errors(data: st.DataObject) -> None:
    suite = data.draw(st.sampled_from(SUITE_NAMES))
    size = P.SUITE_PUBLIC_KEY_SIZE[P.SUITE_IDS[suite]]
    raw = data.draw(st.binary(min_size=size, max_size=size))
    with contextlib.suppress(InvalidDataError):  # random bytes are sometimes a valid key
        PublicKey.from_bytes(suite, raw)
