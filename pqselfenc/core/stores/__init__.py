"""Concrete chunk stores. The engine never imports these; users and the CLI do."""

from pqselfenc.core.stores.directory import DirectoryChunkStore
from pqselfenc.core.stores.memory import MemoryChunkStore

__all__ = ["DirectoryChunkStore", "MemoryChunkStore"]
