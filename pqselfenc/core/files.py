"""Synchronous file helpers over the streaming core: files of any size in bounded memory.

``encrypt_file`` reads straight into the chunk buffers of ``StreamEncryption`` (``readinto``,
no extra copy) and stores through the store's ``batch``, so a directory store fsyncs many
chunks at once and the DataMap is returned only when all are durable. ``decrypt_file`` writes
the verified pieces of ``StreamDecryption`` to a temp file next to the target and renames it
into place only when every chunk has verified (``core/_durable.py``: fsync, rename, fsync the
folder), so a failure never leaves a partial output under the target's name.

Public as ``pqselfenc.streaming.encrypt_file``/``decrypt_file``; the CLI imports this module,
which (unlike ``pqselfenc.streaming``) does not load asyncio.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import Executor
from pathlib import Path

from pqselfenc.core import _durable
from pqselfenc.core import _engine as E
from pqselfenc.core._chunking import Layout
from pqselfenc.core._memory import MemoryConfig
from pqselfenc.core._pipeline import Sink
from pqselfenc.core._store import ChunkStore
from pqselfenc.core._stream import StreamDecryption, StreamEncryption
from pqselfenc.core.config import EncryptionConfig
from pqselfenc.core.datamap import DataMap
from pqselfenc.core.encryptor import ConvergenceSecretSource, resolve_config
from pqselfenc.error import EncryptionError

__all__ = ["decrypt_file", "encrypt_file", "encrypt_into"]

PathLike = str | os.PathLike[str]
_TEMP_PREFIX = ".pqselfenc-"


def _check_store(store: object) -> ChunkStore:
    if not isinstance(store, ChunkStore):
        raise TypeError("chunk_store must be a ChunkStore")
    return store


def encrypt_file(
    path: PathLike,
    chunk_store: ChunkStore,
    config: EncryptionConfig | None = None,
    key_store: ConvergenceSecretSource | None = None,
    *,
    memory: MemoryConfig | None = None,
    executor: Executor | None = None,
) -> DataMap:
    """Self-encrypt the file at ``path`` into ``chunk_store``; returns the DataMap.

    Byte-identical to ``SelfEncryptor(data, config).encrypt()`` on the same bytes.
    """
    store = _check_store(chunk_store)
    config = resolve_config(config, key_store)
    with store.batch() as sink:  # exits only when every chunk is durable: then the map
        data_map = encrypt_into(path, sink, config, memory=memory, executor=executor)
    return data_map


def encrypt_into(
    path: PathLike,
    sink: Sink,
    config: EncryptionConfig,
    *,
    memory: MemoryConfig | None = None,
    executor: Executor | None = None,
) -> DataMap:
    """Self-encrypt the file at ``path``, handing its chunks to ``sink`` (the ``put`` of a
    store's ``batch()``), and return its DataMap: a map that may be written only once that
    batch has exited without error. One batch may take many files (``pqselfenc encrypt``).

    A file smaller than ``min_chunks * chunk_size`` is read whole, once, and encrypted in
    memory (inline when tiny); a larger one is streamed. The output is the same either way.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            _check_size(size, config)
            return _encrypt_open(f, size, sink, config, memory, executor)
    except OSError as exc:
        raise EncryptionError(f"cannot read {os.fspath(path)}: {exc.strerror}") from exc


def _check_size(size: int, config: EncryptionConfig) -> None:
    """Refuse, before any chunk is written, a file with more chunks than a DataMap names (a
    file that grows while it is read is stopped by the stream at the same bound)."""
    E.check_count(Layout.of(size, config.chunking).count, config.chunk_size)


def _encrypt_open(
    f: io.BufferedReader,
    size: int,
    sink: Sink,
    config: EncryptionConfig,
    memory: MemoryConfig | None,
    executor: Executor | None,
) -> DataMap:
    head = b""
    if size < config.min_chunks * config.chunk_size:
        head = f.read(size + 1)  # (read(n) allocates n bytes first: never the bound itself)
        if len(head) <= size:  # all of it (a file that grew meanwhile is streamed)
            return E.encrypt_bytes(memoryview(head), config, sink, executor)
    stream = StreamEncryption(config, sink, memory, executor)
    try:
        stream.write(head)
        _feed(stream, f)
        return stream.finish()
    except BaseException:
        stream.abort()  # its threads stop, and no map is made from a part of the file
        raise


def _feed(stream: StreamEncryption, f: io.BufferedReader) -> None:
    while stream.write_from(f.readinto):
        pass


def decrypt_file(
    data_map: DataMap,
    chunk_store: ChunkStore,
    out_path: PathLike,
    config: EncryptionConfig | None = None,
    key_store: ConvergenceSecretSource | None = None,
    *,
    memory: MemoryConfig | None = None,
    executor: Executor | None = None,
) -> None:
    """Decrypt ``data_map`` from ``chunk_store`` into ``out_path`` (replaced atomically, mode
    0600 or stricter). A FIFO, device, socket or folder at ``out_path`` is never replaced
    (``EncryptionError``, checked before any chunk is read and again before the rename)."""
    if not isinstance(data_map, DataMap):
        raise TypeError("data_map must be a DataMap")
    config = resolve_config(config, key_store)
    reader = StreamDecryption(data_map, _check_store(chunk_store), config, memory, executor)
    target = Path(out_path)
    try:
        _durable.check_replaceable(target)
        with _durable.output_file(target, prefix=_TEMP_PREFIX) as out:
            for piece in reader.pieces():
                out.write(piece)
    except OSError as exc:
        raise EncryptionError(f"cannot write {target}: {exc.strerror}") from exc
