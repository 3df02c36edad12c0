"""The sealed envelope: round trips, recipients, tampering, structure, signatures, misuse."""

from __future__ import annotations

import contextlib
import hashlib
import struct
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from pqselfenc import DataMap, EncryptionConfig, SelfEncryptor
from pqselfenc.core import _primitives as P
from pqselfenc.error import (
    DecryptionError,
    EncryptionError,
    Error,
    InvalidDataError,
    SignatureError,
)
from pqselfenc.kem import (
    SUITE_NAMES,
    PrivateKey,
    PublicKey,
    SigningKey,
    Stanza,
    VerifyingKey,
    _envelope,
    _suites,
    inspect,
    open_sealed,
    seal,
)

NO_MATCH = "no identity matched"


def seeded(suite: str, name: str) -> PrivateKey:
    size = _suites.SUITES[suite].seed_size
    return PrivateKey.from_seed(suite, hashlib.shake_256(name.encode()).digest(size))


def signer(alg: str = "ml-dsa-65", name: str = "signer") -> SigningKey:
    return SigningKey.from_seed(alg, hashlib.sha3_256(name.encode()).digest())


def counter_rng() -> Callable[[int], bytes]:
    state = iter(range(1 << 30))
    return lambda n: hashlib.shake_256(next(state).to_bytes(4, "big")).digest(n)


@pytest.fixture(scope="module")
def data_map() -> DataMap:
    return SelfEncryptor(bytes(range(256)) * 3, EncryptionConfig(chunk_size=256)).encrypt()[0]


@pytest.fixture(scope="module")
def small_map() -> DataMap:
    return SelfEncryptor(b"hi", EncryptionConfig()).encrypt()[0]


