"""Passphrase protection: argon2id (RFC 9106 second recommendation) -> AES-256-GCM.

Blob layout (big-endian)::

    magic (8) | format version (1) | argon2 t (u32) | argon2 m KiB (u32) | argon2 p (u8)
    | salt (16) | nonce (12) | AES-256-GCM(kek, nonce, plaintext, aad = label || header)

``header`` is everything before the ciphertext, so parameters, salt and nonce are all
authenticated; a blob whose parameters are weaker than ours is refused before any work.
"""

from __future__ import annotations

import os
import struct

from argon2.exceptions import Argon2Error
from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pqselfenc.core import _primitives as P
from pqselfenc.error import InvalidDataError, KeyStoreError, WrongPassphrase

__all__ = ["passphrase_decrypt", "passphrase_encrypt"]

_HEAD = struct.Struct(">8sBIIB")
_HEADER_SIZE = _HEAD.size + P.ARGON2_SALT_SIZE + P.GCM_NONCE_SIZE
# Accepted parameter ranges when reading: never weaker than RFC 9106's second recommendation,
# never so costly that a hostile file could exhaust memory or time (1 GiB, 16 passes).
_T_RANGE = (P.ARGON2_TIME_COST, 16)
_M_RANGE = (P.ARGON2_MEMORY_KIB, 1024 * 1024)
_P_RANGE = (1, 16)


def derive_kek(passphrase: str, salt: bytes, t: int, m: int, p: int) -> bytes:
    """argon2id(passphrase, salt) -> 32-byte key; argon2 errors become ``KeyStoreError``."""
    try:
        return bytes(
            hash_secret_raw(passphrase.encode("utf-8"), salt, t, m, p, P.CHUNK_KEY_SIZE, Type.ID)
        )
    except Argon2Error as exc:
        raise KeyStoreError("argon2id key derivation failed") from exc


def passphrase_encrypt(magic: bytes, label: bytes, plaintext: bytes, passphrase: str) -> bytes:
    """Encrypt ``plaintext`` under a key derived from ``passphrase`` (fresh salt and nonce)."""
    salt, nonce = os.urandom(P.ARGON2_SALT_SIZE), os.urandom(P.GCM_NONCE_SIZE)
    t, m, p = P.ARGON2_TIME_COST, P.ARGON2_MEMORY_KIB, P.ARGON2_PARALLELISM
    header = _HEAD.pack(magic, P.KEY_FILE_VERSION, t, m, p) + salt + nonce
    kek = derive_kek(passphrase, salt, t, m, p)
    return header + AESGCM(kek).encrypt(nonce, plaintext, label + header)


def passphrase_decrypt(magic: bytes, label: bytes, blob: bytes, passphrase: str) -> bytes:
    """The plaintext; ``InvalidDataError`` if malformed, ``WrongPassphrase`` if it does not open."""
    if not isinstance(blob, bytes) or len(blob) < _HEADER_SIZE + P.TAG_SIZE:
        raise InvalidDataError("passphrase-protected blob is truncated")
    got, version, t, m, p = _HEAD.unpack_from(blob)
    if got != magic or version != P.KEY_FILE_VERSION:
        raise InvalidDataError("not a pqselfenc passphrase-protected blob of this kind/version")
    for value, (low, high), what in ((t, _T_RANGE, "t"), (m, _M_RANGE, "m"), (p, _P_RANGE, "p")):
        if not low <= value <= high:
            raise InvalidDataError(f"argon2id parameter {what}={value} outside [{low}, {high}]")
    salt = blob[_HEAD.size : _HEAD.size + P.ARGON2_SALT_SIZE]
    nonce = blob[_HEAD.size + P.ARGON2_SALT_SIZE : _HEADER_SIZE]
    kek = derive_kek(passphrase, salt, t, m, p)
    try:
        return AESGCM(kek).decrypt(nonce, blob[_HEADER_SIZE:], label + blob[:_HEADER_SIZE])
    except InvalidTag as exc:
        raise WrongPassphrase("wrong passphrase, or the protected file was altered") from exc
