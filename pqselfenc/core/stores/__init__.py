"""Concrete chunk stores, and ``WrappingStore``, the base of wrapper stores. The engine never
imports these; users and the CLI do.

``S3ChunkStore`` imports boto3 only when one is made, so this package imports without the
``s3`` extra.
"""

from pqselfenc.core._store import WrappingStore
from pqselfenc.core.stores.directory import DirectoryChunkStore
from pqselfenc.core.stores.memory import MemoryChunkStore
from pqselfenc.core.stores.s3 import S3ChunkStore

__all__ = ["DirectoryChunkStore", "MemoryChunkStore", "S3ChunkStore", "WrappingStore"]