@pytest.fixture(scope="module", params=SUITE_NAMES)
def suite(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- round trips -------------------------------------------------------------------------------


def test_round_trip_per_suite(suite: str, data_map: DataMap) -> None:
    alice = seeded(suite, "alice")
    sealed = seal(data_map, [alice.recipient()])
    assert open_sealed(sealed, [alice]) == data_map
    info = inspect(sealed)
    assert info.suite == suite and info.recipients == (alice.key_id,) and info.signer is None
    assert info.payload_size == len(data_map.to_bytes()) + P.TAG_SIZE


@pytest.mark.parametrize("alg", ["ml-dsa-65", "ml-dsa-87"])
def test_signed_round_trip(suite: str, alg: str, data_map: DataMap) -> None:
    alice, sk = seeded(suite, "alice"), signer(alg)
    sealed = seal(data_map, [alice.recipient()], signer=sk)
    assert open_sealed(sealed, [alice], expected_signer=sk.verifying_key()) == data_map
    either = [signer(alg, "x").verifying_key(), sk.verifying_key()]
    assert open_sealed(sealed, [alice], expected_signer=either) == data_map
    assert open_sealed(sealed, [alice]) == data_map  # verified against the embedded key
    assert inspect(sealed).signer == sk.verifying_key()
    assert inspect(sealed).signer_key_id == sk.key_id


def test_every_recipient_of_a_multi_recipient_envelope_opens(suite: str, data_map: DataMap) -> None:
    readers = [seeded(suite, f"reader-{i}") for i in range(6)]
    sealed = seal(data_map, [r.recipient() for r in readers])
    assert inspect(sealed).recipients == tuple(r.key_id for r in readers)
    for r in readers:
        assert open_sealed(sealed, [r]) == data_map
    # Several identities to try, only the last one addressed:
    others = [seeded(suite, f"other-{i}") for i in range(3)]
    assert open_sealed(sealed, [*others, readers[-1]]) == data_map


def test_last_of_a_hundred_recipients_opens(data_map: DataMap) -> None:
    readers = [seeded("x-wing", f"r{i}") for i in range(100)]
    sealed = seal(data_map, [r.recipient() for r in readers])
    assert open_sealed(sealed, [readers[-1]]) == data_map


def test_identities_of_other_suites_are_skipped(data_map: DataMap) -> None:
    alice768, alice_xw = seeded("ml-kem-768", "alice"), seeded("x-wing", "alice")
    sealed = seal(data_map, [alice768.recipient()])
    assert open_sealed(sealed, [alice_xw, alice768]) == data_map
    with pytest.raises(DecryptionError, match=NO_MATCH):
        open_sealed(sealed, [alice_xw])


def test_the_same_public_key_twice_gets_one_stanza(data_map: DataMap) -> None:
    alice = seeded("x-wing", "alice")
    sealed = seal(data_map, [alice.recipient(), PublicKey.parse(str(alice.recipient()))])
    assert inspect(sealed).recipients == (alice.key_id,)


def test_fresh_dmk_and_envelope_id_per_seal(data_map: DataMap) -> None:
    alice = seeded("x-wing", "alice")
    a, b = (seal(data_map, [alice.recipient()]) for _ in range(2))
    assert inspect(a).envelope_id != inspect(b).envelope_id and a != b


def test_randomness_is_injected(data_map: DataMap) -> None:
    alice = seeded("ml-kem-768", "alice")
    sealed = seal(data_map, [alice.recipient()], rng=counter_rng())
    rng = counter_rng()
    rng(P.DMK_SIZE)  # first call draws the DMK, the second the envelope id
    assert inspect(sealed).envelope_id == rng(P.ENVELOPE_ID_SIZE)
    with pytest.raises(ValueError, match="rng must return"):
        seal(data_map, [alice.recipient()], rng=lambda n: bytes(n - 1))


class WrappingRecipient:
    """A third-party Recipient: anything with ``suite`` and ``wrap`` plugs into seal()."""

    def __init__(self, key: PublicKey) -> None:
        self.key, self.calls = key, 0

    @property
    def suite(self) -> str:
        return self.key.suite

    def wrap(self, dmk: bytes, envelope_id: bytes) -> Stanza:
        self.calls += 1
        return self.key.wrap(dmk, envelope_id)


def test_recipient_and_identity_are_protocols(data_map: DataMap) -> None:
    alice = seeded("x-wing", "alice")
    custom = WrappingRecipient(alice.recipient())
    sealed = seal(data_map, [custom])
    assert custom.calls == 1 and open_sealed(sealed, [alice]) == data_map


# -- who may open ------------------------------------------------------------------------------


def test_non_recipient_gets_the_uniform_error(suite: str, data_map: DataMap) -> None:
    sealed = seal(data_map, [seeded(suite, "alice").recipient()])
    with pytest.raises(DecryptionError, match=NO_MATCH) as caught:
        open_sealed(sealed, [seeded(suite, "mallory")])
    assert caught.value.__cause__ is None


def tamper_error(sealed: bytes, alice: PrivateKey) -> type[Exception] | None:
    try:
        open_sealed(sealed, [alice])
    except Error as exc:
        return type(exc)
    return None


def regions(sealed: bytes, suite: str) -> dict[str, range]:
    """Byte ranges of an unsigned single-recipient envelope, by field."""
    body = _suites.SUITES[suite].stanza_body_size
    stanza_end = 28 + P.KEY_ID_SIZE + body
    header_end = stanza_end + 1 + 4
    mac_end = header_end + P.HEADER_MAC_SIZE
    return {
        "magic/version/suite": range(0, 10),
        "envelope id": range(10, 26),
        "count": range(26, 28),
        "stanza": range(28, stanza_end),
        "signer alg + payload length": range(stanza_end, header_end),
        "mac": range(header_end, mac_end),
        "payload": range(mac_end, len(sealed)),
    }


STRUCTURAL = {"magic/version/suite", "count", "signer alg + payload length"}


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_flipping_any_byte_fails_with_the_right_error(mask: int, small_map: DataMap) -> None:
    alice = seeded("ml-kem-768", "alice")
    sealed = seal(small_map, [alice.recipient()])
    for field, span in regions(sealed, "ml-kem-768").items():
        expected = InvalidDataError if field in STRUCTURAL else DecryptionError
        for i in span:
            flipped = bytearray(sealed)
            flipped[i] ^= mask
            assert tamper_error(bytes(flipped), alice) is expected, (field, i)


def test_flipping_any_byte_of_a_signed_envelope_fails(small_map: DataMap) -> None:
    alice, sk = seeded("ml-kem-768", "alice"), signer()
    sealed = seal(small_map, [alice.recipient()], signer=sk)
    signer_alg = 28 + P.KEY_ID_SIZE + _suites.SUITES["ml-kem-768"].stanza_body_size
    structural = {*range(10), 26, 27, signer_alg, *range(signer_alg + 1953, signer_alg + 1957)}
    for i in range(len(sealed)):
        flipped = bytearray(sealed)
        flipped[i] ^= 0x01
        got = tamper_error(bytes(flipped), alice)
        # No secret is touched before the signature checks out: every non-structural flip is a
        # SignatureError, whether or not a signer was expected.
        assert got is (InvalidDataError if i in structural else SignatureError), i


def test_a_stanza_moved_into_another_envelope_fails(suite: str, data_map: DataMap) -> None:
    alice, bob = seeded(suite, "alice"), seeded(suite, "bob")
    one = seal(data_map, [alice.recipient()])
    two = seal(data_map, [bob.recipient()])
    stanza_one = _envelope._parse(one).stanzas[0]
    start, end = 28, 28 + P.KEY_ID_SIZE + len(stanza_one.body)
    moved = two[:start] + one[start:end] + two[end:]
    assert inspect(moved).recipients == (alice.key_id,)
    with pytest.raises(DecryptionError, match=NO_MATCH):
        open_sealed(moved, [alice])
    # The HPKE info alone already refuses it (before any MAC): the stanza names its envelope.
    assert alice.unwrap(stanza_one, inspect(two).envelope_id) is None
    assert alice.unwrap(stanza_one, inspect(one).envelope_id) is not None


def test_identity_checks_key_id_and_body_length(data_map: DataMap) -> None:
    alice = seeded("x-wing", "alice")
    eid = bytes(16)
    stanza = alice.recipient().wrap(bytes(32), eid)
    assert alice.unwrap(stanza, eid) == bytes(32)
    assert alice.unwrap(Stanza(bytes(16), stanza.body), eid) is None
    assert alice.unwrap(Stanza(stanza.key_id, stanza.body[:-1]), eid) is None


# -- structure ---------------------------------------------------------------------------------


def test_truncation_at_every_length_is_invalid_data(small_map: DataMap) -> None:
    alice = seeded("ml-kem-768", "alice")
    sealed = seal(small_map, [alice.recipient()], signer=signer())
    for n in range(len(sealed)):
        with pytest.raises(InvalidDataError):
            open_sealed(sealed[:n], [alice])
        with pytest.raises(InvalidDataError):
            inspect(sealed[:n])


@pytest.mark.parametrize("extra", [b"\x00", b"\x00" * 100, b"PQSESEAL"])
def test_trailing_bytes_are_invalid_data(extra: bytes, small_map: DataMap) -> None:
    alice = seeded("x-wing", "alice")
    for sk in (None, signer()):
        sealed = seal(small_map, [alice.recipient()], signer=sk)
        with pytest.raises(InvalidDataError, match="trailing"):
            open_sealed(sealed + extra, [alice])


def rebuild(sealed: bytes, count: int, stanzas: bytes) -> bytes:
    """The envelope with its stanza count and stanza bytes replaced (MAC left stale)."""
    parsed = _envelope._parse(sealed)
    n = len(parsed.stanzas) * (P.KEY_ID_SIZE + len(parsed.stanzas[0].body))
    return sealed[:26] + struct.pack(">H", count) + stanzas + sealed[28 + n :]


def test_stanza_count_is_bounded_and_exact(small_map: DataMap) -> None:
    alice = seeded("ml-kem-768", "alice")
    sealed = seal(small_map, [alice.recipient()])
    one = sealed[28 : 28 + P.KEY_ID_SIZE + 1136]
    with pytest.raises(InvalidDataError, match="outside"):
        inspect(rebuild(sealed, 0, b""))
    with pytest.raises(InvalidDataError, match="outside"):
        inspect(rebuild(sealed, P.MAX_STANZAS + 1, one * (P.MAX_STANZAS + 1)))
    with pytest.raises(InvalidDataError, match="share one key id"):
        inspect(rebuild(sealed, 2, one + one))


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [(0, b"X", "magic"), (8, b"\x02", "version"), (9, b"\x00", "suite"), (9, b"\x04", "suite")],
)
def test_header_fields_are_checked(
    offset: int, value: bytes, message: str, small_map: DataMap
) -> None:
    sealed = seal(small_map, [seeded("ml-kem-768", "a").recipient()])
    bad = sealed[:offset] + value + sealed[offset + 1 :]
    with pytest.raises(InvalidDataError, match=message):
        inspect(bad)


