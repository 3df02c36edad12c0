"""Memory limits of streams and the chunk cache: frozen values, validated at construction.

``MemoryConfig.max_total_memory`` bounds the plaintext a stream holds at once: bytes buffered
while the layout is not yet known, the chunk being filled, chunks 0 and 1 (kept for the ring
until ``finalize``) and the plaintext of every task in flight. It is enforced by shrinking the
task window; a writer that reaches the bound waits for a task to finish (backpressure) rather
than buffering more. ``max_chunk_cache`` bounds the bytes a chunk cache may hold.

Not counted: each worker's transient ciphertext and scratch buffer (one chunk per worker) and
the DataMap entries themselves (~200 bytes per chunk).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from pqselfenc.core._checks import check_int

__all__ = ["CacheConfig", "MemoryConfig"]

DEFAULT_MAX_TOTAL_MEMORY = 256 << 20
DEFAULT_MAX_CHUNK_CACHE = 64 << 20
MAX_BYTES = 1 << 62  # any byte bound above this is a mistake

# Besides the tasks in flight, an encrypting stream holds the chunk being filled, the one being
# handed over (one more than the window while it is submitted) and chunks 0 and 1.
_ENCRYPT_OVERHEAD_CHUNKS = 4
# A decrypting stream holds, besides the tasks in flight, the piece its reader is consuming.
_DECRYPT_OVERHEAD_CHUNKS = 1


class Chunking(Protocol):
    """What a window needs of a config: its chunk size and minimum chunk count (an
    ``EncryptionConfig`` or a ``ChunkConfig``; ``EncryptionConfig`` holds a ``MemoryConfig``,
    so this module cannot import it)."""

    @property
    def chunk_size(self) -> int:
        """Bytes per chunk."""
        ...

    @property
    def min_chunks(self) -> int:
        """Chunks an input is cut into at least."""
        ...


@dataclass(frozen=True)
class MemoryConfig:
    """Bounds on what a stream holds in memory, in bytes (see the module docstring)."""

    max_total_memory: int = DEFAULT_MAX_TOTAL_MEMORY
    max_chunk_cache: int = DEFAULT_MAX_CHUNK_CACHE

    def __post_init__(self) -> None:
        check_int("max_total_memory", self.max_total_memory, 1, MAX_BYTES)
        check_int("max_chunk_cache", self.max_chunk_cache, 0, MAX_BYTES)

    def encrypt_window(self, config: Chunking, wanted: int) -> int:
        """Tasks an encrypting stream may keep in flight: ``wanted`` or fewer, never zero.

        ``ValueError`` if the bound cannot hold what the chunking policy needs: the first
        ``min_chunks * chunk_size`` bytes (before the layout is known) and one task.
        """
        cs = config.chunk_size
        if config.min_chunks * cs + cs > self.max_total_memory:
            raise ValueError(
                f"max_total_memory={self.max_total_memory} cannot hold the "
                f"{config.min_chunks + 1} chunks of {cs} bytes a stream buffers before "
                "its layout is known"
            )
        return self._window(cs, _ENCRYPT_OVERHEAD_CHUNKS, wanted)

    def fit_encrypt(self, chunk_size: int, min_chunks: int) -> MemoryConfig:
        """This bound, raised where needed to the least that encrypts ``chunk_size``-byte
        chunks: the ``min_chunks`` buffered before the layout is known and one more, or one
        task besides the stream's own chunks.

        For callers that take the chunk size from their user (the CLI): every chunk size the
        configuration accepts then runs. Tasks in flight stay as few as before."""
        chunks = max(min_chunks + 1, _ENCRYPT_OVERHEAD_CHUNKS + 1)
        return self._at_least(chunks * max(chunk_size, 1))

    def fit_decrypt(self, chunk_size: int) -> MemoryConfig:
        """This bound, raised where needed to the least that decrypts ``chunk_size``-byte
        chunks (one task besides the piece being read); e.g. ``P.MAX_CHUNK_SIZE`` for a map
        whose chunk size is not known yet."""
        return self._at_least((_DECRYPT_OVERHEAD_CHUNKS + 1) * max(chunk_size, 1))

    def _at_least(self, need: int) -> MemoryConfig:
        total = max(self.max_total_memory, min(need, MAX_BYTES))
        return MemoryConfig(max_total_memory=total, max_chunk_cache=self.max_chunk_cache)

    def decrypt_window(self, chunk_size: int, wanted: int) -> int:
        """Tasks a decrypting stream of ``chunk_size``-byte chunks may keep in flight."""
        return self._window(max(chunk_size, 1), _DECRYPT_OVERHEAD_CHUNKS, wanted)

    def in_memory_window(self, chunk_size: int, wanted: int) -> int:
        """Tasks ``SelfEncryptor`` may keep in flight on ``chunk_size``-byte chunks: ``wanted``
        or fewer so that their chunks fit in ``max_total_memory``, and never fewer than one.

        The input and the result are the caller's (held in memory whatever the bound), so a
        bound below one chunk does not refuse the job: it runs one task at a time.
        """
        return max(1, min(wanted, self.max_total_memory // max(chunk_size, 1)))

    def _window(self, chunk_size: int, overhead: int, wanted: int) -> int:
        room = self.max_total_memory // chunk_size - overhead
        if room < 1:
            need = (overhead + 1) * chunk_size
            raise ValueError(
                f"max_total_memory={self.max_total_memory} is below the {need} bytes one "
                f"task on {chunk_size}-byte chunks needs"
            )
        return max(1, min(wanted, room))


@dataclass(frozen=True)
class CacheConfig:
    """An LRU cache of fetched chunks: at most ``capacity`` chunks, each kept for ``ttl`` seconds
    after it was fetched (``None``: no expiry). The byte bound is ``MemoryConfig.max_chunk_cache``.
    """

    capacity: int = 64
    ttl: float | None = 300.0

    def __post_init__(self) -> None:
        check_int("capacity", self.capacity, 1, 1 << 32)
        if self.ttl is not None:
            if isinstance(self.ttl, bool) or not isinstance(self.ttl, int | float):
                raise TypeError("ttl must be a number of seconds or None")
            if not (self.ttl > 0 and math.isfinite(self.ttl)):
                raise ValueError(f"ttl must be a positive finite number of seconds, got {self.ttl}")
