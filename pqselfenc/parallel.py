"""Parallel self-encryption on a shared pool of worker threads.

>>> with WorkerPool(4) as pool:
...     data_map, chunks = ParallelEncryptor(data, worker_pool=pool).encrypt()

Output is byte-identical for any number of workers. Threads, not processes, by measurement
(benchmarks/bench_throughput.py prints the figures): SHA3-256 (~70% of the work per chunk)
and SHA-256 release the GIL, and AES-GCM, which holds it, runs at several GB/s on this
hardware, so two threads reach ~1.9x one thread; a process pool has to copy every chunk
into the worker and every ciphertext back, and loses more to that than the GIL costs.
A worker failure surfaces as an ``Error`` in the caller; the remaining tasks are cancelled.

A thin public module: the code lives in ``pqselfenc.core._parallel``.
"""

from pqselfenc.core._parallel import ParallelEncryptor, WorkerPool

__all__ = ["ParallelEncryptor", "WorkerPool"]