def test_unknown_signature_algorithm_and_payload_bounds(small_map: DataMap) -> None:
    sealed = seal(small_map, [seeded("ml-kem-768", "a").recipient()])
    at = 28 + P.KEY_ID_SIZE + 1136
    with pytest.raises(InvalidDataError, match="signature algorithm"):
        inspect(sealed[:at] + b"\x03" + sealed[at + 1 :])
    for size in (0, P.TAG_SIZE, P.ENVELOPE_MAX_PAYLOAD + 1):
        bad = sealed[: at + 1] + struct.pack(">I", size) + sealed[at + 5 :]
        with pytest.raises(InvalidDataError, match="out of range"):
            inspect(bad)


def test_authentic_payload_that_is_not_a_data_map(small_map: DataMap) -> None:
    # A sender who holds the DMK can seal any bytes; the result must still be refused cleanly.
    alice = seeded("x-wing", "alice")
    info, dmk, eid = _suites.SUITES["x-wing"], bytes(range(32)), bytes(16)
    garbage = b"not a data map at all"
    stanza = alice.recipient().wrap(dmk, eid)
    header = _envelope._header(info, eid, [stanza], None, len(garbage) + P.TAG_SIZE)
    mac = P.header_mac(dmk, header)
    payload = AESGCM(P.payload_key(dmk, eid)).encrypt(P.PAYLOAD_NONCE, garbage, header + mac)
    with pytest.raises(InvalidDataError, match="not a valid DataMap"):
        open_sealed(header + mac + payload, [alice])


