"""Configuration values: frozen, validated at construction, with ``with_*`` builders.

Every parameter is per call; there is no global chunk size. ``EncryptionConfig`` also carries
the memory bounds (``MemoryConfig``), the chunk cache (``CacheConfig``) and the key store policy
(``KeyConfig``) so that one value configures every entry point it is handed to.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from pqselfenc.core import _primitives as P
from pqselfenc.core._checks import check_int
from pqselfenc.core._keyconfig import KeyConfig
from pqselfenc.core._memory import CacheConfig, MemoryConfig

__all__ = ["ChunkConfig", "CompressionConfig", "EncryptionConfig", "ParallelConfig"]

DEFAULT_CHUNK_SIZE = 1 << 20
DEFAULT_MIN_CHUNKS = 3


@dataclass(frozen=True)
class ChunkConfig:
    """How content is cut: ``chunk_size`` bytes per chunk, at least ``min_chunks`` chunks.

    Inputs of ``min_chunks * chunk_size`` bytes or more are cut into ``chunk_size`` pieces (the
    last one shorter). Smaller inputs are cut into ``min_chunks`` near-equal pieces. Inputs
    shorter than ``min_chunks`` bytes are kept inline in the DataMap.
    """

    chunk_size: int = DEFAULT_CHUNK_SIZE
    min_chunks: int = DEFAULT_MIN_CHUNKS

    def __post_init__(self) -> None:
        check_int("chunk_size", self.chunk_size, 1, P.MAX_CHUNK_SIZE)
        check_int("min_chunks", self.min_chunks, 1, P.MAX_MIN_CHUNKS)


@dataclass(frozen=True)
class CompressionConfig:
    """Per-chunk compression: ``"none"`` (default) or ``"zstd"`` at ``level`` (1..22).

    Off by default: compression leaks how compressible each chunk is through its size.
    """

    algorithm: str = "none"
    level: int = 3

    def __post_init__(self) -> None:
        if not isinstance(self.algorithm, str):
            raise TypeError("compression algorithm must be a str")
        if self.algorithm not in P.COMPRESSION_IDS:
            known = ", ".join(sorted(P.COMPRESSION_IDS))
            raise ValueError(f"unknown compression algorithm {self.algorithm!r} (known: {known})")
        check_int("compression level", self.level, 1, 22)

    @property
    def algorithm_id(self) -> int:
        """The algorithm's one-byte id in the pipeline id (docs/format.md, section 1)."""
        return P.COMPRESSION_IDS[self.algorithm]

    @property
    def effective_level(self) -> int:
        """The level that enters the pipeline id: 0 when compression is off."""
        return self.level if self.algorithm != "none" else 0


def _default_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


@dataclass(frozen=True)
class ParallelConfig:
    """Worker threads for encryption and decryption.

    ``max_threads`` workers; ``chunk_size`` is the work unit in bytes handed to a worker at a
    time (rounded up to whole chunks). In-flight plaintext is bounded by
    ``2 * max_threads`` work units. Output never depends on these values.
    """

    max_threads: int = field(default_factory=_default_threads)
    chunk_size: int = DEFAULT_CHUNK_SIZE

    def __post_init__(self) -> None:
        check_int("max_threads", self.max_threads, 1, 256)
        check_int("parallel chunk_size", self.chunk_size, 1, P.MAX_CHUNK_SIZE)


