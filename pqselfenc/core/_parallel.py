"""``WorkerPool`` and ``ParallelEncryptor``: self-encryption on a shared pool of threads.

Public as ``pqselfenc.parallel`` (usage and the threads-not-processes measurement there).
"""

from __future__ import annotations

import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Self

from pqselfenc.core._cache import Clock
from pqselfenc.core._checks import Data, check_int
from pqselfenc.core._store import ChunkStore
from pqselfenc.core.config import EncryptionConfig, ParallelConfig
from pqselfenc.core.datamap import DataMap
from pqselfenc.core.encryptor import Chunks, ConvergenceSecretSource, SelfEncryptor, resolve_config
from pqselfenc.error import EncryptionError

__all__ = ["ParallelEncryptor", "WorkerPool"]


class WorkerPool:
    """A pool of ``workers`` threads that several encryptors can share; close it when done
    (or use it as a context manager)."""

    def __init__(self, workers: int = 2) -> None:
        self.workers = check_int("workers", workers, 1, 256)
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
    ``config.parallel.max_threads`` threads of its own per call). ``executor`` is accepted as
    ``SelfEncryptor`` takes it, for a pool of the caller's; give one or the other. Everything
    else (``config.memory``, ``config.cache``, ``key_store``) is as ``SelfEncryptor`` does it."""

    def __init__(
        self,
        data: Data,
        config: EncryptionConfig | None = None,
        chunk_store: ChunkStore | None = None,
        key_store: ConvergenceSecretSource | None = None,
        *,
        executor: Executor | None = None,
        worker_pool: WorkerPool | None = None,
        clock: Clock | None = None,
    ) -> None:
        config, executor = _on_pool(resolve_config(config, key_store), executor, worker_pool)
        super().__init__(data, config, chunk_store, executor=executor, clock=clock)

    @classmethod
    def from_data_map(
        cls,
        data_map: DataMap,
        chunks: Chunks,
        config: EncryptionConfig | None = None,
        key_store: ConvergenceSecretSource | None = None,
        *,
        executor: Executor | None = None,
        worker_pool: WorkerPool | None = None,
        clock: Clock | None = None,
    ) -> Self:
        """A parallel decryptor of ``data_map`` (``decrypt``, ``read_range``)."""
        config, executor = _on_pool(resolve_config(config, key_store), executor, worker_pool)
        return super().from_data_map(data_map, chunks, config, executor=executor, clock=clock)


def _on_pool(
    config: EncryptionConfig, executor: Executor | None, pool: WorkerPool | None
) -> tuple[EncryptionConfig, Executor | None]:
    """The config and executor to run on: ``pool``'s when one is given."""
    if pool is None:
        return config, executor
    if not isinstance(pool, WorkerPool):
        raise TypeError("worker_pool must be a WorkerPool")
    if executor is not None:
        raise ValueError("give worker_pool or executor, not both")
    return pool.config_for(config), pool.executor
