"""pqselfenc: post-quantum hardened self-encryption.

Content is cut into chunks, each encrypted with AES-256-GCM under a key derived (HKDF-SHA3-256)
from the SHA3-256 hashes of its own and its neighbours' content, and stored under the SHA-256 of
its ciphertext. The DataMap that lists the chunk keys is the remaining secret; ``pqselfenc.kem``
seals it for named recipients with ML-KEM, ``pqselfenc.keys`` manages the keys.

The names below load on first use (PEP 562), so ``import pqselfenc`` and ``pqselfenc
--version`` do not load ``cryptography``, ``zstandard`` or the engine;
``from pqselfenc import SelfEncryptor`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pqselfenc.core._store import ChunkInfo, ChunkStore, EncryptedChunk
    from pqselfenc.core.config import (
        ChunkConfig,
        CompressionConfig,
        EncryptionConfig,
        ParallelConfig,
    )
    from pqselfenc.core.datamap import DataMap
    from pqselfenc.core.encryptor import SelfEncryptor
    from pqselfenc.core.stores import DirectoryChunkStore, MemoryChunkStore

__version__ = "0.1.0"

__all__ = [
    "ChunkConfig",
    "ChunkInfo",
    "ChunkStore",
    "CompressionConfig",
    "DataMap",
    "DirectoryChunkStore",
    "EncryptedChunk",
    "EncryptionConfig",
    "MemoryChunkStore",
    "ParallelConfig",
    "SelfEncryptor",
    "__version__",
]

# Where each public name is defined; tests/test_startup.py checks this agrees with __all__.
_WHERE = {
    "ChunkConfig": "pqselfenc.core.config",
    "ChunkInfo": "pqselfenc.core._store",
    "ChunkStore": "pqselfenc.core._store",
    "CompressionConfig": "pqselfenc.core.config",
    "DataMap": "pqselfenc.core.datamap",
    "DirectoryChunkStore": "pqselfenc.core.stores.directory",
    "EncryptedChunk": "pqselfenc.core._store",
    "EncryptionConfig": "pqselfenc.core.config",
    "MemoryChunkStore": "pqselfenc.core.stores.memory",
    "ParallelConfig": "pqselfenc.core.config",
    "SelfEncryptor": "pqselfenc.core.encryptor",
}


def __getattr__(name: str) -> object:
    """Load a public name on first use and keep it in the module (PEP 562)."""
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
