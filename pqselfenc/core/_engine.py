"""Self-encryption of whole inputs: layout, chunk pipeline, DataMap levels; and the way back.

Shared by ``SelfEncryptor``, the streaming classes, the parallel encryptor and the file helpers
so that all of them produce byte-identical chunks and maps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor

from pqselfenc.core import _primitives as P
from pqselfenc.core._chunking import Layout
from pqselfenc.core._cipher import ChunkKeys
from pqselfenc.core._pipeline import (
    ChunkEncryption,
    Sink,
    decrypt_task,
    interrupting,
    ordered_map,
)
from pqselfenc.core._store import ChunkInfo, ChunkStore
from pqselfenc.core.config import ChunkConfig, EncryptionConfig
from pqselfenc.core.datamap import DataMap
from pqselfenc.error import EncryptionError, IntegrityError, InvalidDataError

# Map levels are cut into pieces of at least this size, so every level is at least ~960 times
# smaller than the one below it (an entry is 68 bytes) whatever the content chunk size.
MAP_MIN_CHUNK_SIZE = 64 << 10
# A job whose whole input is at most this runs on the calling thread: handing a few small chunks
# to a pool (and waiting for them) costs more than hashing and encrypting them here. Output is
# the same either way (_pipeline: results come back in index order).
INLINE_MAX = 256 << 10


def keys_for_config(config: EncryptionConfig) -> ChunkKeys:
    c = config.compression
    return ChunkKeys(config.salt, config.pipeline, c.algorithm_id, c.effective_level)


def keys_for_map(data_map: DataMap, config: EncryptionConfig | None) -> ChunkKeys:
    """The key context to decrypt ``data_map``; checks the convergence secret is the right one."""
    salt = P.ZERO_SALT
    if data_map.secret_id:
        secret = config.convergence_secret if config is not None else None
        if secret is None:
            raise EncryptionError(
                "this DataMap was made with a convergence secret "
                f"(id {data_map.secret_id[:4].hex()}…); pass it in the config or a key store"
            )
        if P.secret_id(secret) != data_map.secret_id:
            raise EncryptionError("the convergence secret given is not the one this map needs")
        salt = secret
    return ChunkKeys(salt, data_map.pipeline, data_map.compression, data_map.level)


def window_of(config: EncryptionConfig) -> int:
    """Tasks in flight: two per worker keeps every worker busy and memory bounded."""
    p = config.parallel
    units = max(1, -(-p.chunk_size // config.chunk_size))
    return 2 * p.max_threads * units


@contextlib.contextmanager
def executor_for(
    config: EncryptionConfig, given: Executor | None = None
) -> Iterator[Executor | None]:
    """``given`` if set; otherwise a thread pool of ``max_threads`` (none for one thread)."""
    if given is not None or config.parallel.max_threads == 1:
        yield given
        return
    pool = ThreadPoolExecutor(config.parallel.max_threads, thread_name_prefix="pqselfenc")
    try:
        yield pool
    finally:  # on an interrupt, leave workers blocked in I/O behind (see interrupting)
        pool.shutdown(wait=not interrupting(), cancel_futures=True)


def make_map(
    config: EncryptionConfig,
    total: int,
    entries: list[ChunkInfo] | tuple[ChunkInfo, ...],
    inline: bytes = b"",
    child: int = 0,
) -> DataMap:
    c = config.compression
    return DataMap(
        total_size=total,
        chunks=tuple(entries),
        inline=inline,
        child=child,
        compression=c.algorithm_id,
        level=c.effective_level,
        secret_id=config.secret_id,
    )


def encrypt_view(
    data: memoryview,
    config: EncryptionConfig,
    chunking: ChunkConfig,
    sink: Sink,
    executor: Executor | None,
    window: int | None = None,
) -> list[ChunkInfo]:
    """Encrypt the chunks of an in-memory input; returns the entries (empty when inline).
    ``window``: tasks in flight (default ``window_of(config)``)."""
    layout = Layout.of(len(data), chunking)
    check_count(layout.count, chunking.chunk_size)
    window = window_of(config) if window is None else window
    executor = None if len(data) <= INLINE_MAX else executor
    job = ChunkEncryption(keys_for_config(config), sink, executor, window)
    try:
        for i in range(layout.count):
            start, end = layout.span(i)
            job.add(data[start:end])
        return job.finish() if layout.count else []
    except BaseException:
        job.abort()
        raise


def check_count(count: int, chunk_size: int) -> None:
    """``EncryptionError`` before any chunk is written when an input needs more chunks than a
    DataMap can name (``MAX_PARSE_ENTRIES``): make_map would refuse it only at the end."""
    if count > P.MAX_PARSE_ENTRIES:
        need = -(-count * chunk_size // P.MAX_PARSE_ENTRIES)
        raise EncryptionError(
            f"the input needs {count} chunks of {chunk_size} bytes; a DataMap names at most "
            f"{P.MAX_PARSE_ENTRIES}: use a chunk size of at least {need} bytes"
        )


def encrypt_bytes(
    data: memoryview,
    config: EncryptionConfig,
    sink: Sink,
    executor: Executor | None,
    window: int | None = None,
) -> DataMap:
    """Self-encrypt a whole in-memory input into chunks (via ``sink``) and a DataMap."""
    entries = encrypt_view(data, config, config.chunking, sink, executor, window)
    inline = bytes(data) if not entries else b""
    return shrink(make_map(config, len(data), entries, inline), config, sink, executor)


def shrink(
    data_map: DataMap, config: EncryptionConfig, sink: Sink, executor: Executor | None
) -> DataMap:
    """While a map has too many entries, self-encrypt it and point a parent map at it."""
    chunking = ChunkConfig(max(config.chunk_size, MAP_MIN_CHUNK_SIZE), config.min_chunks)
    while len(data_map.chunks) > P.MAX_MAP_ENTRIES:
        blob = memoryview(data_map.to_bytes())
        entries = encrypt_view(blob, config, chunking, sink, executor)
        data_map = make_map(config, data_map.total_size, entries, child=data_map.child + 1)
    return data_map


def expand(
    data_map: DataMap,
    store: ChunkStore,
    config: EncryptionConfig | None,
    executor: Executor | None = None,
    window: int = 4,
) -> DataMap:
    """Follow parent maps down to the level-0 map, checking each level against its parent."""
    for level in iter_levels(data_map, store, config, executor, window):
        data_map = level
    return data_map


def iter_levels(
    data_map: DataMap,
    store: ChunkStore,
    config: EncryptionConfig | None,
    executor: Executor | None = None,
    window: int = 4,
) -> Iterator[DataMap]:
    """Every level of a map, top first, each child decrypted and checked against its parent."""
    yield data_map
    while data_map.child > 0:
        keys = keys_for_map(data_map, config)
        data_map = _child_of(data_map, store, keys, executor, window)
        yield data_map


def _child_of(
    parent: DataMap, store: ChunkStore, keys: ChunkKeys, executor: Executor | None, window: int
) -> DataMap:
    """The map a parent level decrypts to. The parser bounded the level's size already; its
    first chunk is decrypted alone and the child's head checked as soon as it is complete
    (one chunk at a time until then), so a level whose content is not the map it claims costs
    the chunks that hold its head, not the whole level."""
    blob = bytearray(b"".join(iter_plain(parent, store, keys, executor, window, 0, 1)))
    checked = _head_checked(parent, blob)
    for piece in iter_plain(parent, store, keys, executor, window if checked else 1, 1):
        blob += piece
        checked = checked or _head_checked(parent, blob)
    child = DataMap.from_bytes(blob)
    _check_child(parent, child)
    return child


def _head_checked(parent: DataMap, blob: bytearray) -> bool:
    """Whether ``blob`` holds the child's whole head, checked (``InvalidDataError`` if wrong)."""
    if len(blob) < P.MAP_HEAD_SIZE + len(parent.secret_id):
        return False
    parent.check_child_head(blob)
    return True


