"""Concrete chunk stores, and ``WrappingStore``, the base of wrapper stores. The engine never
imports these; users and the CLI do.

``S3ChunkStore`` loads on first use (PEP 562), and imports boto3 only when one is made, so this
package imports without the ``s3`` extra and a directory store never pays for the S3 module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pqselfenc.core._store import WrappingStore
from pqselfenc.core.stores.directory import DirectoryChunkStore
from pqselfenc.core.stores.memory import MemoryChunkStore

if TYPE_CHECKING:
    from pqselfenc.core.stores.s3 import S3ChunkStore

__all__ = ["DirectoryChunkStore", "MemoryChunkStore", "S3ChunkStore", "WrappingStore"]


def __getattr__(name: str) -> object:
    """``S3ChunkStore`` on first use, then kept in the module (PEP 562)."""
    if name != "S3ChunkStore":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from pqselfenc.core.stores.s3 import S3ChunkStore

    globals()[name] = S3ChunkStore
    return S3ChunkStore
