"""Streaming self-encryption: inputs larger than memory, ordered async output, random access.

>>> enc = StreamEncryptor(config, chunk_store=store)
>>> for block in blocks:
...     await enc.write(block)          # waits (backpressure) when MemoryConfig's bound is reached
>>> data_map, chunks = await enc.finalize()   # or data_map = await enc.finalize(): both work
>>> dec = StreamDecryptor.from_data_map(data_map, chunk_store=store)
>>> async for piece in dec: ...         # verified plaintext, one chunk at a time, in order
>>> dec.read_range(offset, length)      # fetches only the chunks that hold the range

Without ``chunk_store``, chunks go into (and are read back from) the embedded default store,
``HOME/chunks`` (``pqselfenc.core.stores.default``), so memory stays bounded for any input;
``finalize``'s pair then carries them as ``StoredChunks`` read on demand.

Output is byte-identical to ``SelfEncryptor`` for the same bytes and config, whatever the write
sizes. CPU work runs on worker threads, never on the event loop. ``encrypt_file`` and
``decrypt_file`` are the synchronous twins for files; both drive the same engine.

A thin public module: the code lives in ``pqselfenc.core`` (``_streaming``, ``files``).
"""

from pqselfenc.core._store import StoredChunks
from pqselfenc.core._streaming import FinalizedMap, StreamDecryptor, StreamEncryptor
from pqselfenc.core.files import decrypt_file, encrypt_file

__all__ = [
    "FinalizedMap",
    "StoredChunks",
    "StreamDecryptor",
    "StreamEncryptor",
    "decrypt_file",
    "encrypt_file",
]
