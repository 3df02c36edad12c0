"""The chunk cipher: compress (maybe), frame, AES-256-GCM, name; and the checked inverse.

Two chunk formats (docs/format.md section 1). Version 1 (uncompressed pipelines, and compressed
maps written before version 2): nonce derived with the key from the source hashes. Version 2
(compressed pipelines): a synthetic nonce, HMAC-SHA-256 over the frame actually encrypted,
stored in front of the ciphertext, so two zstd releases that frame one chunk differently never
meet under one (key, nonce).

Decryption checks, in this order, and raises ``IntegrityError`` naming the chunk's index and
short name: the name (SHA-256 of the stored bytes, unless the store already checked it), the
stored size against ``src_size``, the GCM tag (and in version 2 the nonce against its frame),
the decompressed size, and SHA3-256 of the plaintext. A zstd body must be exactly one standard
zstd frame (nothing skippable, nothing after it), checked from its headers before it is
decoded; it is decompressed as a stream with a hard output cap, so memory follows the bytes
that really come out, never a claimed size; only the requested part of a chunk is kept. No
unverified byte is ever returned.
"""

from __future__ import annotations

import hmac
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

    def __post_init__(self) -> None:
        if self.pipeline[:1] not in (bytes((v,)) for v in P.FORMAT_VERSIONS):
            raise ValueError("unknown chunk format version in the pipeline id")

    @property
    def version(self) -> int:
        """The chunk format version: the first byte of the pipeline id."""
        return self.pipeline[0]

    @property
    def synthetic(self) -> bool:
        """Whether chunks carry a synthetic nonce (version 2, compressed pipelines)."""
        return self.version == P.SIV_FORMAT_VERSION

    def derive(self, h: bytes, h_prev: bytes, h_prev2: bytes) -> tuple[bytes, bytes]:
        """``(key, nonce)`` in version 1, ``(key, nonce key)`` in version 2."""
        if self.synthetic:
            return P.chunk_siv_keys(h, h_prev, h_prev2, self.salt, self.pipeline)
        return P.chunk_key_nonce(h, h_prev, h_prev2, self.salt, self.pipeline)


def chunk_label(index: int, name: bytes) -> str:
    """How every decryption error names a chunk: its index and short name."""
    return f"chunk {index} ({short_name(name)})"


# Per-thread scratch buffers for framing and decryption, reused from chunk to chunk: a fresh
# 1 MiB buffer per chunk costs page faults (measured here: AES-GCM over a framed copy ran at
# ~1 GB/s, over a reused buffer at ~6 GB/s). Chunks larger than this get a one-off buffer, so a
# worker thread never keeps more than this much scratch alive.
_SCRATCH_MAX = 16 << 20
_local = threading.local()

# A zstd body is read back in pieces of at most this many bytes (a range keeps only its part).
_INFLATE_STEP = 1 << 20


def _scratch(size: int) -> memoryview:
    """A writable ``size``-byte buffer owned by the calling thread, valid until its next call."""
    if size > _SCRATCH_MAX:
        return memoryview(bytearray(size))
    buf: bytearray | None = getattr(_local, "buf", None)
    if buf is None or len(buf) < size:
        buf = _local.buf = bytearray(max(size, 1 << 16))
    return memoryview(buf)[:size]


def compress(plain: bytes | memoryview, level: int) -> bytes:
    """One zstd frame of ``plain`` at ``level``, declaring its content size."""
    try:
        return zstandard.ZstdCompressor(level=level).compress(plain)
    except zstandard.ZstdError as exc:
        raise EncryptionError("zstd compression failed") from exc


def _frame(plain: bytes | memoryview, keys: ChunkKeys) -> memoryview:
    """``flag || body``: zstd body when it is strictly smaller, raw body otherwise."""
    body: bytes | memoryview = plain
    flag = P.BODY_RAW
    if keys.compression == P.COMPRESSION_ZSTD:
        packed = compress(plain, keys.level)
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
    stored = seal_frame(_frame(plain, keys), hashes, keys)
    return EncryptedChunk(name=P.chunk_name(stored), content=stored)


def seal_frame(
    framed: bytes | memoryview, hashes: tuple[bytes, bytes, bytes], keys: ChunkKeys
) -> bytes:
    """The stored bytes of a frame: ``GCM(K, N, frame)`` in version 1, ``N || GCM(K, N,
    frame)`` with ``N = HMAC-SHA-256(K_nonce, frame)[:12]`` in version 2."""
    key, second = keys.derive(*hashes)
    if not keys.synthetic:
        return AESGCM(key).encrypt(second, framed, P.CHUNK_AAD)
    nonce = P.synthetic_nonce(second, framed)
    return nonce + AESGCM(key).encrypt(nonce, framed, P.CHUNK_AAD_V2)


def decrypt_chunk(
    stored: bytes,
    name: bytes,
    hashes: tuple[bytes, bytes, bytes],
    src_size: int,
    keys: ChunkKeys,
    *,
    index: int,
    name_checked: bool = False,
    part: tuple[int, int] | None = None,
) -> bytes:
    """Verify and decrypt one chunk; ``hashes[0]`` is its own source hash.

    ``part = (lo, hi)`` keeps only plaintext bytes ``lo .. hi - 1`` (every byte is still
    decrypted, decompressed and hashed: the check covers the whole chunk).
    """
    label = chunk_label(index, name)
    if not name_checked and P.chunk_name(stored) != name:
        raise IntegrityError(f"{label} does not match its name")
    lo, hi = (0, src_size) if part is None else part
    framed = _open(stored, hashes, src_size, keys, label)
    if framed[0] == P.BODY_RAW:
        return _raw(framed[1:], src_size, hashes[0], label, lo, hi)
    if framed[0] == P.BODY_ZSTD:
        return _inflate(framed[1:], src_size, hashes[0], keys.level, label, (lo, hi))
    raise IntegrityError(f"{label}: unknown body flag")


