"""Streaming: byte-identical to SelfEncryptor for any write sizes, verified pieces and ranges,
bounded memory with backpressure, failures that leave nothing usable behind."""

from __future__ import annotations

import asyncio
import os
import tracemalloc

import pytest

from pqselfenc import (
    CompressionConfig,
    DataMap,
    EncryptedChunk,
    EncryptionConfig,
    MemoryChunkStore,
    ParallelConfig,
    SelfEncryptor,
)
from pqselfenc.core import _primitives as P
from pqselfenc.error import ChunkStoreError, EncryptionError, Error, IntegrityError
from pqselfenc.memory import MemoryConfig
from pqselfenc.streaming import StreamDecryptor, StreamEncryptor
from tests._stream_helpers import CountingStore, FailingStore, GatedStore, LazyExecutor

CHUNK = 64
CFG = EncryptionConfig(chunk_size=CHUNK, min_chunks=3, parallel=ParallelConfig(max_threads=1))
SIZES = [0, 1, 2, 3, 4, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK - 1, 3 * CHUNK, 3 * CHUNK + 1,
         4 * CHUNK - 1, 4 * CHUNK, 4 * CHUNK + 1, 10 * CHUNK + 7]  # fmt: skip
PIECES = ["1", "7", "chunk-1", "chunk+1", "whole"]


def piece_size(kind: str, size: int) -> int:
    sizes = {"1": 1, "7": 7, "chunk-1": CHUNK - 1, "chunk+1": CHUNK + 1, "whole": max(size, 1)}
    return sizes[kind]


async def stream_encrypt(
    data: bytes, step: int, cfg: EncryptionConfig = CFG, **kwargs: object
) -> tuple[DataMap, list[EncryptedChunk]]:
    enc = StreamEncryptor(cfg, **kwargs)  # type: ignore[arg-type]
    for i in range(0, len(data), step):
        await enc.write(data[i : i + step])
    return await enc.finalize(), enc.chunks


async def collect(dec: StreamDecryptor) -> bytes:
    return b"".join([piece async for piece in dec])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", PIECES)
def test_stream_equals_in_memory(size: int, kind: str) -> None:
    data = os.urandom(size)
    ref_map, ref_chunks = SelfEncryptor(data, CFG).encrypt()
    data_map, chunks = asyncio.run(stream_encrypt(data, piece_size(kind, size)))
    assert data_map.to_bytes() == ref_map.to_bytes()
    assert [(c.name, c.content) for c in chunks] == [(c.name, c.content) for c in ref_chunks]
    assert asyncio.run(collect(StreamDecryptor.from_data_map(data_map, chunks, CFG))) == data


@pytest.mark.parametrize("threads", [1, 2, 8])
def test_stream_equals_in_memory_with_compression_secret_and_threads(threads: int) -> None:
    cfg = EncryptionConfig(
        chunk_size=CHUNK,
        compression=CompressionConfig("zstd", 5),
        parallel=ParallelConfig(max_threads=threads),
        convergence_secret=bytes(range(32)),
    )
    data = (b"abc" * 400) + os.urandom(500)
    ref_map, ref_chunks = SelfEncryptor(data, cfg).encrypt()
    store = MemoryChunkStore()
    data_map, kept = asyncio.run(stream_encrypt(data, 33, cfg, chunk_store=store))
    assert kept == [] and data_map.to_bytes() == ref_map.to_bytes()
    assert {c.name for c in ref_chunks} == {i.name for i in store}
    dec = StreamDecryptor.from_data_map(data_map, store, cfg)
    assert asyncio.run(collect(dec)) == data and b"".join(dec) == data


def test_hierarchical_map_from_a_stream() -> None:
    cfg = EncryptionConfig(chunk_size=16, min_chunks=3, parallel=ParallelConfig(max_threads=2))
    data = os.urandom(16 * (P.MAX_MAP_ENTRIES + 50) + 5)
    ref_map, _ = SelfEncryptor(data, cfg).encrypt()
    store = MemoryChunkStore()
    data_map, _ = asyncio.run(stream_encrypt(data, 1000, cfg, chunk_store=store))
    assert data_map.child == 1 and data_map.to_bytes() == ref_map.to_bytes()
    dec = StreamDecryptor.from_data_map(data_map, store, cfg)
    assert dec.read_range(16 * 3000 - 3, 40) == data[16 * 3000 - 3 : 16 * 3000 + 37]
    assert asyncio.run(collect(dec)) == data


