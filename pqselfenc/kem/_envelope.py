"""The sealed envelope: a DataMap encrypted for named recipients, optionally signed.

Layout (docs/format.md has every byte; all integers big-endian)::

    header   magic "PQSESEAL" | version u8 | suite u8 | envelope id 16 | count u16
             | count * (key id 16 | HPKE enc | wrapped DMK 48)
             | signer alg u8 | signer verifying key (0, 1952 or 2592 bytes) | payload len u32
    mac      HMAC-SHA3-256(HKDF(DMK, "header"), header)             32
    payload  AES-256-GCM(HKDF(DMK, envelope id, "payload"), DataMap, aad = header || mac)
    sig      ML-DSA(signer, header || mac || payload, ctx)           0, 3309 or 4627

Opening checks, in order: exact structure (``InvalidDataError``), the signature if there is one
and the expected signers if named (``SignatureError``; no secret is touched before), then
stanza, header MAC and payload under the identities given (one opaque ``DecryptionError``).
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pqselfenc.core import _primitives as P
from pqselfenc.core.datamap import DataMap
from pqselfenc.error import DecryptionError, EncryptionError, InvalidDataError, SignatureError
from pqselfenc.kem import _suites
from pqselfenc.kem._keys import Identity, PublicKey, Recipient, Stanza
from pqselfenc.kem._signing import SigningKey, VerifyingKey, algorithm_name
from pqselfenc.kem._text import fingerprint

_FIXED = struct.Struct(">8sBB16sH")
_U32 = struct.Struct(">I")
_NO_MATCH = "no identity matched the sealed envelope (not addressed to it, or tampered with)"


@dataclass(frozen=True)
class EnvelopeInfo:
    """What ``inspect`` reads without keys. Unauthenticated until ``open_sealed`` succeeds:
    ``signer`` is only a claim unless it was named in ``expected_signer``."""

    envelope_id: bytes
    suite: str
    recipients: tuple[bytes, ...]  # stanza key ids, in envelope order
    signer: VerifyingKey | None
    payload_size: int

    @property
    def signer_key_id(self) -> bytes | None:
        """The claimed signer's verifying key id (a claim only), or None when unsigned."""
        return None if self.signer is None else self.signer.key_id

    def __repr__(self) -> str:
        signer = None if self.signer is None else self.signer.fingerprint
        return (
            f"EnvelopeInfo(envelope_id={self.envelope_id.hex()!r}, suite={self.suite!r}, "
            f"recipients={[fingerprint(k) for k in self.recipients]}, signer={signer!r}, "
            f"payload_size={self.payload_size})"
        )


@dataclass(frozen=True)
class _Parsed:
    info: EnvelopeInfo
    stanzas: tuple[Stanza, ...]
    header: bytes
    mac: bytes
    payload: bytes
    signature: bytes

    @property
    def signed(self) -> bytes:
        return self.header + self.mac + self.payload


# -- seal --------------------------------------------------------------------------------------


def seal(
    data_map: DataMap,
    recipients: Sequence[PublicKey | Recipient],
    signer: SigningKey | None = None,
    *,
    rng: Callable[[int], bytes] = os.urandom,
) -> bytes:
    """Encrypt ``data_map`` for every recipient (one suite), optionally signed by ``signer``.

    A fresh random DMK and envelope id come from ``rng`` (the OS CSPRNG by default); HPKE's
    ephemeral keys always come from OpenSSL's CSPRNG.
    """
    plaintext = _plaintext(data_map)
    if signer is not None and not isinstance(signer, SigningKey):
        raise TypeError("signer must be a SigningKey or None")
    readers = _recipients(recipients)
    info = _suites.suite(readers[0].suite)
    dmk, envelope_id = _random(rng, P.DMK_SIZE), _random(rng, P.ENVELOPE_ID_SIZE)
    stanzas = _wrap_all(readers, dmk, envelope_id, info)
    verifying = None if signer is None else signer.verifying_key()
    header = _header(info, envelope_id, stanzas, verifying, len(plaintext) + P.TAG_SIZE)
    mac = P.header_mac(dmk, header)
    aead = AESGCM(P.payload_key(dmk, envelope_id))
    body = header + mac + aead.encrypt(P.PAYLOAD_NONCE, plaintext, header + mac)
    return body + (b"" if signer is None else signer.sign(body, P.SIGNATURE_CONTEXT))


def _plaintext(data_map: DataMap) -> bytes:
    if not isinstance(data_map, DataMap):
        raise TypeError("seal takes a DataMap")
    plaintext = data_map.to_bytes()
    if len(plaintext) + P.TAG_SIZE > P.ENVELOPE_MAX_PAYLOAD:
        raise ValueError("the DataMap is too large to seal; shrink it into a parent map first")
    return plaintext


