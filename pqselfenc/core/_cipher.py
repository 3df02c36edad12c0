"""The chunk cipher: compress (maybe), frame, AES-256-GCM, name; and the checked inverse.

Decryption checks, in this order, and raises ``IntegrityError`` naming the chunk: the name
(SHA-256 of the stored bytes, unless the store already checked it), the GCM tag, the
decompressed size, and SHA3-256 of the plaintext. No unverified byte is ever returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pqselfenc.core import _primitives as P
from pqselfenc.core._store import EncryptedChunk, short_name
from pqselfenc.error import EncryptionError, IntegrityError


@dataclass(frozen=True, repr=False)
class ChunkKeys:
    """The key context shared by every chunk of one DataMap: salt and pipeline id."""

    salt: bytes
    pipeline: bytes
    compression: int
    level: int

    def derive(self, h: bytes, h_prev: bytes, h_prev2: bytes) -> tuple[bytes, bytes]:
        return P.chunk_key_nonce(h, h_prev, h_prev2, self.salt, self.pipeline)


def _frame(plain: bytes | memoryview, keys: ChunkKeys) -> bytes:
    """``flag || body``: zstd body when it is strictly smaller, raw body otherwise."""
    if keys.compression == P.COMPRESSION_ZSTD:
        try:
            packed = zstandard.ZstdCompressor(level=keys.level).compress(plain)
        except zstandard.ZstdError as exc:
            raise EncryptionError("zstd compression failed") from exc
        if len(packed) < len(plain):
            return bytes((P.BODY_ZSTD,)) + packed
    return bytes((P.BODY_RAW,)) + bytes(plain)


def encrypt_chunk(
    plain: bytes | memoryview, hashes: tuple[bytes, bytes, bytes], keys: ChunkKeys
) -> EncryptedChunk:
    """Encrypt one chunk whose ring neighbours' source hashes are ``hashes[1:]``."""
    key, nonce = keys.derive(*hashes)
    stored = AESGCM(key).encrypt(nonce, _frame(plain, keys), P.CHUNK_AAD)
    return EncryptedChunk(name=P.chunk_name(stored), content=stored)


def _unframe(framed: bytes, src_size: int, label: str) -> bytes:
    flag, body = framed[:1], memoryview(framed)[1:]
    if flag == bytes((P.BODY_RAW,)):
        out = bytes(body)
    elif flag == bytes((P.BODY_ZSTD,)):
        try:
            # A frame that declares more than src_size is refused before anything is allocated.
            if zstandard.frame_content_size(body) > src_size:
                raise IntegrityError(f"{label}: compressed body declares the wrong size")
            out = zstandard.ZstdDecompressor().decompress(body, max_output_size=src_size)
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"{label}: compressed body does not decompress") from exc
    else:
        raise IntegrityError(f"{label}: unknown body flag")
    if len(out) != src_size:
        raise IntegrityError(f"{label}: decrypts to {len(out)} bytes, expected {src_size}")
    return out


def decrypt_chunk(
    stored: bytes,
    name: bytes,
    hashes: tuple[bytes, bytes, bytes],
    src_size: int,
    keys: ChunkKeys,
    *,
    index: int,
    name_checked: bool = False,
) -> bytes:
    """Verify and decrypt one chunk; ``hashes[0]`` is its own source hash."""
    label = f"chunk {index} ({short_name(name)})"
    if not name_checked and P.chunk_name(stored) != name:
        raise IntegrityError(f"{label} does not match its name")
    key, nonce = keys.derive(*hashes)
    try:
        framed = AESGCM(key).decrypt(nonce, stored, P.CHUNK_AAD)
    except InvalidTag:
        raise IntegrityError(f"{label} failed authentication") from None
    plain = _unframe(framed, src_size, label)
    if P.src_hash(plain) != hashes[0]:
        raise IntegrityError(f"{label}: plaintext does not match its source hash")
    return plain
