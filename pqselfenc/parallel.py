"""Parallel self-encryption on a shared pool of worker threads.

>>> with WorkerPool(4) as pool:
...     data_map, chunks = ParallelEncryptor(data, worker_pool=pool).encrypt()

Output is byte-identical for any number of workers. Threads, not processes, by measurement
(benchmarks/bench_throughput.py prints the figures): SHA3-256 (~70% of the work per chunk)
and SHA-256 release the GIL, and AES-GCM, which holds it, runs at several GB/s on this
hardware, so two threads reach ~1.9x one thread; a process pool has to copy every chunk
into the worker and every ciphertext back, and loses more to that than the GIL costs.
A worker failure surfaces as an ``Error`` in the caller; the remaining tasks are cancelled.
"""

from __future__ import annotations

import threading
from concurrent.futures import Executor, ThreadPoolExecutor

from pqselfenc.core._store import ChunkStore, EncryptedChunk, as_store
from pqselfenc.core.config import EncryptionConfig, ParallelConfig, _check_int
from pqselfenc.core.datamap import DataMap
from pqselfenc.core.encryptor import ConvergenceSecretSource, Data, SelfEncryptor, resolve_config
from pqselfenc.error import EncryptionError

__all__ = ["ParallelEncryptor", "WorkerPool"]


class WorkerPool:
    """A pool of ``workers`` threads that several encryptors can share; close it when done
    (or use it as a context manager)."""

    def __init__(self, workers: int = 2) -> None:
        self.workers = _check_int("workers", workers, 1, 256)
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            workers, thread_name_prefix="pqselfenc-worker"
        )
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "closed" if self._executor is None else "open"
        return f"WorkerPool(workers={self.workers}, {state})"

    @property
    def executor(self) -> Executor:
        """The pool's executor; ``EncryptionError`` once the pool is closed."""
        with self._lock:
            if self._executor is None:
                raise EncryptionError("this WorkerPool is closed")
            return self._executor

    def close(self) -> None:
        """Wait for running tasks and stop the threads; idempotent."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def config_for(self, config: EncryptionConfig) -> EncryptionConfig:
        """``config`` with its thread count set to this pool's (it sizes the task window)."""
        return config.with_parallel(ParallelConfig(self.workers, config.parallel.chunk_size))


class ParallelEncryptor(SelfEncryptor):
    """A ``SelfEncryptor`` whose chunks are processed on ``worker_pool`` (or, without one, on
    ``config.parallel.max_threads`` threads of its own per call)."""

    def __init__(
        self,
        data: Data,
        config: EncryptionConfig | None = None,
        chunk_store: ChunkStore | None = None,
        key_store: ConvergenceSecretSource | None = None,
        *,
        worker_pool: WorkerPool | None = None,
    ) -> None:
        if worker_pool is not None and not isinstance(worker_pool, WorkerPool):
            raise TypeError("worker_pool must be a WorkerPool")
        resolved = resolve_config(config, key_store)
        executor = None
        if worker_pool is not None:
            resolved, executor = worker_pool.config_for(resolved), worker_pool.executor
        super().__init__(data, resolved, chunk_store, executor=executor)

    @classmethod
    def from_data_map(  # type: ignore[override]
        cls,
        data_map: DataMap,
        chunks: ChunkStore | list[EncryptedChunk],
        config: EncryptionConfig | None = None,
        key_store: ConvergenceSecretSource | None = None,
        *,
        worker_pool: WorkerPool | None = None,
    ) -> ParallelEncryptor:
        """A parallel decryptor of ``data_map`` (``decrypt``, ``read_range``)."""
        if not isinstance(data_map, DataMap):
            raise TypeError("data_map must be a DataMap")
        self = cls(b"", config, None, key_store, worker_pool=worker_pool)
        self._map, self._chunks = data_map, as_store(chunks)
        return self
