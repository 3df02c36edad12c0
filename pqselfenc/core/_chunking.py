"""Where chunk boundaries fall (the chunking policy, documented in docs/format.md).

* ``total < min_chunks``: no chunks; the bytes are stored inline in the DataMap.
* ``min_chunks <= total < min_chunks * chunk_size``: ``min_chunks`` pieces; every piece but the
  last is ``total // min_chunks`` bytes, the last takes the rest.
* otherwise: ``chunk_size`` pieces, the last one holding the remainder (if any).

Boundaries depend only on ``total`` and the chunk config, so any reader, writer or worker
computes the same layout.
"""

from __future__ import annotations

from dataclasses import dataclass

from pqselfenc.core.config import ChunkConfig


@dataclass(frozen=True)
class Layout:
    """Chunk boundaries of a ``total``-byte input."""

    total: int
    count: int
    piece: int  # size of every chunk but the last

    @classmethod
    def of(cls, total: int, config: ChunkConfig) -> Layout:
        if total < config.min_chunks:
            return cls(total, 0, 0)
        if total < config.min_chunks * config.chunk_size:
            return cls(total, config.min_chunks, total // config.min_chunks)
        count = -(-total // config.chunk_size)
        return cls(total, count, config.chunk_size)

    @property
    def inline(self) -> bool:
        return self.count == 0

    def span(self, index: int) -> tuple[int, int]:
        """``(start, end)`` byte offsets of chunk ``index``."""
        if not 0 <= index < self.count:
            raise IndexError(index)
        start = index * self.piece
        end = self.total if index == self.count - 1 else start + self.piece
        return start, end

    def size(self, index: int) -> int:
        start, end = self.span(index)
        return end - start

    def index_of(self, offset: int) -> int:
        """The chunk holding byte ``offset`` (``0 <= offset < total``)."""
        return min(offset // self.piece, self.count - 1)