def _check_child(parent: DataMap, child: DataMap) -> None:
    same = (
        child.child == parent.child - 1
        and child.total_size == parent.total_size
        and child.pipeline == parent.pipeline
        and child.secret_id == parent.secret_id
    )
    if not same:
        raise InvalidDataError(f"DataMap level {parent.child} points at an inconsistent child map")


def iter_plain(
    leaf: DataMap,
    store: ChunkStore,
    keys: ChunkKeys,
    executor: Executor | None,
    window: int,
    first: int = 0,
    stop: int | None = None,
) -> Iterator[bytes]:
    """Verified plaintext of chunks ``first`` .. ``stop - 1``, in order."""
    if not leaf.chunks:
        yield leaf.inline
        return
    stop = len(leaf.chunks) if stop is None else stop
    tasks = (decrypt_task(leaf.chunks, i, store, keys) for i in range(first, stop))
    yield from ordered_map(executor, window, tasks)


def iter_range(
    leaf: DataMap,
    store: ChunkStore,
    keys: ChunkKeys,
    offset: int,
    length: int,
    executor: Executor | None = None,
    window: int = 4,
) -> Iterator[bytes]:
    """Verified bytes ``offset .. offset + length`` (clipped to the end), one piece per chunk,
    fetching only the chunks needed; at most ``window`` chunks are in flight."""
    start, end = _clip(leaf, offset, length)
    if start >= end:
        return
    if not leaf.chunks:
        yield leaf.inline[start:end]
        return
    piece, last = _size(leaf.chunks[0]), len(leaf.chunks) - 1
    tasks = (
        decrypt_task(leaf.chunks, i, store, keys, _part(leaf, i, piece, start, end))
        for i in range(min(start // piece, last), min((end - 1) // piece, last) + 1)
    )
    yield from ordered_map(executor, window, tasks)


def read_range(
    leaf: DataMap,
    store: ChunkStore,
    keys: ChunkKeys,
    offset: int,
    length: int,
    executor: Executor | None = None,
) -> bytes:
    """Bytes ``offset`` .. ``offset + length`` of the content, fetching only the chunks needed."""
    return b"".join(iter_range(leaf, store, keys, offset, length, executor))


def _clip(leaf: DataMap, offset: int, length: int) -> tuple[int, int]:
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError("offset must be a non-negative int")
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ValueError("length must be a non-negative int")
    return offset, min(offset + length, leaf.total_size)


def _size(info: ChunkInfo) -> int:
    assert info.src_size is not None
    return info.src_size


def _part(leaf: DataMap, index: int, piece: int, start: int, end: int) -> tuple[int, int] | None:
    """The part of chunk ``index`` inside ``[start, end)``, in chunk offsets (None: all of it)."""
    base, size = index * piece, _size(leaf.chunks[index])
    lo, hi = max(start - base, 0), min(end - base, size)
    return None if (lo, hi) == (0, size) else (lo, hi)


def check_total(leaf: DataMap, produced: int) -> None:
    if produced != leaf.total_size:
        raise IntegrityError(f"decrypted {produced} bytes, the map says {leaf.total_size}")
