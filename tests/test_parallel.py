"""Parallel encryption: identical bytes for any worker count, shared pools, failures that
surface as ``Error`` without hanging."""

from __future__ import annotations

import os
import threading

import pytest

from pqselfenc import CompressionConfig, EncryptionConfig, MemoryChunkStore, SelfEncryptor
from pqselfenc.error import ChunkStoreError, EncryptionError, Error
from pqselfenc.parallel import ParallelEncryptor, WorkerPool
from tests._stream_helpers import FailingStore

CFG = EncryptionConfig(chunk_size=256, min_chunks=3)
DATA = os.urandom(256 * 37 + 11)


@pytest.mark.parametrize(
    "cfg",
    [CFG, CFG.with_compression(CompressionConfig("zstd", 9)).with_convergence_secret(bytes(32))],
)
def test_identical_for_1_2_and_8_workers(cfg: EncryptionConfig) -> None:
    data = DATA[:5000] + b"z" * 4000 + DATA[5000:]
    ref_map, ref_chunks = SelfEncryptor(data, cfg).encrypt()
    for workers in (1, 2, 8):
        with WorkerPool(workers) as pool:
            data_map, chunks = ParallelEncryptor(data, cfg, worker_pool=pool).encrypt()
            assert data_map.to_bytes() == ref_map.to_bytes()
            assert [(c.name, c.content) for c in chunks] == [
                (c.name, c.content) for c in ref_chunks
            ]
            reader = ParallelEncryptor.from_data_map(data_map, chunks, cfg, worker_pool=pool)
            assert reader.decrypt() == data
            assert reader.read_range(1000, 3000) == data[1000:4000]


def test_without_a_pool_it_uses_its_own_threads() -> None:
    data_map, chunks = ParallelEncryptor(DATA, CFG).encrypt()
    assert data_map == SelfEncryptor(DATA, CFG).encrypt()[0]
    assert ParallelEncryptor.from_data_map(data_map, chunks, CFG).decrypt() == DATA


def test_one_pool_serves_several_encryptors_at_once() -> None:
    inputs = [os.urandom(256 * n + n) for n in (5, 17, 40, 3)]
    results: dict[int, bytes] = {}
    with WorkerPool(3) as pool:

        def run(i: int) -> None:
            store = MemoryChunkStore()
            data_map, _ = ParallelEncryptor(inputs[i], CFG, store, worker_pool=pool).encrypt()
            results[i] = data_map.to_bytes()

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(inputs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == {
        i: SelfEncryptor(d, CFG).encrypt()[0].to_bytes() for i, d in enumerate(inputs)
    }


@pytest.mark.parametrize("workers", [1, 2, 8])
@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ChunkStoreError("disk full"), ChunkStoreError),
        (RuntimeError("boom"), EncryptionError),
        (MemoryError(), EncryptionError),
    ],
)
def test_a_worker_failure_surfaces_as_error(
    workers: int, exc: BaseException, expected: type[Error]
) -> None:
    with WorkerPool(workers) as pool:
        store = FailingStore(4, exc)
        with pytest.raises(expected) as info:
            ParallelEncryptor(DATA, CFG, store, worker_pool=pool).encrypt()
        assert isinstance(info.value, Error)
        # The pool is still usable afterwards: nothing hangs on it.
        assert ParallelEncryptor(DATA, CFG, worker_pool=pool).encrypt()[0].total_size == len(DATA)


def test_a_decrypt_failure_surfaces_and_the_pool_survives() -> None:
    data_map, chunks = SelfEncryptor(DATA, CFG).encrypt()
    with WorkerPool(2) as pool:
        with pytest.raises(Error):
            ParallelEncryptor.from_data_map(data_map, chunks[:-3], CFG, worker_pool=pool).decrypt()
        assert ParallelEncryptor.from_data_map(data_map, chunks, CFG, worker_pool=pool).decrypt()


def test_pool_misuse() -> None:
    for bad in (0, 257):
        with pytest.raises(ValueError):
            WorkerPool(bad)
    with pytest.raises(TypeError):
        WorkerPool("2")  # type: ignore[arg-type]
    pool = WorkerPool(2)
    pool.close()
    pool.close()
    assert "closed" in repr(pool)
    with pytest.raises(EncryptionError, match="closed"):
        ParallelEncryptor(DATA, CFG, worker_pool=pool)
    with pytest.raises(TypeError):
        ParallelEncryptor(DATA, CFG, worker_pool=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ParallelEncryptor.from_data_map(b"map", [], CFG)  # type: ignore[arg-type]