@dataclass(frozen=True, repr=False)
class EncryptionConfig:
    """Everything that decides how content is self-encrypted, and the resources it may use.

    ``chunk_size``, ``min_chunks``, ``compression`` and ``convergence_secret`` decide the output.
    ``convergence_secret`` (32 bytes, optional) scopes deduplication to a domain: without it,
    identical content yields identical chunks everywhere (and anyone can confirm a guessed file);
    with it, only holders of the secret can. It is never printed.

    The rest never changes a byte of output. ``parallel``: worker threads. ``memory``: what a
    stream or file job holds at once (``SelfEncryptor`` bounds its work in flight by it too).
    ``cache``: when set, every reader made with this config (``SelfEncryptor.from_data_map``,
    ``StreamDecryptor``, ``decrypt_file``) fetches through a ``CachingChunkStore`` of
    ``memory.max_chunk_cache`` bytes. ``keys``: the key store policy; ``KeyStore(config)`` opens
    the default key store with it, and an encryptor given a ``key_store`` checks that the
    store's policy is this one (docs/guide.md, "Coming from self_encryption").
    """

    chunk_size: int = DEFAULT_CHUNK_SIZE
    min_chunks: int = DEFAULT_MIN_CHUNKS
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    convergence_secret: bytes | None = None
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    cache: CacheConfig | None = None
    keys: KeyConfig | None = None

    def __post_init__(self) -> None:
        ChunkConfig(self.chunk_size, self.min_chunks)  # validates both
        _check_type("compression", self.compression, CompressionConfig)
        _check_type("parallel", self.parallel, ParallelConfig)
        _check_type("memory", self.memory, MemoryConfig)
        if self.cache is not None:
            _check_type("cache", self.cache, CacheConfig)
        if self.keys is not None:
            _check_type("keys", self.keys, KeyConfig)
        secret = self.convergence_secret
        if secret is not None:
            if not isinstance(secret, bytes | bytearray):
                raise TypeError("convergence_secret must be bytes")
            if len(secret) != P.CONVERGENCE_SECRET_SIZE:
                raise ValueError(f"convergence_secret must be {P.CONVERGENCE_SECRET_SIZE} bytes")
            object.__setattr__(self, "convergence_secret", bytes(secret))

    def __repr__(self) -> str:
        secret = "set" if self.convergence_secret is not None else "None"
        return (
            f"EncryptionConfig(chunk_size={self.chunk_size}, min_chunks={self.min_chunks}, "
            f"compression={self.compression!r}, parallel={self.parallel!r}, "
            f"convergence_secret={secret}, memory={self.memory!r}, cache={self.cache!r}, "
            f"keys={self.keys!r})"
        )

    @property
    def chunking(self) -> ChunkConfig:
        """The chunk size and minimum chunk count as one ``ChunkConfig``."""
        return ChunkConfig(self.chunk_size, self.min_chunks)

    @property
    def pipeline(self) -> bytes:
        """The pipeline id (format version, compression algorithm, level) of this config."""
        c = self.compression
        return P.pipeline_id(c.algorithm_id, c.effective_level)

    @property
    def salt(self) -> bytes:
        """HKDF salt of chunk keys: the convergence secret, or 32 zero bytes."""
        return self.convergence_secret if self.convergence_secret is not None else P.ZERO_SALT

    @property
    def secret_id(self) -> bytes:
        """Public id of the convergence secret, empty when there is none."""
        if self.convergence_secret is None:
            return b""
        return P.secret_id(self.convergence_secret)

    def with_chunk_size(self, chunk_size: int) -> EncryptionConfig:
        """A copy with another maximum chunk size (validated like the constructor)."""
        return dataclasses.replace(self, chunk_size=chunk_size)

    def with_min_chunks(self, min_chunks: int) -> EncryptionConfig:
        """A copy with another minimum number of chunks (at least 3)."""
        return dataclasses.replace(self, min_chunks=min_chunks)

    def with_chunk_config(self, chunking: ChunkConfig) -> EncryptionConfig:
        """A copy taking chunk size and minimum chunk count from ``chunking``."""
        return dataclasses.replace(
            self, chunk_size=chunking.chunk_size, min_chunks=chunking.min_chunks
        )

    def with_compression(self, compression: CompressionConfig | str) -> EncryptionConfig:
        """A copy with other compression: a ``CompressionConfig`` or an algorithm name
        (``"none"``, ``"zstd"``) at its default level."""
        if isinstance(compression, str):
            compression = CompressionConfig(algorithm=compression)
        return dataclasses.replace(self, compression=compression)

    def with_parallel(self, parallel: ParallelConfig) -> EncryptionConfig:
        """A copy with other worker settings (these never change the output)."""
        return dataclasses.replace(self, parallel=parallel)

    def with_convergence_secret(self, secret: bytes | None) -> EncryptionConfig:
        """A copy that scopes deduplication to ``secret`` (32 bytes), or to nothing (``None``)."""
        return dataclasses.replace(self, convergence_secret=secret)

    def with_memory(self, memory: MemoryConfig) -> EncryptionConfig:
        """A copy with other memory bounds (these never change the output)."""
        return dataclasses.replace(self, memory=memory)

    def with_cache(self, cache: CacheConfig | None) -> EncryptionConfig:
        """A copy whose readers cache fetched chunks (``None``: no cache)."""
        return dataclasses.replace(self, cache=cache)

    def with_keys(self, keys: KeyConfig | None) -> EncryptionConfig:
        """A copy with a key store policy (``None``: the key store's own, or the default)."""
        return dataclasses.replace(self, keys=keys)


def _check_type(name: str, value: object, kind: type) -> None:
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be a {kind.__name__}, not {type(value).__name__}")
