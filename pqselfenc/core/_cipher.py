"""The chunk cipher: compress (maybe), frame, AES-256-GCM, name; and the checked inverse.

Decryption checks, in this order, and raises ``IntegrityError`` naming the chunk: the name
(SHA-256 of the stored bytes, unless the store already checked it), the GCM tag, the
decompressed size, and SHA3-256 of the plaintext. No unverified byte is ever returned.
"""

from __future__ import annotations

import threading
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


# Per-thread scratch buffers for framing and decryption, reused from chunk to chunk: a fresh
# 1 MiB buffer per chunk costs page faults (measured here: AES-GCM over a framed copy ran at
# ~1 GB/s, over a reused buffer at ~6 GB/s). Chunks larger than this get a one-off buffer, so a
# worker thread never keeps more than this much scratch alive.
_SCRATCH_MAX = 16 << 20
_local = threading.local()


def _scratch(size: int) -> memoryview:
    """A writable ``size``-byte buffer owned by the calling thread, valid until its next call."""
    if size > _SCRATCH_MAX:
        return memoryview(bytearray(size))
    buf: bytearray | None = getattr(_local, "buf", None)
    if buf is None or len(buf) < size:
        buf = _local.buf = bytearray(max(size, 1 << 16))
    return memoryview(buf)[:size]


def _frame(plain: bytes | memoryview, keys: ChunkKeys) -> memoryview:
    """``flag || body``: zstd body when it is strictly smaller, raw body otherwise."""
    body: bytes | memoryview = plain
    flag = P.BODY_RAW
    if keys.compression == P.COMPRESSION_ZSTD:
        try:
            packed = zstandard.ZstdCompressor(level=keys.level).compress(plain)
        except zstandard.ZstdError as exc:
            raise EncryptionError("zstd compression failed") from exc
        if len(packed) < len(plain):
            body, flag = packed, P.BODY_ZSTD
    framed = _scratch(1 + len(body))
    framed[0] = flag
    framed[1:] = body
    return framed


def encrypt_chunk(
    plain: bytes | memoryview, hashes: tuple[bytes, bytes, bytes], keys: ChunkKeys
) -> EncryptedChunk:
    """Encrypt one chunk whose ring neighbours' source hashes are ``hashes[1:]``."""
    key, nonce = keys.derive(*hashes)
    stored = AESGCM(key).encrypt(nonce, _frame(plain, keys), P.CHUNK_AAD)
    return EncryptedChunk(name=P.chunk_name(stored), content=stored)


def _unframe(framed: memoryview, src_size: int, label: str) -> bytes | memoryview:
    """The body of a decrypted frame; a raw body is returned as a view into ``framed``."""
    flag, body = framed[0] if framed else -1, framed[1:]
    out: bytes | memoryview
    if flag == P.BODY_RAW:
        out = body
    elif flag == P.BODY_ZSTD:
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
    if len(stored) < P.TAG_SIZE:
        raise IntegrityError(f"{label} failed authentication")
    key, nonce = keys.derive(*hashes)
    framed = _scratch(len(stored) - P.TAG_SIZE)
    try:
        AESGCM(key).decrypt_into(nonce, stored, P.CHUNK_AAD, framed)
    except InvalidTag:
        raise IntegrityError(f"{label} failed authentication") from None
    plain = _unframe(framed, src_size, label)
    if P.src_hash(plain) != hashes[0]:
        raise IntegrityError(f"{label}: plaintext does not match its source hash")
    return bytes(plain)  # the one copy out of the scratch buffer, after every check
