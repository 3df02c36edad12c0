"""Key text a person can paste: ``<prefix><name>:<base32 of key || checksum>``.

Example: ``pqse-pub-x-wing:ahq3...`` (lowercase RFC 4648 base32, no padding). The 4-byte
checksum (``_primitives.key_text_checksum``) covers the prefix and the key, so a typo anywhere,
including in the suite name, is caught. Parsing ignores ASCII whitespace (line-wrapped pastes)
and case; anything else that does not match exactly is ``InvalidDataError``. Bech32 (as in age)
was not used: its error-detection guarantee only holds up to 89 characters, and a post-quantum
public key takes about 2,000.
"""

from __future__ import annotations

import base64
import binascii
import re

from pqselfenc.core import _primitives as P
from pqselfenc.error import InvalidDataError

_WHITESPACE = re.compile(r"[ \t\r\n]+")
_BODY = re.compile(r"[a-z2-7]+")
_MAX_TEXT = 16 * 1024  # far above the largest key (ML-DSA-87: 2,592 bytes -> 4,154 chars)


def encode(prefix: str, raw: bytes) -> str:
    """The text form of ``raw`` under ``prefix`` (which ends with ':')."""
    body = raw + P.key_text_checksum(prefix.encode(), raw)
    return prefix + base64.b32encode(body).decode().rstrip("=").lower()


def decode(text: str, kind: str) -> tuple[str, bytes]:
    """Split key text of ``kind`` (e.g. ``"pqse-pub-"``) into (name, raw key), checksum checked."""
    if not isinstance(text, str):
        raise TypeError("key text must be a str")
    if len(text) > _MAX_TEXT:
        raise InvalidDataError("key text is too long")
    clean = _WHITESPACE.sub("", text).lower()
    head, sep, body = clean.partition(":")
    if not head.startswith(kind) or not sep:
        raise InvalidDataError(f"key text must start with {kind!r}<name>:")
    raw = _b32decode(body)
    if len(raw) <= P.KEY_TEXT_CHECKSUM_SIZE:
        raise InvalidDataError("key text is too short")
    key, check = raw[: -P.KEY_TEXT_CHECKSUM_SIZE], raw[-P.KEY_TEXT_CHECKSUM_SIZE :]
    if P.key_text_checksum((head + ":").encode(), key) != check:
        raise InvalidDataError("key text checksum does not match (a typo, or a truncated paste?)")
    return head[len(kind) :], key


def _b32decode(body: str) -> bytes:
    if not _BODY.fullmatch(body):
        raise InvalidDataError("key text body must be base32 (a-z, 2-7)")
    padded = body.upper() + "=" * (-len(body) % 8)
    try:
        raw = base64.b32decode(padded)
    except (binascii.Error, ValueError) as exc:
        raise InvalidDataError("key text body is not valid base32") from exc
    if base64.b32encode(raw).decode().rstrip("=").lower() != body:
        raise InvalidDataError("key text body is not canonical base32")
    return raw


def fingerprint(key_id: bytes) -> str:
    """Short human form of a key id: its first 8 bytes as two hex groups."""
    return f"{key_id[:4].hex()}-{key_id[4:8].hex()}"
