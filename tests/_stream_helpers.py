"""Stores and executors shared by the streaming, parallel, file and cache tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

from pqselfenc import ChunkInfo, ChunkStore, MemoryChunkStore
from pqselfenc.core.stores import WrappingStore
from pqselfenc.error import ChunkStoreError


class CountingStore(WrappingStore):
    """Wraps a store; counts retrieves per name. ``lie`` claims verification it does not do."""

    def __init__(self, inner: ChunkStore | None = None, *, verifies: bool | None = None) -> None:
        super().__init__(inner if inner is not None else MemoryChunkStore())
        if verifies is not None:
            self.verifies_on_retrieve = verifies
        self.fetched: list[bytes] = []
        self.tamper: dict[bytes, bytes] = {}  # name -> bytes to return instead
        self._lock = threading.Lock()

    def retrieve(self, info: ChunkInfo) -> bytes:
        with self._lock:
            self.fetched.append(info.name)
        if info.name in self.tamper:
            return self.tamper[info.name]
        return self.inner.retrieve(info)


class FailingStore(WrappingStore):
    """Stores ``ok`` chunks, then raises ``exc`` on every further store. It hooks ``store``, so
    the engine writes through it (``put_named`` and ``batch`` fall back to the defaults)."""

    def __init__(self, ok: int, exc: BaseException | None = None) -> None:
        super().__init__(MemoryChunkStore())
        self.ok, self.calls = ok, 0
        self.exc = exc if exc is not None else ChunkStoreError("disk full")
        self._lock = threading.Lock()

    def store(self, chunk: bytes) -> ChunkInfo:
        with self._lock:
            self.calls += 1
            if self.calls > self.ok:
                raise self.exc
        return self.inner.store(chunk)


class GatedStore(MemoryChunkStore):
    """Blocks every ``store`` until ``gate`` is set; ``entered`` is set on the first call."""

    def __init__(self) -> None:
        super().__init__()
        self.gate, self.entered = threading.Event(), threading.Event()

    def store(self, chunk: bytes) -> ChunkInfo:
        self.entered.set()
        self.gate.wait()
        return super().store(chunk)


class LazyExecutor(Executor):
    """Runs a task only when someone asks for its result: deterministic, single-threaded, and
    ``queued`` shows how many tasks a caller let pile up."""

    def __init__(self) -> None:
        self.waiting: list[tuple[Future[Any], Callable[[], Any]]] = []
        self.max_queued = 0
        self.probe: Callable[[], None] | None = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        executor = self

        class _Lazy(Future[Any]):
            def result(self, timeout: float | None = None) -> Any:
                executor.run_until(self)
                return super().result(timeout)

            def exception(self, timeout: float | None = None) -> BaseException | None:
                executor.run_until(self)
                return super().exception(timeout)

        fut = _Lazy()
        self.waiting.append((fut, lambda: fn(*args, **kwargs)))
        self.max_queued = max(self.max_queued, len(self.waiting))
        if self.probe is not None:
            self.probe()
        return fut

    def run_until(self, target: Future[Any]) -> None:
        while not target.done() and self.waiting:
            fut, task = self.waiting.pop(0)
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(task())
            except BaseException as exc:
                fut.set_exception(exc)
