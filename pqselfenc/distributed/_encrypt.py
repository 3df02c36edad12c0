"""Encryption tasks: what the workers run for ``pqselfenc.distributed.encrypt``.

The input is cut into ranges of whole chunks (``Layout``: the same boundaries as on one
machine, small-input policy included). Chunk ``i``'s key needs the source hashes
``h_i, h_{i-1}, h_{i-2}`` on a ring, so the task of range ``[a, b)`` first reads and hashes the
two chunks before ``a`` on the ring (for ``a = 0`` the last two chunks of the input: its
*halo*), then reads, hashes, encrypts and stores its own chunks in order, one ranged read
for each run of consecutive chunks. It returns, per own chunk, the name, source hash and size
(72 bytes), and the hashes of its halo chunks. ``finish`` assembles the entries, checks that
every halo hash equals the hash the chunk's owner computed (a source that changed between two
reads cannot yield a map that does not decrypt), builds the DataMap with the engine's
``make_map`` and ``shrink`` (hierarchical above 4096 entries; the map chunks go to the store
from the worker running ``finish``) and returns it.

``hash_range`` and ``encrypt_known`` are the two-phase alternative (hash everything, then
encrypt with the neighbours' hashes): every chunk is read and hashed twice instead of two per
task, so it is slower whenever a task holds more than two chunks; benchmarks/ measures both.

Chunks reach the store on a few threads per task (network latency overlaps hashing), through
``chunk_writer``; a task returns only once its chunks are durable.
"""

from __future__ import annotations

import contextlib
import struct
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from pqselfenc import ChunkInfo, DataMap, EncryptedChunk, EncryptionConfig
from pqselfenc.core.stores import S3ChunkStore
from pqselfenc.distributed._engine import (
    Layout,
    Put,
    chunk_writer,
    encrypt_chunk,
    keys_for_config,
    make_map,
    shrink,
    src_hash,
)
from pqselfenc.distributed._locations import Location, open_store
from pqselfenc.distributed._sources import (
    Piece,
    Reader,
    Snapshot,
    ahead,
    changed,
    open_reader,
    snapshot,
)
from pqselfenc.distributed._task import task
from pqselfenc.error import EncryptionError

__all__ = [
    "Job",
    "RangeResult",
    "encrypt_known",
    "encrypt_range",
    "finish",
    "hash_range",
    "measure",
    "read_inline",
]

_ENTRY = struct.Struct(">32s32sQ")  # name, source hash, source size
_PUT_THREADS = 4  # stores in flight per task: enough to hide an S3 round trip behind hashing
_PUT_WINDOW = 8  # encrypted chunks queued per task at most (bounds memory)


@dataclass(frozen=True, repr=False)
class Job:
    """One input: where it is, what it measured, where its chunks go, how to encrypt it.
    Travels in every task of the input (no credential in it: see ``_locations``)."""

    source: Location
    snap: Snapshot
    store: Location
    config: EncryptionConfig

    @property
    def layout(self) -> Layout:
        """The chunk boundaries of the input, as every worker computes them."""
        return Layout.of(self.snap.size, self.config.chunking)

    def __repr__(self) -> str:
        return f"Job({self.source}, {self.snap.size} bytes)"


@dataclass(frozen=True, repr=False)
class RangeResult:
    """What a range task hands to ``finish``: packed entries of chunks ``first ..`` and the
    hashes of the halo chunks it read. Source hashes are key material: no repr."""

    first: int
    packed: bytes
    halo: tuple[tuple[int, bytes], ...] = ()

    def __repr__(self) -> str:
        return f"RangeResult(first={self.first}, bytes={len(self.packed)})"


@task
def measure(source: Location, store: Location) -> Snapshot:
    """Check the store is there (and reachable), then measure the source."""
    opened = open_store(store)
    if isinstance(opened, S3ChunkStore):
        opened.check()
    return snapshot(source)


@task
def read_inline(job: Job) -> bytes:
    """The whole input, when it is short enough to live inside the DataMap."""
    with open_reader(job.source, job.snap) as reader:
        return b"".join(reader.pieces(0, [job.snap.size]))


@task
def encrypt_range(job: Job, first: int, stop: int) -> RangeResult:
    """Encrypt chunks ``first .. stop - 1``, reading the two halo chunks before ``first``."""
    n = job.layout.count
    halo = [(first - 2) % n, (first - 1) % n]
    return _encrypt(job, first, stop, {}, halo)


@task
def hash_range(job: Job, first: int, stop: int) -> RangeResult:
    """Two-phase, phase 1: only the source hashes of chunks ``first .. stop - 1``."""
    layout = job.layout
    order = list(range(first, stop))
    with (
        open_reader(job.source, job.snap) as reader,
        contextlib.closing(ahead(_read(reader, layout, order))) as pieces,
    ):
        hashes = b"".join(src_hash(plain) for _, plain in pieces)
    return RangeResult(first, hashes)