# -- signatures --------------------------------------------------------------------------------


def test_wrong_signer_fails_verification(data_map: DataMap) -> None:
    alice = seeded("x-wing", "alice")
    sealed = seal(data_map, [alice.recipient()], signer=signer(name="real"))
    with pytest.raises(SignatureError, match="not an expected signer"):
        open_sealed(sealed, [alice], expected_signer=signer(name="other").verifying_key())
    with pytest.raises(SignatureError, match="not an expected signer"):
        open_sealed(sealed, [alice], expected_signer=signer("ml-dsa-87", "real").verifying_key())


def test_unsigned_envelope_fails_when_a_signer_is_expected(data_map: DataMap) -> None:
    alice = seeded("x-wing", "alice")
    sealed = seal(data_map, [alice.recipient()])
    with pytest.raises(SignatureError, match="not signed"):
        open_sealed(sealed, [alice], expected_signer=[signer().verifying_key()])


def test_signer_swapped_for_another_key_fails(data_map: DataMap) -> None:
    # Mallory replaces the embedded verifying key and signature with his own: without the DMK
    # he cannot fix the header MAC, and the named-signer check catches him first anyway.
    alice, real, mallory = seeded("ml-kem-768", "alice"), signer(name="real"), signer(name="m")
    sealed = seal(data_map, [alice.recipient()], signer=real)
    at = 28 + P.KEY_ID_SIZE + 1136 + 1
    forged = bytearray(sealed[:at] + mallory.verifying_key().to_bytes() + sealed[at + 1952 : -3309])
    forged += mallory.sign(bytes(forged), P.SIGNATURE_CONTEXT)
    with pytest.raises(SignatureError):
        open_sealed(bytes(forged), [alice], expected_signer=real.verifying_key())
    with pytest.raises(DecryptionError, match=NO_MATCH):
        open_sealed(bytes(forged), [alice])