RANGE_DATA = os.urandom(10 * CHUNK + 7)
RANGES = [(0, 0), (0, 1), (0, CHUNK), (CHUNK - 1, 1), (CHUNK - 1, 2), (CHUNK, CHUNK),
          (CHUNK + 5, 3 * CHUNK), (10 * CHUNK, 7), (10 * CHUNK, 100), (10 * CHUNK + 6, 1),
          (10 * CHUNK + 7, 1), (10 * CHUNK + 8, 0), (10**9, 5), (0, 10**9), (17, 0)]  # fmt: skip


@pytest.fixture(scope="module")
def encrypted() -> tuple[DataMap, MemoryChunkStore]:
    store = MemoryChunkStore()
    data_map, _ = SelfEncryptor(RANGE_DATA, CFG, chunk_store=store).encrypt()
    return data_map, store


@pytest.mark.parametrize(("offset", "length"), RANGES)
def test_read_range_equals_slicing_and_fetches_only_what_it_needs(
    encrypted: tuple[DataMap, MemoryChunkStore], offset: int, length: int
) -> None:
    data_map, store = encrypted
    counting = CountingStore(store)
    got = StreamDecryptor.from_data_map(data_map, counting, CFG).read_range(offset, length)
    assert got == RANGE_DATA[offset : offset + length]
    end = min(offset + length, len(RANGE_DATA))
    spans = [(i * CHUNK, min((i + 1) * CHUNK, len(RANGE_DATA))) for i in range(len(data_map))]
    needed = {i for i, (start, stop) in enumerate(spans) if start < end and offset < min(stop, end)}
    assert sorted(counting.fetched) == sorted(data_map.chunks[i].name for i in needed)


def test_read_range_refuses_bad_arguments(encrypted: tuple[DataMap, MemoryChunkStore]) -> None:
    dec = StreamDecryptor.from_data_map(*encrypted, CFG)
    for offset, length in [(-1, 1), (0, -1), (1.5, 1), (True, 1)]:
        with pytest.raises(ValueError):
            dec.read_range(offset, length)  # type: ignore[arg-type]


