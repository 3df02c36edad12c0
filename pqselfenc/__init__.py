"""pqselfenc: post-quantum hardened self-encryption.

Content is cut into chunks, each encrypted with AES-256-GCM under a key derived (HKDF-SHA3-256)
from the SHA3-256 hashes of its own and its neighbours' content, and stored under the SHA-256 of
its ciphertext. The DataMap that lists the chunk keys is the remaining secret; ``pqselfenc.kem``
seals it for named recipients with ML-KEM, ``pqselfenc.keys`` manages the keys.
"""

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