@task
def encrypt_known(job: Job, first: int, stop: int, *phase1: RangeResult) -> RangeResult:
    """Two-phase, phase 2: encrypt with the hashes of phase 1 (own ones checked again)."""
    known: dict[int, bytes] = {}
    for result in phase1:
        for k in range(len(result.packed) // 32):
            known[result.first + k] = result.packed[32 * k : 32 * k + 32]
    return _encrypt(job, first, stop, known, [])


def _encrypt(
    job: Job, first: int, stop: int, hashes: dict[int, bytes], halo: list[int]
) -> RangeResult:
    layout, keys = job.layout, keys_for_config(job.config)
    n = layout.count
    entries = bytearray()
    order = halo + list(range(first, stop))
    with (
        open_reader(job.source, job.snap) as reader,
        chunk_writer(open_store(job.store)) as put,
        _Uploads(put) as upload,
        contextlib.closing(ahead(_read(reader, layout, order))) as pieces,
    ):
        for pos, (index, plain) in enumerate(pieces):
            h = src_hash(plain)
            if hashes.setdefault(index, h) != h:
                raise changed(job.source, f"chunk {index} read twice differs")
            if pos < len(halo):
                continue
            chunk = encrypt_chunk(
                plain, (h, hashes[(index - 1) % n], hashes[(index - 2) % n]), keys
            )
            upload(chunk)
            entries += _ENTRY.pack(chunk.name, h, len(plain))
    return RangeResult(first, bytes(entries), tuple((i, hashes[i]) for i in halo))


def _read(reader: Reader, layout: Layout, order: list[int]) -> Iterator[tuple[int, Piece]]:
    """``(index, plaintext)`` of the chunks in ``order``, one read per consecutive run."""
    runs: list[list[int]] = []
    for index in order:
        if runs and runs[-1][-1] + 1 == index:
            runs[-1].append(index)
        else:
            runs.append([index])
    for run in runs:
        start = layout.span(run[0])[0]
        yield from zip(run, reader.pieces(start, [layout.size(i) for i in run]), strict=True)


class _Uploads:
    """Stores chunks on a few threads, at most ``_PUT_WINDOW`` queued; ``__exit__`` waits for
    all of them (and raises the first failure) or, after an error, cancels what did not start."""

    def __init__(self, put: Put) -> None:
        self.put = put
        self.pool = ThreadPoolExecutor(_PUT_THREADS, thread_name_prefix="pqselfenc-put")
        self.pending: deque[Future[None]] = deque()

    def __enter__(self) -> Callable[[EncryptedChunk], None]:
        return self.submit

    def submit(self, chunk: EncryptedChunk) -> None:
        self.pending.append(self.pool.submit(self.put, chunk))
        while len(self.pending) > _PUT_WINDOW:
            self.pending.popleft().result()

    def __exit__(self, kind: object, *_: object) -> None:
        try:
            while self.pending:
                future = self.pending.popleft()
                if kind is None:
                    future.result()
                else:
                    future.cancel()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)


@task
def finish(job: Job, *results: RangeResult | bytes) -> DataMap:
    """The DataMap of the input from the range results (or the inline bytes)."""
    layout, total = job.layout, job.snap.size
    entries: list[ChunkInfo] = []
    inline = b""
    if layout.inline:
        (data,) = results
        assert isinstance(data, bytes)
        inline = data
    else:
        entries = _assemble(job, [r for r in results if isinstance(r, RangeResult)])
    with chunk_writer(open_store(job.store)) as put:
        return shrink(make_map(job.config, total, entries, inline), job.config, put, None)


def _assemble(job: Job, results: list[RangeResult]) -> list[ChunkInfo]:
    """Entries in index order; every chunk exactly once; halo hashes agree with owners'."""
    n = job.layout.count
    slots: list[ChunkInfo | None] = [None] * n
    for result in results:
        for k, (name, h, size) in enumerate(_ENTRY.iter_unpack(result.packed)):
            i = result.first + k
            if not 0 <= i < n or slots[i] is not None:
                raise EncryptionError(f"chunk {i} came back from two tasks or none")
            slots[i] = ChunkInfo(name=name, src_hash=h, src_size=size, index=i)
    entries = [s for s in slots if s is not None]
    if len(entries) != n:
        raise EncryptionError(f"{n - len(entries)} chunks came back from no task")
    for result in results:
        for i, h in result.halo:
            if entries[i].src_hash != h:
                raise changed(job.source, f"chunk {i} read differently by two tasks")
    return entries