@pytest.mark.parametrize("lying", [False, True])
def test_every_returned_byte_is_verified(
    encrypted: tuple[DataMap, MemoryChunkStore], lying: bool
) -> None:
    """A flipped chunk fails the name check, or (in a store that claims to verify but does
    not) the GCM tag; neither the range nor the stream returns its bytes."""
    data_map, store = encrypted
    counting = CountingStore(store, verifies=lying)
    victim = data_map.chunks[4]
    bad = bytearray(store.retrieve(victim))
    bad[len(bad) // 2] ^= 1
    counting.tamper[victim.name] = bytes(bad)
    dec = StreamDecryptor.from_data_map(data_map, counting, CFG)
    assert dec.read_range(0, 4 * CHUNK) == RANGE_DATA[: 4 * CHUNK]
    with pytest.raises(IntegrityError, match="chunk 4"):
        dec.read_range(4 * CHUNK + 10, 1)
    got: list[bytes] = []

    async def consume() -> None:
        async for piece in dec:
            got.append(piece)

    with pytest.raises(IntegrityError, match="chunk 4"):
        asyncio.run(consume())
    assert b"".join(got) == RANGE_DATA[: len(b"".join(got))] and len(got) <= 4


def test_breaking_out_of_the_stream_stops_cleanly(
    encrypted: tuple[DataMap, MemoryChunkStore],
) -> None:
    async def first_two() -> list[bytes]:
        out = []
        dec = StreamDecryptor.from_data_map(*encrypted, CFG.with_parallel(ParallelConfig(2)))
        async for piece in dec:
            out.append(piece)
            if len(out) == 2:
                break
        return out

    assert b"".join(asyncio.run(first_two())) == RANGE_DATA[: 2 * CHUNK]


def test_writes_wait_at_the_memory_bound() -> None:
    """With every task held back, the writer stops at the window the bound allows."""
    memory = MemoryConfig(max_total_memory=8 * CHUNK)
    executor = LazyExecutor()
    cfg = CFG.with_parallel(ParallelConfig(max_threads=4))
    enc = StreamEncryptor(cfg, MemoryChunkStore(), memory=memory, executor=executor)
    window = memory.encrypt_window(cfg, 100)
    assert window == 4
    data = os.urandom(200 * CHUNK + 3)
    held: list[int] = []
    executor.probe = lambda: held.append(enc._core.held + len(executor.waiting) * CHUNK)
    data_map = asyncio.run(_write_all(enc, data))
    assert executor.max_queued <= window + 1
    assert max(held) <= memory.max_total_memory
    assert data_map.to_bytes() == SelfEncryptor(data, cfg).encrypt()[0].to_bytes()


async def _write_all(enc: StreamEncryptor, data: bytes) -> DataMap:
    await enc.write(data)
    return await enc.finalize()


def test_a_blocked_store_blocks_the_writer_not_the_loop() -> None:
    big = 64 << 10
    memory = MemoryConfig(max_total_memory=16 * big)
    cfg = EncryptionConfig(chunk_size=big, parallel=ParallelConfig(max_threads=2))
    data = os.urandom(200 * big)
    tracemalloc.start()
    try:
        asyncio.run(_blocked_writer(cfg, memory, data))
    finally:
        tracemalloc.stop()


async def _blocked_writer(cfg: EncryptionConfig, memory: MemoryConfig, data: bytes) -> None:
    store = GatedStore()
    enc = StreamEncryptor(cfg, store, memory=memory)
    base = tracemalloc.get_traced_memory()[0]
    writer = asyncio.create_task(enc.write(data))
    await asyncio.to_thread(store.entered.wait)
    for _ in range(20):
        await asyncio.sleep(0)  # the loop still runs while the writer waits
    assert not writer.done()
    grown = tracemalloc.get_traced_memory()[0] - base
    # The bound, plus per worker one ciphertext and one scratch buffer (documented as not
    # counted), plus slack for thread start-up: nowhere near the 200 chunks written.
    assert grown < memory.max_total_memory + 8 * cfg.chunk_size
    store.gate.set()
    await writer
    data_map = await enc.finalize()
    assert data_map.to_bytes() == SelfEncryptor(data, cfg).encrypt()[0].to_bytes()


def test_a_cancelled_write_ends_the_stream() -> None:
    async def run() -> None:
        store = GatedStore()
        memory = MemoryConfig(max_total_memory=8 * CHUNK)
        enc = StreamEncryptor(CFG.with_parallel(ParallelConfig(2)), store, memory=memory)
        writer = asyncio.create_task(enc.write(os.urandom(50 * CHUNK)))
        await asyncio.to_thread(store.entered.wait)
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer
        store.gate.set()
        with pytest.raises(EncryptionError, match="failed"):
            await enc.finalize()

    asyncio.run(run())


@pytest.mark.parametrize("threads", [1, 2, 8])
@pytest.mark.parametrize(
    ("exc", "expected"),
    [(ChunkStoreError("disk full"), ChunkStoreError), (RuntimeError("boom"), EncryptionError)],
)
def test_a_failure_mid_stream_surfaces_and_ends_the_stream(
    threads: int, exc: BaseException, expected: type[Error]
) -> None:
    async def run() -> None:
        enc = StreamEncryptor(CFG.with_parallel(ParallelConfig(threads)), FailingStore(5, exc))
        with pytest.raises(expected):
            for _ in range(40):
                await enc.write(os.urandom(CHUNK))
            await enc.finalize()
        with pytest.raises(EncryptionError, match="failed"):
            await enc.write(b"more")
        with pytest.raises(EncryptionError, match="failed"):
            await enc.finalize()

    asyncio.run(run())


def test_misuse() -> None:
    async def run() -> None:
        enc = StreamEncryptor(CFG)
        with pytest.raises(TypeError):
            await enc.write("text")  # type: ignore[arg-type]
        await enc.write(b"abcdef")
        data_map = await enc.finalize()
        assert data_map.total_size == 6
        with pytest.raises(EncryptionError, match="finished"):
            await enc.write(b"x")
        async with StreamEncryptor(CFG) as aborted:
            await aborted.write(b"x" * 500)
        with pytest.raises(EncryptionError):
            await aborted.finalize()

    asyncio.run(run())
    with pytest.raises(TypeError):
        StreamEncryptor(CFG, chunk_store={})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_total_memory"):
        StreamEncryptor(CFG, memory=MemoryConfig(max_total_memory=3 * CHUNK))
    with pytest.raises(TypeError):
        StreamDecryptor.from_data_map(b"map", MemoryChunkStore())  # type: ignore[arg-type]


def test_reprs_hold_no_secrets() -> None:
    secret = bytes(range(32))
    cfg = CFG.with_convergence_secret(secret)
    data_map, chunks = asyncio.run(stream_encrypt(os.urandom(500), 100, cfg))
    dec = StreamDecryptor.from_data_map(data_map, chunks, cfg)
    enc = StreamEncryptor(cfg)
    for text in (repr(dec), repr(enc)):
        assert secret.hex()[:16] not in text
        assert all(c.src_hash is not None and c.src_hash.hex()[:16] not in text
                   for c in data_map.chunks)  # fmt: skip