def _recipients(recipients: Sequence[PublicKey | Recipient]) -> list[Recipient]:
    if isinstance(recipients, str | bytes | Recipient) or not isinstance(recipients, Iterable):
        raise TypeError("recipients must be a sequence of public keys")
    readers: list[Recipient] = []
    seen: set[tuple[str, bytes]] = set()
    for r in recipients:
        if not isinstance(r, Recipient):
            raise TypeError(f"not a recipient: {type(r).__name__}")
        if isinstance(r, PublicKey):  # the same public key twice gets one stanza
            if (r.suite, r.to_bytes()) in seen:
                continue
            seen.add((r.suite, r.to_bytes()))
        readers.append(r)
    if not readers:
        raise ValueError("seal needs at least one recipient")
    if len(readers) > P.MAX_STANZAS:
        raise ValueError(f"at most {P.MAX_STANZAS} recipients per envelope")
    suites = sorted({r.suite for r in readers})
    if len(suites) > 1:
        raise ValueError(f"all recipients of one envelope must share one suite, got {suites}")
    return readers


def _random(rng: Callable[[int], bytes], n: int) -> bytes:
    value = rng(n)
    if not isinstance(value, bytes) or len(value) != n:
        raise ValueError(f"rng must return {n} bytes")
    return value


def _wrap_all(
    readers: list[Recipient], dmk: bytes, envelope_id: bytes, info: _suites.SuiteInfo
) -> list[Stanza]:
    stanzas = [_wrap(r, dmk, envelope_id, info) for r in readers]
    if len({s.key_id for s in stanzas}) != len(stanzas):
        raise ValueError("two recipients share one key id")
    return stanzas


def _wrap(recipient: Recipient, dmk: bytes, envelope_id: bytes, info: _suites.SuiteInfo) -> Stanza:
    try:
        stanza = recipient.wrap(dmk, envelope_id)
    except ValueError as exc:
        raise EncryptionError("could not wrap the data-map key for a recipient") from exc
    if not isinstance(stanza, Stanza) or len(stanza.body) != info.stanza_body_size:
        raise EncryptionError(f"a recipient returned a stanza that is not {info.name}")
    return stanza


def _header(
    info: _suites.SuiteInfo,
    envelope_id: bytes,
    stanzas: Sequence[Stanza],
    signer: VerifyingKey | None,
    payload_size: int,
) -> bytes:
    fixed = _FIXED.pack(P.ENVELOPE_MAGIC, P.ENVELOPE_VERSION, info.id, envelope_id, len(stanzas))
    parts = [fixed, *(s.key_id + s.body for s in stanzas)]
    if signer is None:
        parts.append(bytes((P.SIG_NONE,)))
    else:
        parts += [bytes((signer.algorithm_id,)), signer.to_bytes()]
    parts.append(_U32.pack(payload_size))
    return b"".join(parts)


# -- open --------------------------------------------------------------------------------------


def open_sealed(
    sealed: bytes,
    identities: Sequence[Identity],
    expected_signer: VerifyingKey | Sequence[VerifyingKey] | None = None,
) -> DataMap:
    """The DataMap in ``sealed``, opened with the first of ``identities`` it is addressed to.

    ``expected_signer``: if given, the envelope must carry a valid signature by one of these
    keys (else ``SignatureError``). A signature is always verified when present, but without
    ``expected_signer`` it proves nothing about who sealed (anyone can sign with a new key).
    """
    readers, expected = _identities(identities), _expected(expected_signer)
    parsed = _parse(sealed)
    _check_signature(parsed, expected)
    return _open_payload(parsed, _find_dmk(parsed, readers))


def inspect(sealed: bytes) -> EnvelopeInfo:
    """Parse ``sealed`` without keys: envelope id, suite, recipient key ids, claimed signer."""
    return _parse(sealed).info


def _identities(identities: Sequence[Identity]) -> list[Identity]:
    if isinstance(identities, str | bytes | Identity) or not isinstance(identities, Iterable):
        raise TypeError("identities must be a sequence of private keys")
    readers = list(identities)
    if not readers:
        raise ValueError("open_sealed needs at least one identity")
    for r in readers:
        if not isinstance(r, Identity):
            raise TypeError(f"not an identity: {type(r).__name__}")
    return readers


def _expected(expected: VerifyingKey | Sequence[VerifyingKey] | None) -> list[VerifyingKey]:
    if expected is None:
        return []
    keys = [expected] if isinstance(expected, VerifyingKey) else list(expected)
    if not keys:
        raise ValueError("expected_signer is empty; pass None to accept any signer")
    if not all(isinstance(k, VerifyingKey) for k in keys):
        raise TypeError("expected_signer must be VerifyingKey values")
    return keys