def test_stripped_signature_fails(data_map: DataMap) -> None:
    alice, sk = seeded("x-wing", "alice"), signer()
    sealed = seal(data_map, [alice.recipient()], signer=sk)
    with pytest.raises(InvalidDataError):
        open_sealed(sealed[:-3309], [alice])


# -- misuse ------------------------------------------------------------------------------------


def test_seal_misuse(data_map: DataMap) -> None:
    xw, k768 = seeded("x-wing", "a"), seeded("ml-kem-768", "b")
    with pytest.raises(ValueError, match="at least one"):
        seal(data_map, [])
    with pytest.raises(ValueError, match="share one suite"):
        seal(data_map, [xw.recipient(), k768.recipient()])
    with pytest.raises(TypeError):
        seal(data_map, xw.recipient())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        seal(data_map, [str(xw.recipient())])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        seal(data_map.to_bytes(), [xw.recipient()])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        seal(data_map, [xw.recipient()], signer=xw)  # type: ignore[arg-type]


def test_too_many_recipients(small_map: DataMap) -> None:
    seeds = (i.to_bytes(64, "little") for i in range(P.MAX_STANZAS + 1))
    many = [PrivateKey.from_seed("ml-kem-768", seed).recipient() for seed in seeds]
    with pytest.raises(ValueError, match=f"at most {P.MAX_STANZAS}"):
        seal(small_map, many)


def test_open_misuse(small_map: DataMap) -> None:
    alice = seeded("x-wing", "alice")
    sealed = seal(small_map, [alice.recipient()])
    with pytest.raises(ValueError, match="at least one identity"):
        open_sealed(sealed, [])
    with pytest.raises(TypeError):
        open_sealed(sealed, alice)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        open_sealed(sealed, [alice.recipient()])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        open_sealed(sealed.hex(), [alice])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected_signer is empty"):
        open_sealed(sealed, [alice], expected_signer=[])
    with pytest.raises(TypeError):
        open_sealed(sealed, [alice], expected_signer=[signer()])  # type: ignore[list-item]


def test_bad_recipient_stanza_is_an_encryption_error(small_map: DataMap) -> None:
    class Broken(WrappingRecipient):
        def wrap(self, dmk: bytes, envelope_id: bytes) -> Stanza:
            return Stanza(bytes(16), b"short")

    with pytest.raises(EncryptionError, match="not x-wing"):
        seal(small_map, [Broken(seeded("x-wing", "a").recipient())])


# -- nothing from a dependency escapes ---------------------------------------------------------

_ALICE = seeded("ml-kem-768", "alice")
_SK = signer()


@pytest.fixture(scope="module")
def signed_small(small_map: DataMap) -> bytes:
    return seal(small_map, [_ALICE.recipient()], signer=_SK)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_envelopes_raise_only_our_errors(data: st.DataObject, signed_small: bytes) -> None:
    sealed = bytearray(signed_small)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(sealed) - 1))
        sealed[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(sealed)))
    tail = data.draw(st.binary(max_size=8))
    blob = bytes(sealed[:cut]) + tail
    expected = data.draw(st.sampled_from([None, _SK.verifying_key()]))
    with contextlib.suppress(Error):  # anything else (a dependency's exception) fails the test
        open_sealed(blob, [_ALICE], expected_signer=expected)


@settings(max_examples=200, deadline=None)
@given(blob=st.binary(max_size=4096))
def test_random_bytes_raise_only_our_errors(blob: bytes) -> None:
    with pytest.raises(InvalidDataError):
        inspect(P.ENVELOPE_MAGIC + blob)
    with pytest.raises(InvalidDataError):
        inspect(blob)


def test_verifying_key_values_are_comparable() -> None:
    a = signer().verifying_key()
    assert a == VerifyingKey.parse(str(a)) and hash(a) == hash(VerifyingKey.parse(str(a)))
