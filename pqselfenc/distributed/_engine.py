"""Every touch point of ``pqselfenc.distributed`` into engine internals, and nothing else.

The distributed front end cuts an input into ranges of whole chunks, one Dask task each, and
must produce the chunks and DataMap the single-machine engine produces. It does so with the
engine's own pieces, named here once so that a rename of the engine/store contract is one edit
in this file (every other module of the package imports these names from here):

- ``Layout`` (core/_chunking.py): where chunk boundaries fall (the small-input policy too).
- ``src_hash``, ``MAX_MAP_LEVEL_ENTRIES`` (core/_primitives.py): SHA3-256 of a chunk's
  plaintext; the most entries one DataMap level may hold (``MAX_PARSE_ENTRIES``).
- ``encrypt_chunk``, ``ChunkKeys`` (core/_cipher.py): one chunk from its ring of hashes.
- ``keys_for_config``, ``keys_for_map``, ``make_map``, ``shrink``, ``expand``, ``iter_plain``
  (core/_engine.py): key contexts, the DataMap of entries (hierarchical when large), the way
  down a hierarchical map, verified plaintext of a run of chunks.
- ``chunk_writer`` (below): the one way a chunk reaches a store, through ``ChunkStore.batch``
  (which yields the store's ``put_named``): every chunk is durable once the block exits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from pqselfenc import ChunkStore, EncryptedChunk
from pqselfenc.core._chunking import Layout
from pqselfenc.core._cipher import ChunkKeys, encrypt_chunk
from pqselfenc.core._engine import (
    expand,
    iter_plain,
    keys_for_config,
    keys_for_map,
    make_map,
    shrink,
)
from pqselfenc.core._primitives import MAX_PARSE_ENTRIES as MAX_MAP_LEVEL_ENTRIES
from pqselfenc.core._primitives import src_hash

__all__ = [
    "MAX_MAP_LEVEL_ENTRIES",
    "ChunkKeys",
    "Layout",
    "Put",
    "chunk_writer",
    "encrypt_chunk",
    "expand",
    "iter_plain",
    "keys_for_config",
    "keys_for_map",
    "make_map",
    "shrink",
    "src_hash",
]

Put = Callable[[EncryptedChunk], None]


@contextlib.contextmanager
def chunk_writer(store: ChunkStore) -> Iterator[Put]:
    """A ``put(chunk)`` any thread may call; once the block exits without error every chunk
    put is as durable as the store makes one (a directory store fsyncs them as one wave)."""
    with store.batch() as put:
        yield put