def _check_signature(parsed: _Parsed, expected: list[VerifyingKey]) -> None:
    signer = parsed.info.signer
    if signer is None:
        if expected:
            raise SignatureError("the envelope is not signed, but a signer was expected")
        return
    if expected and signer not in expected:
        raise SignatureError(f"signed by {signer.fingerprint}, who is not an expected signer")
    signer.verify(parsed.signature, parsed.signed, P.SIGNATURE_CONTEXT)


def _find_dmk(parsed: _Parsed, identities: list[Identity]) -> bytes:
    envelope_id = parsed.info.envelope_id
    readers = [i for i in identities if i.suite == parsed.info.suite]
    mac = parsed.mac
    for stanza in parsed.stanzas:
        for identity in readers:
            dmk = identity.unwrap(stanza, envelope_id)
            if dmk is not None and hmac.compare_digest(P.header_mac(dmk, parsed.header), mac):
                return dmk
    raise DecryptionError(_NO_MATCH)


def _open_payload(parsed: _Parsed, dmk: bytes) -> DataMap:
    aead = AESGCM(P.payload_key(dmk, parsed.info.envelope_id))
    try:
        plaintext = aead.decrypt(P.PAYLOAD_NONCE, parsed.payload, parsed.header + parsed.mac)
    except InvalidTag:
        raise DecryptionError(_NO_MATCH) from None
    try:
        return DataMap.from_bytes(plaintext)
    except InvalidDataError as exc:
        # Authentic bytes (only a DMK holder can make them) that are not a DataMap.
        raise InvalidDataError("the sealed payload is not a valid DataMap") from exc


# -- parse -------------------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int, what: str) -> bytes:
        if len(self.data) - self.pos < n:
            raise InvalidDataError(f"sealed envelope is truncated (in the {what})")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]


def _parse(sealed: bytes) -> _Parsed:
    if not isinstance(sealed, bytes | bytearray | memoryview):
        raise TypeError("a sealed envelope is bytes")
    r = _Reader(bytes(sealed))
    magic, version, suite_id, envelope_id, count = _FIXED.unpack(r.take(_FIXED.size, "header"))
    if magic != P.ENVELOPE_MAGIC:
        raise InvalidDataError("not a sealed pqselfenc envelope (bad magic)")
    if version != P.ENVELOPE_VERSION:
        raise InvalidDataError(f"unsupported envelope version {version}")
    if suite_id not in _suites.SUITES_BY_ID:
        raise InvalidDataError(f"unknown suite id {suite_id}")
    info = _suites.SUITES_BY_ID[suite_id]
    stanzas = tuple(_stanza(r, info) for _ in range(_count(count)))
    if len({s.key_id for s in stanzas}) != len(stanzas):
        raise InvalidDataError("two stanzas share one key id")
    signer = _signer(r)
    (payload_size,) = _U32.unpack(r.take(_U32.size, "payload length"))
    if not P.TAG_SIZE < payload_size <= P.ENVELOPE_MAX_PAYLOAD:
        raise InvalidDataError(f"payload length {payload_size} is out of range")
    header = r.data[: r.pos]
    mac, payload = r.take(P.HEADER_MAC_SIZE, "MAC"), r.take(payload_size, "payload")
    signature = b"" if signer is None else r.take(P.SIG_SIZE[signer.algorithm_id], "signature")
    if r.pos != len(r.data):
        raise InvalidDataError(f"{len(r.data) - r.pos} trailing bytes after the sealed envelope")
    keys = tuple(s.key_id for s in stanzas)
    meta = EnvelopeInfo(envelope_id, info.name, keys, signer, payload_size)
    return _Parsed(meta, stanzas, header, mac, payload, signature)


def _count(count: int) -> int:
    if not 1 <= count <= P.MAX_STANZAS:
        raise InvalidDataError(f"stanza count {count} is outside 1..{P.MAX_STANZAS}")
    return count


def _stanza(r: _Reader, info: _suites.SuiteInfo) -> Stanza:
    return Stanza(r.take(P.KEY_ID_SIZE, "stanza"), r.take(info.stanza_body_size, "stanza"))


def _signer(r: _Reader) -> VerifyingKey | None:
    alg = r.byte("signer")
    if alg == P.SIG_NONE:
        return None
    if alg not in P.SIG_SIZE:
        raise InvalidDataError(f"unknown signature algorithm id {alg}")
    raw = r.take(P.SIG_PUBLIC_KEY_SIZE[alg], "signer")
    return VerifyingKey.from_bytes(algorithm_name(alg), raw)