def _open(
    stored: bytes, hashes: tuple[bytes, bytes, bytes], src_size: int, keys: ChunkKeys, label: str
) -> memoryview:
    """The authenticated frame (``flag || body``) of ``stored``, in the thread's scratch."""
    overhead = P.CHUNK_OVERHEAD[keys.version]
    if len(stored) > src_size + overhead:  # a writer stores an incompressible chunk raw
        raise IntegrityError(f"{label} is larger than a chunk of {src_size} bytes is stored")
    if len(stored) < overhead:
        raise IntegrityError(f"{label} failed authentication")
    key, second = keys.derive(*hashes)
    view = memoryview(stored)
    nonce, aad = second, P.CHUNK_AAD
    if keys.synthetic:
        nonce, view, aad = bytes(view[: P.SIV_NONCE_SIZE]), view[P.SIV_NONCE_SIZE :], P.CHUNK_AAD_V2
    framed = _scratch(len(view) - P.TAG_SIZE)
    try:
        AESGCM(key).decrypt_into(nonce, view, aad, framed)
    except InvalidTag:
        raise IntegrityError(f"{label} failed authentication") from None
    # The tag already covers the nonce; recomputing it as well makes the stored form a function
    # of (key, frame), and authenticity rest on the HMAC too, not on GCM alone.
    if keys.synthetic and not hmac.compare_digest(P.synthetic_nonce(second, framed), nonce):
        raise IntegrityError(f"{label}: its nonce is not the one its frame derives")
    return framed


def _raw(body: memoryview, src_size: int, h: bytes, label: str, lo: int, hi: int) -> bytes:
    if len(body) != src_size:
        raise IntegrityError(f"{label}: decrypts to {len(body)} bytes, expected {src_size}")
    if P.src_hash(body) != h:
        raise IntegrityError(f"{label}: plaintext does not match its source hash")
    return bytes(body[lo:hi])  # the one copy out of the scratch buffer, after every check


def _inflate(
    body: memoryview, src_size: int, h: bytes, level: int, label: str, part: tuple[int, int]
) -> bytes:
    """Decompress a zstd body as a stream capped at ``src_size + 1`` bytes; keep ``part``."""
    window = P.zstd_max_window(level)
    try:
        _check_frame(body, src_size, window, label)
        reader = zstandard.ZstdDecompressor(max_window_size=window).stream_reader(
            body, read_across_frames=False
        )
        with reader:
            produced, kept = _drain(reader, src_size, h, label, part)
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"{label}: compressed body does not decompress") from exc
    if produced != src_size:
        raise IntegrityError(f"{label}: decrypts to {produced} bytes, expected {src_size}")
    return kept[0] if len(kept) == 1 else b"".join(kept)


def _check_frame(body: memoryview, src_size: int, window: int, label: str) -> None:
    """``body`` is exactly one standard zstd frame (not a skippable one, whose length field
    zstd reports as a content size; nothing before or after it) declaring ``src_size`` and a
    window no larger than ``window``."""
    if bytes(body[:4]) != zstandard.FRAME_HEADER:
        raise IntegrityError(f"{label}: compressed body is not one standard zstd frame")
    params = zstandard.get_frame_parameters(body)
    if params.content_size != src_size:
        raise IntegrityError(f"{label}: compressed body declares the wrong size")
    if params.window_size > window:
        raise IntegrityError(f"{label}: compressed body needs a larger window than its level")
    end = _frame_end(body, zstandard.frame_header_size(body), params.has_checksum)
    if end != len(body):
        raise IntegrityError(f"{label}: compressed body is not one standard zstd frame")


def _frame_end(body: memoryview, at: int, has_checksum: bool) -> int:
    """Where the zstd frame whose blocks start at ``at`` ends (its last block, then its 4-byte
    checksum if it has one), from the block headers (RFC 8878 3.1.1.2: 3 bytes, little-endian:
    last-block bit, 2-bit type, 21-bit size; an RLE block holds 1 byte); -1 if cut short or a
    block type is reserved. One step per block: a writer's frame has one per 128 KiB at most."""
    while at + 3 <= len(body):
        header = int.from_bytes(body[at : at + 3], "little")
        kind = (header >> 1) & 3
        if kind == 3:
            return -1
        at += 3 + (1 if kind == 1 else header >> 3)
        if header & 1:
            return at + 4 * has_checksum
    return -1


def _drain(
    reader: zstandard.ZstdDecompressionReader,
    src_size: int,
    h: bytes,
    label: str,
    part: tuple[int, int],
) -> tuple[int, list[bytes]]:
    """Read ``reader`` to its end (at most one byte past ``src_size``), hashing every byte and
    keeping those in ``part``; checks the source hash. Returns the count and the kept pieces."""
    lo, hi = part
    hasher, kept, produced = P.src_hasher(), [], 0
    while piece := reader.read(min(_INFLATE_STEP, src_size - produced + 1)):
        if produced + len(piece) > src_size:
            raise IntegrityError(f"{label}: decompresses to more than {src_size} bytes")
        hasher.update(piece)
        a, b = max(lo - produced, 0), min(hi - produced, len(piece))
        if a < b:
            kept.append(piece if (a, b) == (0, len(piece)) else piece[a:b])
        produced += len(piece)
    if produced == src_size and hasher.digest() != h:
        raise IntegrityError(f"{label}: plaintext does not match its source hash")
    return produced, kept
